
import json, os, platform, sys
out = {"python": "%d.%d.%d" % tuple(sys.version_info[:3]), "executable": sys.executable,
       "machine": platform.machine(), "libc": list(platform.libc_ver())}
wd = sys.argv[1]
def trymod(name):
    try:
        m = __import__(name)
        return getattr(m, "__version__", "unknown"), None
    except Exception as e:
        return None, "%s: %s" % (type(e).__name__, e)
out["numpy"], out["numpy_error"] = trymod("numpy")
out["ncnn"], out["ncnn_error"] = trymod("ncnn")
try:
    import importlib.util
    out["pip"] = importlib.util.find_spec("pip") is not None
except Exception:
    out["pip"] = False
try:
    out["cores"] = os.cpu_count()
except AttributeError:
    out["cores"] = None
feats, names = set(), {}
try:
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k in ("features", "flags"):
            feats.update(v.split())
        elif k in ("model", "model name", "hardware", "cpu part") and k not in names:
            names[k] = v.strip()
except Exception:
    pass
model = names.get("model") or names.get("model name") or names.get("hardware")
if names.get("cpu part"):
    model = (model + ", " if model else "") + "ARM part " + names["cpu part"]
out["cpu_features"], out["cpu_model"] = sorted(feats), model
mem = {}
try:
    for line in open("/proc/meminfo"):
        k, _, v = line.partition(":")
        if k in ("MemTotal", "MemAvailable"):
            mem[k] = int(v.split()[0]) * 1024
except Exception:
    pass
out["mem_total"], out["mem_available"] = mem.get("MemTotal"), mem.get("MemAvailable")
p = wd
while p and not os.path.exists(p):
    p = os.path.dirname(p)
out["workdir_exists"] = os.path.isdir(wd)
try:
    st = os.statvfs(p or "/")
    out["disk_free"] = st.f_bavail * st.f_frsize
except Exception:
    out["disk_free"] = None
ok, why = False, None
if os.path.isdir(wd):
    t = os.path.join(wd, ".edgecal-probe-%d" % os.getpid())
    try:
        f = open(t, "w"); f.write("x"); f.close(); os.remove(t); ok = True
    except Exception as e:
        why = "%s: %s" % (type(e).__name__, e)
else:
    why = "does not exist"
out["workdir_writable"], out["workdir_error"] = ok, why
sys.stdout.write("EDGECAL-PROBE " + json.dumps(out) + "\n")
