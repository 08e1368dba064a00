# edgecal board probe for boards without Python (POSIX sh: dash, busybox, toybox).  $1: the
# work directory.  Prints raw sections; edgecal.device.probe.parse_shell_probe reads them.
wd=$1
echo "EDGECAL-SHPROBE 1"
echo "== machine"; uname -m 2>/dev/null
echo "== cores"; (nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)
echo "== cpuinfo"; cat /proc/cpuinfo 2>/dev/null
echo "== meminfo"; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo 2>/dev/null
p=$wd
while [ -n "$p" ] && [ ! -e "$p" ]; do
    q=${p%/*}; [ "$q" = "$p" ] && q=; p=$q
done
echo "== df"; df -Pk "${p:-/}" 2>/dev/null | tail -n 1
echo "== workdir"
if [ -d "$wd" ]; then
    t="$wd/.edgecal-probe-$$"
    if (echo x > "$t") 2>/dev/null; then rm -f "$t"; echo "writable"
    else echo "not writable"; fi
else echo "does not exist"; fi
echo "== python"; command -v python3 2>/dev/null
echo "== end"
