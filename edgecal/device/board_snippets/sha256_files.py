
import hashlib, json, os, stat, sys
root, rels = sys.argv[1], sys.argv[2:]
def sha(rel):
    p = os.path.join(root, rel)
    if os.path.realpath(p) != os.path.normpath(p) or not os.path.normpath(p).startswith(root + "/"):
        return None
    try:
        st = os.lstat(p)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
sys.stdout.write(json.dumps({r: sha(r) for r in rels}) + "\n")
