#!/usr/bin/env bash
# emuphone.sh - emulated Android phones for edgecal's tests and CI (a TEST FIXTURE, not a phone).
#
# A phone is an Android-like root folder (/system with busybox-static for arm64 as sh + applets,
# getprop/dumpsys scripts, /data/local/tmp; NO python) run under qemu-user (binfmt, F flag,
# QEMU_CPU=cortex-a76), served by our own device side of the adb protocol (toolchains/
# emuphone.py) that the REAL adb client connects to: `adb connect 127.0.0.1:PORT`. Each phone
# runs in its own pid/mount/uts namespaces; the server is its PID 1, chrooted, uid 2000 (shell).
# See toolchains/EMUPHONE.md.
#
# usage: emuphone.sh setup                 host packages (adb, qemu-user-static), busybox arm64, image
#        emuphone.sh start [SPEC...]       start phones (default phone1) and rewrite the boards file;
#                                          SPEC = phoneN[:cpu=MODEL]
#        emuphone.sh stop [NAME]           power off one phone or all (files kept)
#        emuphone.sh status                one line per known phone
#        emuphone.sh cut NAME [drop|hold]  drop: reset every adb connection now (adb may reconnect);
#                                          hold: also refuse new ones until `restore NAME`
#        emuphone.sh restore NAME          accept connections again
#        emuphone.sh reboot NAME [DOWN]    connections reset + every process of the phone killed
#                                          (files stay); adb refused for DOWN seconds (default 0)
#        emuphone.sh set NAME screen on|off | temp MILLIDEGREES   the phone's screen / CPU temperature
#        emuphone.sh entries               the boards-file sections of the phones that are up
#        emuphone.sh reset                 stop all, forget every phone's files
#        emuphone.sh purge                 reset + remove $EMUPHONE_STATE
#
# NAME = phoneN (N in 1..99): adb port 127.0.0.1:(7100+N) (outside adb's emulator scan range
# 5555-5585), serial "127.0.0.1:(7100+N)", profile emulated-phone-a76.
# env:  EMUPHONE_STATE=/srv/edgecal-phones   everything lives here (root-owned)
#       EMUPHONE_PYTHON=/usr/bin/python3     the host python that runs the adb endpoint
#       EDGECAL_BOARDS_FILE                  boards file (written by toolchains/emuboard.sh boards-file)
#       EMUPHONE_MIRROR                      Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${EMUPHONE_STATE:-/srv/edgecal-phones}
IMAGES=$STATE/images               # images/VERSION/system: the shared /system (read-only in every phone);
                                   # a new version never touches the one running phones have mounted
PHONES=$STATE/phones               # per phone: spec, root/ (data/ lives here), sys/, cpuinfo, build.prop
RUN=$STATE/run
LOGS=$STATE/log
APT=$STATE/apt                     # private apt lists/cache for the arm64 busybox (the host's dpkg is untouched)
MIRROR=${EMUPHONE_MIRROR:-http://deb.debian.org/debian}
PY=${EMUPHONE_PYTHON:-/usr/bin/python3}
SERVER=$HERE/emuphone.py
PORT_BASE=7100
SHELL_UID=2000

log() { printf '[emuphone %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, mount, chroot, namespaces)"
case "$STATE" in /?*/?*) ;; *) die "EMUPHONE_STATE must be an absolute path at least two levels deep";; esac
case "$STATE" in *//*|*/./*|*/../*|*/) die "EMUPHONE_STATE: odd path '$STATE'";; esac

# ---------------------------------------------------------------- setup

ensure_binfmt() {
  local f=/proc/sys/fs/binfmt_misc/qemu-aarch64
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
    die "cannot mount binfmt_misc"
  if [ ! -e "$f" ]; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    [ -e "$f" ] || grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
  fi
  grep -qx enabled "$f" || echo 1 > "$f"
  # F: the kernel opens qemu now, so a chroot without any qemu binary inside runs aarch64 code
  grep -q '^flags:.*F' "$f" || die "binfmt entry qemu-aarch64 lacks the F flag ($(grep flags "$f"))"
}

setup_host() {
  local need="" p
  export DEBIAN_FRONTEND=noninteractive
  for p in adb qemu-user-static binfmt-support util-linux python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"
  done
  if [ -n "$need" ]; then
    log "apt-get install$need"
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends $need >/dev/null || die "apt-get install failed"
  fi
  [ -x "$PY" ] || die "no $PY (EMUPHONE_PYTHON)"
}

fetch_busybox() {   # -> $STATE/debs/busybox-static_*_arm64.deb (private apt state: no dpkg --add-architecture)
  compgen -G "$STATE/debs/busybox-static_*_arm64.deb" >/dev/null && return 0
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$STATE/debs"
  echo "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm main" > "$APT/sources.list"
  local o=(-o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o "Dir::Etc::SourceList=$APT/sources.list"
           -o "Dir::Etc::SourceParts=/dev/null" -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64"
           -o "APT::Sandbox::User=root")
  log "busybox-static:arm64 from $MIRROR (private apt lists in $APT)"
  apt-get "${o[@]}" update -qq > "$LOGS/apt.log" 2>&1 || { tail -5 "$LOGS/apt.log" >&2; die "apt-get update (arm64 lists) failed"; }
  (cd "$STATE/debs" && apt-get "${o[@]}" download busybox-static) >> "$LOGS/apt.log" 2>&1 ||
    { tail -5 "$LOGS/apt.log" >&2; die "apt-get download busybox-static (arm64) failed"; }
  rm -rf "$APT/cache"
}

write_image_scripts() {   # getprop, dumpsys, passwd/group: Android's shape, busybox sh inside
  local s=$1/system
  cat > "$s/bin/getprop" <<'EOF'
#!/system/bin/sh
# getprop [NAME [DEFAULT]]: emuphone's property store is /system/build.prop (per phone, read-only)
f=/system/build.prop
if [ $# -eq 0 ]; then
  sed -n 's/^\([^#=][^=]*\)=\(.*\)$/[\1]: [\2]/p' "$f" | sort
  exit 0
fi
v=$(grep -m1 "^$1=" "$f" | cut -d= -f2-)
[ -n "$v" ] || v=${2:-}
printf '%s\n' "$v"
EOF
  cat > "$s/bin/dumpsys" <<'EOF'
#!/system/bin/sh
# dumpsys SERVICE: the few answers edgecal reads (power, thermalservice, battery, cpuinfo)
st=/sys/emuphone
case "${1:-}" in
  power)
    w=$(cat $st/wakefulness 2>/dev/null || echo Awake)
    echo "POWER MANAGER (dumpsys power)"
    echo ""
    echo "Power Manager State:"
    echo "  mWakefulness=$w"
    echo "  mWakefulnessChanging=false"
    echo "  mIsPowered=true"
    if [ "$w" = Awake ]; then echo "  mHoldingDisplaySuspendBlocker=true"; echo "Display Power: state=ON"
    else echo "  mHoldingDisplaySuspendBlocker=false"; echo "Display Power: state=OFF"; fi ;;
  thermalservice)
    echo "IsStatusOverride: false"
    echo "ThermalEventListeners:"
    echo "Thermal Status: $(cat $st/thermal_status 2>/dev/null || echo 0)"
    echo "Current temperatures from HAL:"
    for z in /sys/class/thermal/thermal_zone*; do
      t=$(cat $z/temp); echo "	Temperature{mValue=$((t / 1000)).$(( (t % 1000) / 100 )), mType=0, mName=$(cat $z/type), mStatus=0}"
    done ;;
  battery)
    echo "Current Battery Service state:"
    echo "  AC powered: false"
    echo "  USB powered: true"
    echo "  level: $(cat /sys/class/power_supply/battery/capacity)"
    echo "  temperature: $(cat /sys/class/power_supply/battery/temp)" ;;
  -l)
    printf 'Currently running services:\n  battery\n  power\n  thermalservice\n' ;;
  *) echo "Can't find service: ${1:-}" >&2; exit 1 ;;
esac
EOF
  # toybox applets the Debian busybox-static build lacks: small sh stand-ins
  cat > "$s/bin/nohup" <<'EOF'
#!/system/bin/sh
# nohup CMD...: run CMD immune to hangups (output to nohup.out when stdout is a terminal)
trap '' HUP
[ -t 1 ] && exec >> nohup.out
[ -t 2 ] && exec 2>&1
exec "$@"
EOF
  cat > "$s/bin/nice" <<'EOF'
#!/system/bin/sh
# nice [-n N] CMD...: the emulated phone does not change priorities; runs CMD
[ "${1:-}" = -n ] && shift 2
exec "$@"
EOF
  cat > "$s/bin/getconf" <<'EOF'
#!/system/bin/sh
# getconf NAME: the few names scripts ask a phone for
case "${1:-}" in
  _NPROCESSORS_ONLN|_NPROCESSORS_CONF|NPROCESSORS_ONLN) grep -c '^processor' /proc/cpuinfo ;;
  LONG_BIT) echo 64 ;;
  PAGESIZE|PAGE_SIZE) echo 4096 ;;
  *) echo "getconf: unknown name '${1:-}'" >&2; exit 1 ;;
esac
EOF
  cat > "$s/bin/pgrep" <<'EOF'
#!/system/bin/sh
# pgrep [-f] PATTERN: pids whose name (or with -f, command line) matches
f=0; [ "${1:-}" = -f ] && { f=1; shift; }
[ $# -eq 1 ] || { echo "usage: pgrep [-f] PATTERN" >&2; exit 2; }
found=1
for d in /proc/[0-9]*; do
  p=${d#/proc/}; [ "$p" = "$$" ] && continue
  if [ $f = 1 ]; then c=$(tr '\0' ' ' < $d/cmdline 2>/dev/null); else c=$(cat $d/comm 2>/dev/null); fi
  case "$c" in *pgrep*) continue ;; esac
  if printf '%s\n' "$c" | grep -q -- "$1"; then echo "$p"; found=0; fi
done
exit $found
EOF
  cat > "$s/bin/pkill" <<'EOF'
#!/system/bin/sh
# pkill [-SIGNAL] [-f] PATTERN
sig=TERM; case "${1:-}" in -[A-Z0-9]*) sig=${1#-}; shift ;; esac
pids=$(pgrep "$@") || exit 1
kill -s "$sig" $pids
EOF
  chmod 755 "$s/bin/getprop" "$s/bin/dumpsys" "$s/bin/nohup" "$s/bin/nice" "$s/bin/getconf" "$s/bin/pgrep" "$s/bin/pkill"
  cat > "$s/etc/passwd" <<EOF
root:x:0:0:root:/:/system/bin/sh
system:x:1000:1000:system:/:/system/bin/sh
shell:x:$SHELL_UID:$SHELL_UID:shell:/:/system/bin/sh
nobody:x:9999:9999:nobody:/:/system/bin/sh
EOF
  cat > "$s/etc/group" <<EOF
root:x:0:
system:x:1000:
input:x:1004:shell
log:x:1007:shell
adb:x:1011:shell
sdcard_rw:x:1015:shell
sdcard_r:x:1028:shell
shell:x:$SHELL_UID:
net_bt_admin:x:3001:shell
net_bt:x:3002:shell
inet:x:3003:shell
net_bw_stats:x:3006:shell
readproc:x:3009:shell
uhid:x:3011:shell
nobody:x:9999:
EOF
  printf '127.0.0.1 localhost\n::1 ip6-localhost\n' > "$s/etc/hosts"
  : > "$s/build.prop"             # mount point: each phone binds its own properties here
}

setup_image() {
  IMAGE=$IMAGES/$(image_version)
  [ -e "$IMAGE.ok" ] && return 0
  local deb tmp=$IMAGE.tmp a n=0
  deb=$(compgen -G "$STATE/debs/busybox-static_*_arm64.deb" | head -1)
  rm -rf "$tmp"; mkdir -p "$tmp/x" "$tmp/system/bin" "$tmp/system/etc" "$tmp/system/xbin" "$tmp/system/lib64"
  dpkg-deb -x "$deb" "$tmp/x"
  install -m 755 "$tmp/x/bin/busybox" "$tmp/system/bin/busybox"
  rm -rf "$tmp/x"
  file -b "$tmp/system/bin/busybox" 2>/dev/null | grep -q 'ARM aarch64' || true
  # the applets (toybox-like): every busybox applet but the ones Android has its own of
  for a in $(QEMU_CPU=cortex-a76 "$tmp/system/bin/busybox" --list); do
    case "$a" in busybox|getprop|dumpsys|setprop|nohup|nice|getconf|pgrep|pkill|python*) continue ;; esac
    ln -s busybox "$tmp/system/bin/$a"; n=$((n + 1))
  done
  [ -L "$tmp/system/bin/sh" ] || die "busybox has no sh applet"
  write_image_scripts "$tmp"
  chmod -R u+rwX,go+rX,go-w "$tmp"
  rm -rf "$IMAGE"; mv "$tmp" "$IMAGE"; touch "$IMAGE.ok"
  log "image: $IMAGE/system (busybox $(basename "$deb" | cut -d_ -f2), $n applets)"
}

image_version() {   # the image changes when this script's image part does
  sed -n '/^write_image_scripts()/,/^image_version()/p' "${BASH_SOURCE[0]}" | md5sum | cut -c1-12
}

check_image() {   # aarch64 under qemu, and no python anywhere
  local m
  m=$(chroot "$IMAGE" /system/bin/sh -c 'uname -m') || die "cannot run the image's sh under qemu-aarch64"
  [ "$m" = aarch64 ] || die "the image runs as '$m', expected aarch64"
  if find "$IMAGE" -name 'python*' | grep -q .; then die "the image has a python (it must not)"; fi
  log "image check: sh runs, uname -m = $m, no python"
}

cmd_setup() {
  local t0=$SECONDS
  mkdir -p "$STATE" "$LOGS" "$RUN" "$PHONES"
  chmod 755 "$STATE"
  setup_host
  ensure_binfmt
  fetch_busybox
  setup_image
  check_image
  log "setup done in $((SECONDS - t0)) s"
}

is_set_up() { IMAGE=$IMAGES/$(image_version); [ -e "$IMAGE.ok" ]; }

# ---------------------------------------------------------------- phones

phone_num() {
  [[ $1 =~ ^phone([0-9]+)$ ]] || die "phone name '$1' must be phoneN (phone1, phone2, ...)"
  local n=$((10#${BASH_REMATCH[1]}))
  [ "$n" -ge 1 ] && [ "$n" -le 99 ] || die "phone number $n of '$1' out of 1..99"
  echo "$n"
}

spec_get() { [ -f "$PHONES/$1/spec" ] && sed -n "s/^$2=//p" "$PHONES/$1/spec" || true; }

profile_of() { case "$1" in cortex-a76) echo emulated-phone-a76 ;; *) echo "emulated-phone-$1" ;; esac; }

server_pid() {   # the phone's outer pid (unshare, parent of its PID 1) if it runs
  local p
  p=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -d "/proc/$p" ] && grep -q unshare "/proc/$p/comm" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$p/status" || return 1
  echo "$p"
}

ctl() { "$PY" "$SERVER" ctl "$RUN/$1.ctl" "$2"; }

# The phone's cores: as many as the host lets us use, at most 8 (NCPU), the first half little
# (cortex-a55), the rest big (cortex-a76): qemu-user hands sched_setaffinity to the host kernel,
# so a CPU the host lacks would make ncnn's big-core affinity fail with EINVAL. 8 host CPUs give
# a 4+4 phone; this 2-CPU machine a 1+1 one.
cpu_split() {   # -> NCPU LITTLE
  NCPU=$(nproc); [ "$NCPU" -le 8 ] || NCPU=8
  LITTLE=$((NCPU / 2))
}

phone_cpuinfo() {   # big.LITTLE: LITTLE x cortex-a55 + the rest cortex-a76 (what /proc/cpuinfo says on such a phone)
  local k v p r feat="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
  cpu_split
  for k in $(seq 0 $((NCPU - 1))); do
    if [ $k -lt $LITTLE ]; then v=0x2 p=0xd05 r=0; else v=0x4 p=0xd0b r=1; fi
    printf 'processor\t: %s\nBogoMIPS\t: 38.40\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "$k" "$feat" "$v" "$p" "$r"
  done
  printf 'Hardware\t: Edgecal emulated phone (qemu-user %s)\n' "$1"
}

phone_props() {   # NAME N CPU
  cat <<EOF
# emuphone $1: Android-like properties (read by /system/bin/getprop)
ro.product.brand=edgecal
ro.product.manufacturer=Edgecal
ro.product.model=EdgecalPhone A76 (emulated)
ro.product.name=edgecal_emuphone
ro.product.device=emuphone
ro.product.board=emuphone
ro.product.cpu.abi=arm64-v8a
ro.product.cpu.abilist=arm64-v8a
ro.product.cpu.abilist64=arm64-v8a
ro.product.cpu.abilist32=
ro.hardware=emuphone
ro.board.platform=emuphone
ro.soc.manufacturer=Edgecal
ro.soc.model=EMU-A76x4-A55x4
ro.build.version.release=13
ro.build.version.sdk=33
ro.build.version.security_patch=2026-11-05
ro.build.type=user
ro.build.tags=release-keys
ro.build.id=EMU.261206.001
ro.build.fingerprint=edgecal/edgecal_emuphone/emuphone:13/EMU.261206.001/1:user/release-keys
ro.build.characteristics=default
ro.serialno=emuphone$2
ro.debuggable=0
ro.secure=1
ro.adb.secure=0
ro.kernel.qemu=0
persist.sys.timezone=UTC
sys.boot_completed=1
dev.bootcomplete=1
emuphone.qemu_cpu=$3
EOF
}

phone_sys() {   # DIR: the phone's /sys (read-only inside; the host may change the state files)
  local d=$1 k c cap maxf minf mid cl rel
  rm -rf "$d"; mkdir -p "$d/devices/system/cpu" "$d/class/thermal" "$d/class/power_supply/battery" "$d/emuphone"
  c=$d/devices/system/cpu
  cpu_split
  local all="0-$((NCPU - 1))" lit="0-$((LITTLE - 1))" big="$LITTLE-$((NCPU - 1))"
  [ $LITTLE -gt 1 ] || lit=0; [ $((NCPU - LITTLE)) -gt 1 ] || big=$LITTLE; [ $NCPU -gt 1 ] || all=0
  echo "$all" > "$c/possible"; echo "$all" > "$c/present"; echo "$all" > "$c/online"; echo $((NCPU - 1)) > "$c/kernel_max"
  for k in $(seq 0 $((NCPU - 1))); do
    if [ $k -lt $LITTLE ]; then cap=381 maxf=1800000 minf=300000 mid=0x00000000412fd050 cl=0 rel=$lit
    else cap=1024 maxf=2600000 minf=710400 mid=0x00000000414fd0b1 cl=1 rel=$big; fi
    mkdir -p "$c/cpu$k/cpufreq" "$c/cpu$k/topology" "$c/cpu$k/regs/identification"
    echo 1 > "$c/cpu$k/online"
    echo $cap > "$c/cpu$k/cpu_capacity"
    echo $maxf > "$c/cpu$k/cpufreq/cpuinfo_max_freq"; echo $minf > "$c/cpu$k/cpufreq/cpuinfo_min_freq"
    echo $maxf > "$c/cpu$k/cpufreq/scaling_max_freq"; echo $minf > "$c/cpu$k/cpufreq/scaling_min_freq"
    echo $maxf > "$c/cpu$k/cpufreq/scaling_cur_freq"; echo schedutil > "$c/cpu$k/cpufreq/scaling_governor"
    echo "$rel" > "$c/cpu$k/cpufreq/related_cpus"; echo "$rel" > "$c/cpu$k/cpufreq/affected_cpus"
    echo $cl > "$c/cpu$k/topology/cluster_id"; echo $cl > "$c/cpu$k/topology/physical_package_id"
    echo $((k < LITTLE ? k : k - LITTLE)) > "$c/cpu$k/topology/core_id"; echo "$rel" > "$c/cpu$k/topology/core_siblings_list"
    echo $mid > "$c/cpu$k/regs/identification/midr_el1"
  done
  local z=0 t
  for t in "cpu-0-0:41500" "cpu-1-0:43200" "battery:30100" "skin-therm:33800"; do
    mkdir -p "$d/class/thermal/thermal_zone$z"
    echo "${t%%:*}" > "$d/class/thermal/thermal_zone$z/type"; echo "${t#*:}" > "$d/class/thermal/thermal_zone$z/temp"
    echo enabled > "$d/class/thermal/thermal_zone$z/mode"; z=$((z + 1))
  done
  echo 87 > "$d/class/power_supply/battery/capacity"; echo Charging > "$d/class/power_supply/battery/status"
  echo 301 > "$d/class/power_supply/battery/temp"
  echo Awake > "$d/emuphone/wakefulness"; echo 0 > "$d/emuphone/thermal_status"
  chmod -R a+rX,go-w "$d"
}

phone_root() {   # ROOT: the phone's own folders (data/ is its writable storage; the rest are mount points)
  local r=$1
  mkdir -p "$r/system" "$r/proc" "$r/sys" "$r/dev" "$r/data/local/tmp" "$r/vendor" "$r/product" "$r/sdcard"
  [ -L "$r/etc" ] || ln -s /system/etc "$r/etc"
  [ -L "$r/bin" ] || ln -s /system/bin "$r/bin"
  chmod 755 "$r"; chmod 771 "$r/data"; chmod 751 "$r/data/local"
  chown "$SHELL_UID:$SHELL_UID" "$r/data/local/tmp" "$r/sdcard"; chmod 771 "$r/data/local/tmp" "$r/sdcard"
}

stop_phone() {
  local name=$1 p k
  if p=$(server_pid "$name"); then
    # the phone's PID 1 (unshare's child): killing it takes down the whole pid namespace; unshare
    # (which ignores SIGTERM while it waits) then exits
    kill -KILL $(pgrep -P "$p" 2>/dev/null || true) 2>/dev/null || true
    for k in $(seq 30); do [ -d "/proc/$p" ] || break; sleep 0.1; done
    [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null || true
  fi
  # belt and braces: anything left chrooted in the phone
  local r=$PHONES/$name/root q
  for q in $(find /proc -mindepth 2 -maxdepth 2 -name root -lname "$r" 2>/dev/null); do
    q=${q%/root}; kill -KILL "${q#/proc/}" 2>/dev/null || true
  done
  rm -f "$RUN/$name.pid" "$RUN/$name.ctl"
}

start_phone() {   # NAME CPU
  local name=$1 cpu=$2 n port d r want k
  n=$(phone_num "$name"); port=$((PORT_BASE + n))
  d=$PHONES/$name r=$PHONES/$name/root
  want="num=$n
port=$port
cpu=$cpu
ncpu=$(nproc)
image=$IMAGE"
  if server_pid "$name" >/dev/null && [ "$(cat "$d/spec" 2>/dev/null)" = "$want" ] && ctl "$name" ping >/dev/null 2>&1; then
    log "$name already up: adb connect 127.0.0.1:$port"
    return 0
  fi
  stop_phone "$name"
  mkdir -p "$d" "$RUN" "$LOGS"
  echo "$want" > "$d/spec"
  phone_root "$r"
  phone_cpuinfo "$cpu" > "$d/cpuinfo"
  phone_props "$name" "$n" "$cpu" > "$d/build.prop"
  phone_sys "$d/sys"
  : > "$LOGS/$name.log"
  # inside the new namespaces (bash is PID 1 until it execs the server): mounts, hostname
  local inner='set -e
r=$1 d=$2 img=$3
mount --bind "$r/data" "$r/data"   # its own mount, listed first: df /data/local/tmp says /data
mount --bind "$img/system" "$r/system"; mount -o remount,bind,ro "$r/system"
mount --bind -o ro "$d/build.prop" "$r/system/build.prop"
mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
mount --bind -o ro "$d/cpuinfo" "$r/proc/cpuinfo"
mount --bind "$d/sys" "$r/sys"; mount -o remount,bind,ro "$r/sys"
mount -t tmpfs -o mode=755,size=1m,nosuid dev "$r/dev"
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  f=${n%%:*}; m=${n#*:}; mknod -m 666 "$r/dev/$f" c "${m%:*}" "${m#*:}"
done
mkdir "$r/dev/pts"; mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"; ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"; ln -s /proc/self/fd/1 "$r/dev/stdout"; ln -s /proc/self/fd/2 "$r/dev/stderr"
hostname localhost
shift 3
exec "$@"'
  setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$RUN/$name.pid" \
    unshare --pid --fork --kill-child --mount --uts --propagation private \
    bash -c "$inner" _ "$r" "$d" "$IMAGE" \
    "$PY" -u "$SERVER" serve --root "$r" --port "$port" --ctl "$RUN/$name.ctl" --name "$name" --cpu "$cpu" \
    --model "EdgecalPhone_A76_emulated" </dev/null >> "$LOGS/$name.log" 2>&1 &
  for k in $(seq 100); do
    if server_pid "$name" >/dev/null && [ -S "$RUN/$name.ctl" ] && ctl "$name" ping >/dev/null 2>&1 &&
       "$PY" "$SERVER" probe "$port" --timeout 2 >/dev/null 2>&1; then break; fi
    [ "$k" = 100 ] && { tail -5 "$LOGS/$name.log" >&2; die "$name: no adb endpoint on 127.0.0.1:$port (log: $LOGS/$name.log)"; }
    sleep 0.1
  done
  log "$name up: adb connect 127.0.0.1:$port  ($cpu, $(profile_of "$cpu"), pid $(cat "$RUN/$name.pid"))"
}

cmd_entries() {   # the boards-file sections of every phone that is up
  local name
  for name in $(known_phones); do
    server_pid "$name" >/dev/null || continue
    echo
    echo "# emulated phone (toolchains/emuphone.sh: our adb device side + busybox under qemu-user; a test fixture)"
    echo "[boards.$name]"
    echo "transport = \"adb\""
    echo "serial = \"127.0.0.1:$(spec_get "$name" port)\""
    echo "profile = \"$(profile_of "$(spec_get "$name" cpu)")\""
    echo "workdir = \"/data/local/tmp/edgecal\""
  done
}

known_phones() { local f n; for f in "$PHONES"/*/spec; do [ -e "$f" ] || continue; n=${f%/spec}; echo "${n##*/}"; done; }

write_boards_file() {   # one writer for the boards file: emuboard.sh (boards + these phones)
  bash "$HERE/emuboard.sh" boards-file
}

cmd_start() {
  local specs=("$@") s name opts o cpu t0=$SECONDS
  [ ${#specs[@]} -gt 0 ] || specs=(phone1)
  is_set_up || die "not set up (or the image is out of date); run '$0 setup' first"
  ensure_binfmt
  for s in "${specs[@]}"; do
    name=${s%%:*}; opts=; [ "$s" = "$name" ] || opts=${s#*:}
    phone_num "$name" >/dev/null
    cpu=$(spec_get "$name" cpu); cpu=${cpu:-cortex-a76}
    for o in ${opts//,/ }; do
      case "$o" in cpu=?*) cpu=${o#cpu=} ;; *) die "unknown phone option '$o' (cpu=MODEL)" ;; esac
    done
    case "$cpu" in cortex-a53|cortex-a57|cortex-a72|cortex-a76|max|neoverse-n1) ;; *) die "$name: unknown qemu cpu '$cpu'" ;; esac
    start_phone "$name" "$cpu"
  done
  write_boards_file
  log "start done in $((SECONDS - t0)) s"
}

cmd_stop() {
  local t0=$SECONDS names n
  [ -d "$PHONES" ] || return 0
  if [ -n "${1:-}" ]; then
    [ -d "$PHONES/$1" ] || die "no phone '$1' (known: $(known_phones | tr '\n' ' '))"
    names=$1
  else names=$(known_phones); fi
  for n in $names; do stop_phone "$n"; done
  log "stopped ${1:-all phones} ($((SECONDS - t0)) s)"
}

need_up() { [ -n "${1:-}" ] || die "usage: $0 $2 NAME"; server_pid "$1" >/dev/null || die "phone $1 is not running"; }

cmd_cut() {
  need_up "${1:-}" cut
  case "${2:-drop}" in
    drop) ctl "$1" cut ;;
    hold) ctl "$1" hold ;;
    *) die "usage: $0 cut NAME [drop|hold]" ;;
  esac
}

cmd_reboot() {   # NAME [DOWN_SECONDS]: every process killed; with DOWN, adb is refused that long (booting)
  need_up "$1" reboot
  case "$2" in *[!0-9.]*|'') die "usage: $0 reboot NAME [DOWN_SECONDS]" ;; esac
  if [ "$2" = 0 ]; then ctl "$1" reboot; return; fi
  ctl "$1" hold >/dev/null
  ctl "$1" reboot
  sleep "$2"
  ctl "$1" restore
}

cmd_set() {
  local name=${1:-} what=${2:-} v=${3:-} s
  [ -n "$name" ] && [ -d "$PHONES/$name/sys" ] || die "usage: $0 set NAME screen on|off | temp MILLIDEGREES"
  s=$PHONES/$name/sys
  case "$what:$v" in
    screen:on) echo Awake > "$s/emuphone/wakefulness" ;;
    screen:off) echo Asleep > "$s/emuphone/wakefulness" ;;
    temp:[0-9]*)
      echo "$v" > "$s/class/thermal/thermal_zone0/temp"; echo "$v" > "$s/class/thermal/thermal_zone1/temp"
      if [ "$v" -ge 95000 ]; then echo 4 ; elif [ "$v" -ge 80000 ]; then echo 2; else echo 0; fi > "$s/emuphone/thermal_status" ;;
    *) die "usage: $0 set NAME screen on|off | temp MILLIDEGREES" ;;
  esac
  log "$name: $what $v"
}

cmd_status() {
  local name p
  is_set_up && echo "setup: done (image $IMAGE)" || echo "setup: not done (or the image is out of date)"
  for name in $(known_phones); do
    if p=$(server_pid "$name"); then
      echo "$name: up   127.0.0.1:$(spec_get "$name" port) $(spec_get "$name" cpu) pid=$p $(ctl "$name" ping 2>&1 | tr '\n' ' ')"
    else
      echo "$name: down"
    fi
  done
}

cmd_reset() {
  cmd_stop
  rm -rf "$PHONES"
  log "reset: phone files discarded"
}

cmd_purge() {
  [ -d "$STATE" ] && cmd_reset
  rm -rf "$STATE"
  log "purged $STATE (apt packages and binfmt stay)"
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case "$cmd" in
  setup) cmd_setup ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "${1:-}" ;;
  status) cmd_status ;;
  cut) cmd_cut "${1:-}" "${2:-drop}" ;;
  restore) need_up "${1:-}" restore; ctl "$1" restore ;;
  reboot) cmd_reboot "${1:-}" "${2:-0}" ;;
  set) cmd_set "$@" ;;
  entries) cmd_entries ;;
  reset) cmd_reset ;;
  purge) cmd_purge ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
