#!/usr/bin/env bash
# emuboard.sh - emulated aarch64 and 32-bit armv7 "Raspberry Pi" boards for edgecal's tests and CI.
#
# A Debian bookworm arm64 rootfs (the base of Raspberry Pi OS 64-bit: Python 3.11, glibc 2.36)
# runs under qemu user-mode emulation (binfmt_misc, F flag). numpy + ncnn come from PyPI's
# aarch64 wheels, pinned to the host's versions, in a separate overlay lower layer (so a "bare"
# board is the same rootfs without that layer). Each board is reachable over real SSH/SFTP: the
# host's OpenSSH sshd authenticates user "pi" and chroots (ChrootDirectory) into the board's
# overlay; SFTP is sshd's internal-sftp, commands run in the rootfs's aarch64 bash/python3.
# armv7 boards (emuv7; a test fixture for the native agent) are the same on a Debian bookworm
# armhf minbase rootfs WITHOUT python3 under qemu-arm (binfmt, F flag), Pi 2-like (cortex-a7).
#
# usage: emuboard.sh setup [SPEC...]      host packages, binfmt, rootfs(es), wheels, user, keys (idempotent)
#                                          for these boards (default: the aarch64 ones; emuv7: armhf)
#        emuboard.sh start [SPEC...]       start boards (default: emu1 emu2) and write the boards file;
#                                          SPEC = NAME[:OPT,...], OPT = bare | full | cpu=MODEL | arch=aarch64|armv7
#        emuboard.sh stop [NAME]           power off one board, or all (its files are kept)
#        emuboard.sh cut NAME [drop|unreach]   netns mode: unplug a board (drop: silent, clients time
#                                          out; unreach: the host route goes, EHOSTUNREACH at once)
#        emuboard.sh restore NAME          netns mode: plug it back in
#        emuboard.sh status                one line per known board
#        emuboard.sh boards-file           rewrite the boards file (boards + emulated phones up)
#        emuboard.sh reset                 stop all, forget every file written on the boards
#        emuboard.sh purge                 reset + remove rootfs, state, host user, safety route
#
# Arch: arch= option > the board's last start > the name: emuv* is armv7, others aarch64.
# NAME ends in a number N (1..99); the board's number B is N (aarch64) or 100+N (armv7: emuv7 is
# 107, so it never clashes with emu1..emu99). B picks its address: loopback 127.0.0.1:(2221+B),
# netns 10.200.B.2:22 in network namespace "ecb-NAME" (host side 10.200.B.1 on veth "ecbhB").
# emu1 is Pi 4-like (cortex-a72, no asimdhp: ncnn stays fp32), emu2 Pi 5-like (cortex-a76,
# asimdhp: fp16); any other aarch64 name defaults to cortex-a72; armv7 boards to cortex-a7
# (Pi 2 cpuinfo; qemu-arm also has cortex-a15, max), profile emulated-armv7.
#
# env:  EMUBOARD_STATE=/srv/edgecal-boards   everything lives here (root-owned)
#       EMUBOARD_NET / BOARDS_NET = loopback | netns   (start; default: the board's last mode, else loopback)
#       EMUBOARD_BARE=1            start: boards without numpy/ncnn (python3 only)
#       EMUBOARD_CPU=cortex-a72    default QEMU_CPU of aarch64 boards; EMUBOARD_CPU_<NAME> per board (any arch)
#       EMUBOARD_HOST_PYTHON=PATH  read the ncnn/numpy pins from this interpreter (and use its pip)
#       EMUBOARD_NCNN / EMUBOARD_NUMPY   explicit pins (default: the host python's, else
#                                  ncnn 1.0.20261020 / numpy 2.4.6)
#       EDGECAL_BOARDS_FILE        boards file written by start (default $EMUBOARD_STATE/boards.toml)
#       EMUBOARD_MIRROR            Debian mirror (default http://deb.debian.org/debian)
#       EMUBOARD_FAKE_CPUINFO=1    Pi-like /proc/cpuinfo on the boards (0: the host's)
# needs root: apt-get, mount, chroot, binfmt_misc, ip netns, sshd with ChrootDirectory.
set -euo pipefail
umask 022

STATE=${EMUBOARD_STATE:-/srv/edgecal-boards}
BASE=$STATE/arm64                              # pristine debootstrap rootfs: the bare lower layer
ARMHF=$STATE/armhf                             # armv7 boards' rootfs (armhf, no python3): their only layer
LAYERS=$STATE/layers                           # numpy+ncnn lower layers, one per pin pair
BOARDS=$STATE/boards                           # per board: spec, upper/, work/, root/ (the chroot)
SSHD_DIR=$STATE/ssh
RUN=$STATE/run
LOGS=$STATE/log
BOARDS_FILE=${EDGECAL_BOARDS_FILE:-$STATE/boards.toml}
MIRROR=${EMUBOARD_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PYV=3.11
SITE=usr/local/lib/python$PYV/dist-packages   # inside the rootfs
BUSER=pi
BUID=${EMUBOARD_UID:-4242}
SUBNET=10.200
DEFAULT_NCNN=1.0.20261020
DEFAULT_NUMPY=2.4.6
ARMV7_CPU=cortex-a7                            # qemu-arm's CPU for armv7 boards (profile emulated-armv7)
ARMV7_BASE=100                                 # armv7 board N gets number 100+N (emuv7: 107)
PLATS=(--platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64)
ENV_NET=${EMUBOARD_NET:-${BOARDS_NET:-}}

log() { printf '[emuboard %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, mount, chroot, ip netns, sshd)"
case "$STATE" in /?*/?*) ;; *) die "EMUBOARD_STATE must be an absolute path at least two levels deep";; esac
case "$STATE" in *//*|*/./*|*/../*|*/) die "EMUBOARD_STATE: odd path '$STATE'";; esac
case "$ENV_NET" in ''|loopback|netns) ;; *) die "EMUBOARD_NET/BOARDS_NET must be loopback or netns, not '$ENV_NET'";; esac

mounts_under() {   # mount points at or below $1, deepest last
  awk -v p="$1" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/self/mounts
}
no_boards_mounted() {
  [ -z "$(mounts_under "$BOARDS")" ] || die "boards are running or left mounted; run '$0 stop' first"
}

# ---------------------------------------------------------------- pins

host_python() {   # interpreter with pip: the given one, else python3
  local py=${EMUBOARD_HOST_PYTHON:-python3}
  command -v "$py" >/dev/null || die "EMUBOARD_HOST_PYTHON=$py not found"
  echo "$py"
}

resolve_pins() {   # sets NCNN NUMPY
  NCNN=${EMUBOARD_NCNN:-} NUMPY=${EMUBOARD_NUMPY:-}
  if [ -n "${EMUBOARD_HOST_PYTHON:-}" ] && { [ -z "$NCNN" ] || [ -z "$NUMPY" ]; }; then
    local v
    v=$("$(host_python)" -c 'from importlib.metadata import version as v; print(v("ncnn"), v("numpy"))' 2>/dev/null) ||
      die "EMUBOARD_HOST_PYTHON=$EMUBOARD_HOST_PYTHON has no ncnn/numpy installed (install the project first, or unset it)"
    NCNN=${NCNN:-${v% *}} NUMPY=${NUMPY:-${v#* }}
  fi
  NCNN=${NCNN:-$DEFAULT_NCNN} NUMPY=${NUMPY:-$DEFAULT_NUMPY}
  LAYER=$LAYERS/ncnn-$NCNN-numpy-$NUMPY
}

current_layer() {   # the layer full boards use: the newest complete one
  local l
  l=$(cat "$STATE/layer.current" 2>/dev/null) || die "no numpy/ncnn layer; run '$0 setup' first"
  [ -e "$l.ok" ] || die "layer $l is incomplete; run '$0 setup' again"
  echo "$l"
}

# ---------------------------------------------------------------- setup

ensure_binfmt() {   # [QEMU_NAME]: qemu-aarch64 (default) or qemu-arm (armv7 boards)
  local q=${1:-qemu-aarch64} f
  f=/proc/sys/fs/binfmt_misc/$q
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
    die "cannot mount binfmt_misc (no privileges in this container?)"
  if [ ! -e "$f" ]; then
    update-binfmts --enable "$q" >/dev/null 2>&1 || true
    # update-binfmts needs binfmt-support's own database; fall back to qemu's systemd file
    [ -e "$f" ] || grep -v '^#' "/usr/lib/binfmt.d/$q.conf" > /proc/sys/fs/binfmt_misc/register
  fi
  grep -qx enabled "$f" || echo 1 > "$f"
  # F (fix-binary): the kernel opens the interpreter now, so chroots need no qemu binary inside
  grep -q '^flags:.*F' "$f" || die "binfmt entry $q lacks the F flag ($(grep flags "$f")); unregister it (echo -1 > $f) and rerun setup"
}

setup_host() {
  local need="" p
  export DEBIAN_FRONTEND=noninteractive
  for p in qemu-user-static binfmt-support debootstrap openssh-server openssh-client iproute2 procps \
           debian-archive-keyring util-linux; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"
  done
  if [ -n "$need" ]; then
    log "apt-get install$need"
    apt-get update -qq || die "apt-get update failed"
    # policy-rc.d: never start the host's own sshd service (only our per-board daemons run)
    local prc=/usr/sbin/policy-rc.d had=0
    [ -e $prc ] && had=1
    [ $had = 1 ] || printf '#!/bin/sh\nexit 101\n' > $prc && chmod 755 $prc
    apt-get install -y -qq --no-install-recommends $need >/dev/null || { [ $had = 1 ] || rm -f $prc; die "apt-get install failed"; }
    [ $had = 1 ] || rm -f $prc
  fi
}

setup_rootfs() {
  [ -e "$STATE/arm64.ok" ] && return 0
  no_boards_mounted
  [ -z "$(mounts_under "$BASE")" ] || die "something is mounted under $BASE"
  rm -rf "$BASE" "$LAYERS" "$STATE/layer.current"   # a half-built rootfs from an interrupted run
  log "debootstrap arm64 $SUITE -> $BASE (2-3 min; log: $LOGS/debootstrap.log)"
  debootstrap --arch=arm64 --variant=minbase --include=python3 "$SUITE" "$BASE" "$MIRROR" > "$LOGS/debootstrap.log" 2>&1 ||
    { tail -20 "$LOGS/debootstrap.log" >&2; die "debootstrap failed (log: $LOGS/debootstrap.log)"; }
  chroot "$BASE" apt-get clean
  # the board user, with the host user's uid (sshd looks "pi" up on the host, programs in the rootfs)
  chroot "$BASE" groupadd -g "$BUID" "$BUSER"
  chroot "$BASE" useradd -m -u "$BUID" -g "$BUID" -s /bin/bash "$BUSER"
  echo "emuboard" > "$BASE/etc/hostname"
  touch "$STATE/arm64.ok"
}

# armv7 boards: Debian bookworm armhf minbase, deliberately WITHOUT python3 (boards that only a
# native agent can serve); one layer, no wheels. Built beside running aarch64 boards.
setup_rootfs_armhf() {
  [ -e "$STATE/armhf.ok" ] && return 0
  local o
  for o in $(known_boards); do
    [ "$(spec_get "$o" arch)" = armv7 ] && [ -n "$(mounts_under "$BOARDS/$o/root")" ] &&
      die "armv7 board $o is running or left mounted; run '$0 stop $o' first"
  done
  [ -z "$(mounts_under "$ARMHF")" ] || die "something is mounted under $ARMHF"
  rm -rf "$ARMHF"   # a half-built rootfs from an interrupted run
  log "debootstrap armhf $SUITE (minbase, no python3) -> $ARMHF (3-5 min; log: $LOGS/debootstrap-armhf.log)"
  debootstrap --arch=armhf --variant=minbase "$SUITE" "$ARMHF" "$MIRROR" > "$LOGS/debootstrap-armhf.log" 2>&1 ||
    { tail -20 "$LOGS/debootstrap-armhf.log" >&2; die "debootstrap armhf failed (log: $LOGS/debootstrap-armhf.log)"; }
  chroot "$ARMHF" apt-get clean
  chroot "$ARMHF" groupadd -g "$BUID" "$BUSER"
  chroot "$ARMHF" useradd -m -u "$BUID" -g "$BUID" -s /bin/bash "$BUSER"
  echo "emuboard" > "$ARMHF/etc/hostname"
  touch "$STATE/armhf.ok"
}

setup_user() {
  if ! getent passwd "$BUSER" >/dev/null; then
    getent passwd "$BUID" >/dev/null && die "uid $BUID is taken on the host; set EMUBOARD_UID"
    getent group "$BUID" >/dev/null || groupadd -g "$BUID" "$BUSER"
    useradd -M -u "$BUID" -g "$BUID" -d "/home/$BUSER" -s /bin/bash "$BUSER"
  fi
  [ "$(id -u "$BUSER")" = "$BUID" ] || die "host user $BUSER has uid $(id -u "$BUSER"), expected $BUID (EMUBOARD_UID)"
  # '*' = no password but not "locked" ('!', useradd's default), which sshd without PAM refuses
  [ "$(getent shadow "$BUSER" | cut -d: -f2)" = '*' ] || usermod -p '*' "$BUSER"
}

setup_layer() {   # numpy + ncnn into their own lower layer
  resolve_pins
  if [ ! -e "$LAYER.ok" ]; then
    local py tmp=$LAYER.tmp t=$SECONDS
    py=$(host_python)
    "$py" -m pip --version >/dev/null 2>&1 || die "$py has no pip (set EMUBOARD_HOST_PYTHON to a python with pip)"
    local hv nocomp=()
    hv=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$hv" = "$PYV" ] || nocomp=(--no-compile)   # its .pyc would be for the wrong python
    log "aarch64 wheels ncnn==$NCNN numpy==$NUMPY -> $LAYER (pip of $py)"
    rm -rf "$tmp" "$STATE/wheels.tmp"
    mkdir -p "$tmp/$SITE" "$STATE/wheels"
    local popt=(--only-binary=:all: --implementation cp --python-version "$PYV" --abi "cp${PYV/./}" "${PLATS[@]}")
    # pip's output goes to a log: this machine's pip.conf names local indexes that pip warns about
    "$py" -m pip download -q --no-input "${popt[@]}" -d "$STATE/wheels" "ncnn==$NCNN" "numpy==$NUMPY" > "$LOGS/pip.log" 2>&1 ||
      { tail -20 "$LOGS/pip.log" >&2; die "pip download of the aarch64 wheels failed (log: $LOGS/pip.log)"; }
    "$py" -m pip install -q --no-input --root-user-action=ignore "${nocomp[@]}" --no-index --find-links "$STATE/wheels" "${popt[@]}" \
      --target "$tmp/$SITE" "ncnn==$NCNN" "numpy==$NUMPY" >> "$LOGS/pip.log" 2>&1 ||
      { tail -20 "$LOGS/pip.log" >&2; die "pip install --target failed (log: $LOGS/pip.log)"; }
    rm -rf "${tmp:?}/$SITE/bin"     # console scripts with the host python in their #! line
    if [ "$hv" != "$PYV" ]; then
      # the board user cannot write __pycache__ there: without .pyc every import recompiles
      log "byte-compiling under emulation (host python is $hv, not $PYV; ~30 s)"
      mkdir -p "$STATE/mnt" "$LAYERS/.work"
      mount -t overlay ecb-compile -o "lowerdir=$BASE,upperdir=$tmp,workdir=$LAYERS/.work" "$STATE/mnt"
      chroot "$STATE/mnt" python3 -m compileall -q "/$SITE" >/dev/null || { umount "$STATE/mnt"; die "compileall failed"; }
      umount "$STATE/mnt"; rm -rf "$LAYERS/.work"
    fi
    chmod -R u+rwX,go+rX,go-w "$tmp"
    rm -rf "$LAYER"; mv "$tmp" "$LAYER"; touch "$LAYER.ok"
    log "wheels installed ($((SECONDS - t)) s, $(du -sh "$LAYER" | cut -f1))"
  fi
  if [ "$(cat "$STATE/layer.current" 2>/dev/null)" != "$LAYER" ]; then
    echo "$LAYER" > "$STATE/layer.current"
    log "full boards now get ncnn $NCNN + numpy $NUMPY (restart running boards to switch)"
  fi
}

setup_keys() {
  mkdir -p "$SSHD_DIR/hostkeys"
  chmod 755 "$SSHD_DIR" "$SSHD_DIR/hostkeys"
  [ -f "$SSHD_DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C edgecal-emuboard-client -f "$SSHD_DIR/id_ed25519"
  cp "$SSHD_DIR/id_ed25519.pub" "$SSHD_DIR/authorized_keys.tmp"
  chmod 644 "$SSHD_DIR/authorized_keys.tmp"; mv "$SSHD_DIR/authorized_keys.tmp" "$SSHD_DIR/authorized_keys"
  # the client key is for the test process: root in CI; under sudo, also the calling user
  if [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" != 0 ]; then chown "$SUDO_UID" "$SSHD_DIR/id_ed25519"; fi
}

check_rootfs() {   # full: python3 + numpy + ncnn under emulation; bare: python3 without them
  local l; l=$(current_layer)
  mkdir -p "$STATE/mnt"
  mountpoint -q "$STATE/mnt" && umount "$STATE/mnt"
  mount -t overlay ecb-check -o "lowerdir=$l:$BASE" "$STATE/mnt"     # two lowers, no upper: read-only
  chroot "$STATE/mnt" /usr/bin/env QEMU_CPU=cortex-a72 python3 -c 'import ncnn, numpy, platform; assert platform.machine() == "aarch64"; print("full rootfs:", platform.python_version(), platform.machine(), "ncnn", ncnn.__version__, "numpy", numpy.__version__)' ||
    { umount "$STATE/mnt"; die "import check failed in the full rootfs"; }
  umount "$STATE/mnt"
  chroot "$BASE" python3 -c 'import importlib.util as u; assert not (u.find_spec("numpy") or u.find_spec("ncnn")); print("bare rootfs: python3 without numpy/ncnn")' ||
    die "the bare rootfs has numpy/ncnn"
}

check_rootfs_armhf() {   # armv7l under qemu-arm, and no python at all
  local m
  m=$(chroot "$ARMHF" /usr/bin/env QEMU_CPU=$ARMV7_CPU uname -m) || die "cannot run the armhf rootfs under qemu-arm"
  [ "$m" = armv7l ] || die "the armhf rootfs runs as '$m', expected armv7l"
  if compgen -G "$ARMHF/usr/bin/python3*" >/dev/null; then die "the armhf rootfs has python3 (it must not)"; fi
  log "armhf rootfs: $m, no python3"
}

cmd_setup() {   # [SPEC...]: what these boards need (default: the aarch64 boards' rootfs + layer)
  local t0=$SECONDS s arches=()
  for s in "$@"; do arches+=("$(spec_arch "$s")"); done
  [ ${#arches[@]} -gt 0 ] || arches=(aarch64)
  mkdir -p "$STATE" "$LOGS" "$RUN"
  chmod 755 "$STATE"
  setup_host
  [[ " ${arches[*]} " != *" aarch64 "* ]] || ensure_binfmt qemu-aarch64
  [[ " ${arches[*]} " != *" armv7 "* ]] || ensure_binfmt qemu-arm
  log "host packages + binfmt ready ($((SECONDS - t0)) s)"
  if [[ " ${arches[*]} " == *" aarch64 "* ]]; then
    setup_rootfs
  fi
  if [[ " ${arches[*]} " == *" armv7 "* ]]; then
    local t1=$SECONDS
    setup_rootfs_armhf
    log "armhf rootfs ready ($((SECONDS - t1)) s, $(du -sh "$ARMHF" | cut -f1))"
  fi
  setup_user
  [[ " ${arches[*]} " != *" aarch64 "* ]] || setup_layer
  setup_keys
  [[ " ${arches[*]} " != *" aarch64 "* ]] || check_rootfs
  [[ " ${arches[*]} " != *" armv7 "* ]] || check_rootfs_armhf
  log "setup (${arches[*]}) done in $((SECONDS - t0)) s"
}

is_set_up() {   # ARCH
  [ -f "$SSHD_DIR/id_ed25519" ] && getent passwd "$BUSER" >/dev/null || return 1
  case "${1:-aarch64}" in
    aarch64) [ -e "$STATE/arm64.ok" ] && [ -e "$(cat "$STATE/layer.current" 2>/dev/null).ok" ] ;;
    armv7) [ -e "$STATE/armhf.ok" ] ;;
  esac
}

# ---------------------------------------------------------------- boards

board_num() {   # NAME [ARCH] -> the board's number: N for aarch64 (1..99), 100+N for armv7 (101..199)
  local n
  [[ $1 =~ ^[a-z][a-z0-9-]*[a-z-]([0-9]+)$ ]] || die "board name '$1' must be lowercase and end in a number (emu1, emu2, bare3, emuv7...)"
  n=$((10#${BASH_REMATCH[1]}))
  [ "$n" -ge 1 ] && [ "$n" -le 99 ] || die "board number $n of '$1' out of 1..99"
  [ ${#1} -le 11 ] || die "board name '$1' too long (11 chars max: the netns/veth names)"
  [ "${2:-aarch64}" = armv7 ] && n=$((ARMV7_BASE + n))
  echo "$n"
}

spec_get() { [ -f "$BOARDS/$1/spec" ] && sed -n "s/^$2=//p" "$BOARDS/$1/spec" || true; }

spec_arch() {   # SPEC (NAME[:OPT,...]) -> aarch64 | armv7
  # an explicit arch= option > the board's last start > the name (emuv*: armv7) > aarch64
  local name=${1%%:*} opts o a=
  opts=; [ "$1" = "$name" ] || opts=${1#*:}
  for o in ${opts//,/ }; do case "$o" in arch=*) a=${o#arch=} ;; esac; done
  [ -n "$a" ] || a=$(spec_get "$name" arch)
  if [ -z "$a" ]; then case "$name" in emuv*) a=armv7 ;; *) a=aarch64 ;; esac; fi
  case "$a" in aarch64|armv7) echo "$a" ;; *) die "$name: unknown arch '$a' (aarch64, armv7)" ;; esac
}

profile_of() {   # CPU [ARCH]
  if [ "${2:-aarch64}" = armv7 ]; then
    case "$1" in cortex-a7) echo emulated-armv7 ;; *) echo "emulated-armv7-$1" ;; esac
    return
  fi
  case "$1" in
    cortex-a53) echo emulated-pi3 ;; cortex-a72) echo emulated-pi4 ;; cortex-a76) echo emulated-pi5 ;;
    *) echo "emulated-$1" ;;
  esac
}

sshd_pid() {   # pid of the board's listening sshd, if it runs
  local p
  p=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -d "/proc/$p" ] && grep -q sshd "/proc/$p/comm" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$p/status" || return 1
  echo "$p"
}

# /proc/cpuinfo under qemu-user 7.2 shows the x86 host: bind a Raspberry-Pi-like one over it
pi_cpuinfo() {
  local part var rev feat model prev bogo k
  case "$1" in
    cortex-a53) part=0xd03 var=0x0 rev=4 bogo=38.40 model="Raspberry Pi 3 Model B Rev 1.2" prev=a02082
                feat="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a72) part=0xd08 var=0x0 rev=3 bogo=108.00 model="Raspberry Pi 4 Model B Rev 1.4" prev=c03114
                feat="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a76) part=0xd0b var=0x4 rev=1 bogo=108.00 model="Raspberry Pi 5 Model B Rev 1.0" prev=c04170
                feat="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    cortex-a7)   # Raspberry Pi 2 (BCM2836) on a 32-bit OS
      for k in 0 1 2 3; do
        printf 'processor\t: %s\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xc07\nCPU revision\t: 5\n\n' \
          "$k" "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm"
      done
      printf 'Hardware\t: BCM2835\nRevision\t: a01041\nSerial\t\t: 00000000%08x\nModel\t\t: %s\n' "$RANDOM" "Raspberry Pi 2 Model B Rev 1.1"
      return 0 ;;
    *) return 0 ;;
  esac
  for k in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: %s\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "$k" "$bogo" "$feat" "$var" "$part" "$rev"
  done
  printf 'Revision\t: %s\nSerial\t\t: 10000000%08x\nModel\t\t: %s\n' "$prev" "$RANDOM" "$model"
}

kill_board_procs() {   # sshd, its sessions, everything chrooted in the board or in its netns
  local name=$1 r=$BOARDS/$1/root pids p pass
  for pass in TERM KILL; do
    pids=""
    p=$(cat "$RUN/$name.pid" 2>/dev/null || true)
    if [ -n "$p" ] && [ -d "/proc/$p" ] && grep -q sshd "/proc/$p/comm" 2>/dev/null; then
      pids="$p $(pgrep -P "$p" 2>/dev/null | tr '\n' ' ' || true)"
    fi
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/root" 2>/dev/null)" = "$r" ] && pids="$pids ${p#/proc/}"
    done
    if ip netns list 2>/dev/null | grep -qw "ecb-$name"; then pids="$pids $(ip netns pids "ecb-$name" 2>/dev/null | tr '\n' ' ' || true)"; fi
    pids=$(echo $pids)
    [ -n "$pids" ] || break
    kill -$pass $pids 2>/dev/null || true
    sleep 0.3
  done
  rm -f "$RUN/$name.pid"
}

stop_board() {
  local name=$1 r=$BOARDS/$1/root m n k
  kill_board_procs "$name"
  for m in $(mounts_under "$r" | sort -r); do
    for k in 1 2 3 4 5; do umount "$m" 2>/dev/null && break; sleep 0.3; done
    if mountpoint -q "$m"; then log "WARNING: $m busy; detaching it lazily"; umount -l "$m"; fi
  done
  if ip netns list 2>/dev/null | grep -qw "ecb-$name"; then ip netns del "ecb-$name"; fi   # takes the veth pair along
  n=$(spec_get "$name" num)
  # the netns' deletion takes the veth pair along, asynchronously: it may vanish under this del
  if [ -n "$n" ]; then ip link del "ecbh$n" 2>/dev/null || true; fi
  rm -f "$RUN/$name.sshd_config"
}

start_board() {   # NAME NET CPU BARE ARCH
  local name=$1 net=$2 cpu=$3 bare=$4 arch=${5:-aarch64} n b r ns host port lower l nsexec=() k
  n=$(board_num "$name" "$arch")
  b=$BOARDS/$name r=$BOARDS/$name/root ns=ecb-$name
  if [ "$arch" = armv7 ]; then lower=$ARMHF
  elif [ "$bare" = 1 ]; then lower=$BASE
  else l=$(current_layer); lower=$l:$BASE; fi
  if [ "$net" = netns ]; then host=$SUBNET.$n.2 port=22; else host=127.0.0.1 port=$((2221 + n)); fi
  local want="num=$n
net=$net
cpu=$cpu
bare=$bare
lower=$lower
host=$host
port=$port"
  # aarch64 specs keep their old form (no arch line): running boards of an older script match
  [ "$arch" = aarch64 ] || want="$want
arch=$arch"

  if sshd_pid "$name" >/dev/null && [ "$(cat "$b/spec" 2>/dev/null)" = "$want" ]; then
    log "$name already up: $host:$port ($cpu$([ "$bare" = 1 ] && echo ', bare'))"
    return 0
  fi
  stop_board "$name"     # stale pieces (killed daemons, leftover mounts/netns) or a changed spec

  # another running board with the same number would clash on address/netns
  local o
  for o in "$BOARDS"/*/spec; do
    [ -e "$o" ] || continue
    o=${o%/spec}; o=${o##*/}
    [ "$o" != "$name" ] && [ "$(spec_get "$o" num)" = "$n" ] && sshd_pid "$o" >/dev/null &&
      die "board $o (running) has the same number $n as $name"
  done

  mkdir -p "$b/upper" "$b/work" "$r"
  chmod 755 "$BOARDS" "$b" "$r"    # ChrootDirectory: every component root-owned, not group/other-writable
  if [ "$(spec_get "$name" lower)" != "$lower" ] && [ -n "$(ls -A "$b/upper")" ]; then
    log "$name: lower layers changed (bare/full, new pins or arch): discarding the board's old files"
    rm -rf "$b/upper" "$b/work"; mkdir -p "$b/upper" "$b/work"
  fi
  echo "$want" > "$b/spec"

  mount -t overlay "ecb-$name" -o "lowerdir=$lower,upperdir=$b/upper,workdir=$b/work" "$r"
  mount -t proc proc "$r/proc"
  if [ "${EMUBOARD_FAKE_CPUINFO:-1}" = 1 ]; then
    pi_cpuinfo "$cpu" > "$b/cpuinfo"
    [ ! -s "$b/cpuinfo" ] || mount --bind -o ro "$b/cpuinfo" "$r/proc/cpuinfo"
  fi
  mount -t sysfs -o ro sysfs "$r/sys"
  mount --bind /dev/pts "$r/dev/pts"                          # sshd allocates ptys on the host
  mount -t tmpfs -o mode=1777,size=256m shm "$r/dev/shm"

  if [ "$net" = netns ]; then
    # safety: with a link down, 10.200.x must not fall through to the host's default route
    ip route replace unreachable "$SUBNET.0.0/16"
    ip netns add "$ns"
    ip link add "ecbh$n" type veth peer name eth0 netns "$ns"
    ip addr add "$SUBNET.$n.1/24" dev "ecbh$n"
    ip -n "$ns" addr add "$SUBNET.$n.2/24" dev eth0
    ip link set "ecbh$n" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up        # no default route in the board's netns: it reaches only 10.200.N.1
    nsexec=(ip netns exec "$ns")
  fi

  mkdir -p /run/sshd "$RUN" "$LOGS"
  local hk=$SSHD_DIR/hostkeys/$name conf=$RUN/$name.sshd_config
  [ -f "$hk" ] || ssh-keygen -q -t ed25519 -N '' -C "edgecal-emuboard-$name" -f "$hk"
  cat > "$conf" <<EOF
ListenAddress $host:$port
HostKey $hk
PidFile $RUN/$name.pid
AuthorizedKeysFile $SSHD_DIR/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $BUSER
UsePAM no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
PrintLastLog no
ClientAliveInterval 5
ClientAliveCountMax 3
MaxStartups 50:30:100
Subsystem sftp internal-sftp
ChrootDirectory $r
SetEnv QEMU_CPU=$cpu EMUBOARD=$name EMUBOARD_BARE=$bare
LogLevel VERBOSE
EOF
  /usr/sbin/sshd -t -f "$conf" || die "sshd rejects $conf"
  : > "$LOGS/$name.sshd.log"
  # own UTS namespace: `hostname` on the board prints its name
  "${nsexec[@]}" unshare --uts sh -c "hostname '$name'; exec /usr/sbin/sshd -f '$conf' -E '$LOGS/$name.sshd.log'" ||
    { tail -5 "$LOGS/$name.sshd.log" >&2; die "$name: sshd did not start (port $port in use?)"; }
  # up = our sshd runs (pid file) and an SSH banner comes from the board's address
  for k in $(seq 50); do
    sshd_pid "$name" >/dev/null &&
      "${nsexec[@]}" timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port && read -r -t 2 l <&3 && [[ \$l == SSH-2.0-* ]]" 2>/dev/null &&
      break
    [ "$k" = 50 ] && { tail -5 "$LOGS/$name.sshd.log" >&2; die "$name: no sshd answering on $host:$port (port taken by another program?)"; }
    sleep 0.1
  done
  local what=", bare: no numpy/ncnn"
  [ "$arch" = armv7 ] && what=", armv7: no python3"
  log "$name up: ssh -i $SSHD_DIR/id_ed25519 -o UserKnownHostsFile=$SSHD_DIR/known_hosts -p $port $BUSER@$host  ($cpu, $(profile_of "$cpu" "$arch")$([ "$bare" = 1 ] && echo "$what"), sshd pid $(cat "$RUN/$name.pid"))"
}

write_boards_file() {   # every board that is up, plus known_hosts for them
  local names=() name f kh tmp host port
  for f in "$BOARDS"/*/spec; do
    [ -e "$f" ] || continue
    name=${f%/spec}; name=${name##*/}
    sshd_pid "$name" >/dev/null && names+=("$(spec_get "$name" num) $name")
  done
  kh=$SSHD_DIR/known_hosts
  mkdir -p "$SSHD_DIR"
  : > "$kh.tmp"
  mkdir -p "$(dirname "$BOARDS_FILE")"
  tmp=$BOARDS_FILE.tmp.$$
  {
    echo "# written by toolchains/emuboard.sh start; boards up at $(date -u +%FT%TZ)"
    echo "schema = 1"
    printf '%s\n' "${names[@]}" | sort -n | while read -r _ name; do
      [ -n "$name" ] || continue
      host=$(spec_get "$name" host) port=$(spec_get "$name" port)
      echo
      if [ "$(spec_get "$name" arch)" = armv7 ]; then echo "# armv7 board (32-bit, qemu-arm): no python3 at all"
      elif [ "$(spec_get "$name" bare)" = 1 ]; then echo "# bare board: python3 without numpy/ncnn"; fi
      echo "[boards.$name]"
      echo "host = \"$host\""
      echo "port = $port"
      echo "user = \"$BUSER\""
      echo "identity_file = \"$SSHD_DIR/id_ed25519\""
      echo "known_hosts = \"$kh\""
      echo "profile = \"$(profile_of "$(spec_get "$name" cpu)" "$(spec_get "$name" arch)")\""
      echo "workdir = \".cache/edgecal\""
      if [ "$port" = 22 ]; then printf '%s ' "$host"; else printf '[%s]:%s ' "$host" "$port"; fi >> "$kh.tmp"
      cut -d' ' -f1,2 "$SSHD_DIR/hostkeys/$name.pub" >> "$kh.tmp"
    done
    # the emulated phones that are up (toolchains/emuphone.sh; adb, not SSH)
    bash "$(dirname "${BASH_SOURCE[0]}")/emuphone.sh" entries || log "WARNING: emuphone.sh entries failed: no phones in the boards file"
  } > "$tmp"
  chmod 644 "$tmp" "$kh.tmp"
  mv "$kh.tmp" "$kh"
  mv "$tmp" "$BOARDS_FILE"
  log "boards file: $BOARDS_FILE (${#names[@]} boards up)"
}

cmd_start() {
  local specs=("$@") s name opts o net cpu bare v arch last t0=$SECONDS
  [ ${#specs[@]} -gt 0 ] || specs=(emu1 emu2)
  for s in "${specs[@]}"; do
    arch=$(spec_arch "$s")
    is_set_up "$arch" || die "not set up for $arch boards; run '$0 setup ${s%%:*}' first"
    if [ "$arch" = armv7 ]; then ensure_binfmt qemu-arm; else ensure_binfmt qemu-aarch64; fi
  done
  for s in "${specs[@]}"; do
    name=${s%%:*}; opts=; [ "$s" = "$name" ] || opts=${s#*:}
    arch=$(spec_arch "$s")
    board_num "$name" "$arch" >/dev/null
    # a board last started with the other arch takes neither its cpu nor bare (start_board
    # discards its files: the lower layer changes)
    last=$name
    [ "$(spec_get "$name" arch)" = "$([ "$arch" = armv7 ] && echo armv7 || true)" ] || last=-none-
    # explicit (option/env) > the board's last spec > default
    net=${ENV_NET:-$(spec_get "$name" net)}; net=${net:-loopback}
    v=EMUBOARD_CPU_$name; v=${v//-/_}
    cpu=${!v:-$(spec_get "$last" cpu)}
    if [ -z "$cpu" ]; then
      if [ "$arch" = armv7 ]; then cpu=$ARMV7_CPU
      elif [ "$name" = emu2 ]; then cpu=cortex-a76; else cpu=${EMUBOARD_CPU:-cortex-a72}; fi
    fi
    bare=${EMUBOARD_BARE:-$(spec_get "$last" bare)}; bare=${bare:-0}
    [ "$bare" = 1 ] || bare=0
    for o in ${opts//,/ }; do
      case "$o" in
        bare) bare=1 ;; full) bare=0 ;; cpu=?*) cpu=${o#cpu=} ;; arch=?*) ;;
        *) die "unknown board option '$o' (bare, full, cpu=MODEL, arch=aarch64|armv7)" ;;
      esac
    done
    if [ "$arch" = armv7 ]; then
      [[ ",$opts," != *,full,* ]] || die "$name: armv7 boards have no python/numpy/ncnn layer ('full' is for aarch64 boards)"
      bare=1    # always: the armhf rootfs has no python3
      case "$cpu" in cortex-a7|cortex-a15|max) ;; *) die "$name: unknown qemu-arm cpu '$cpu' (cortex-a7, cortex-a15, max)" ;; esac
    else
      case "$cpu" in a64fx|cortex-a35|cortex-a53|cortex-a57|cortex-a72|cortex-a76|max|neoverse-n1) ;;
        *) die "$name: unknown qemu cpu '$cpu'" ;; esac
    fi
    start_board "$name" "$net" "$cpu" "$bare" "$arch"
  done
  write_boards_file
  log "start done in $((SECONDS - t0)) s"
}

known_boards() { local f n; for f in "$BOARDS"/*/spec; do [ -e "$f" ] || continue; n=${f%/spec}; echo "${n##*/}"; done; }

cmd_stop() {
  local t0=$SECONDS names
  if [ -n "${1:-}" ]; then
    [ -d "$BOARDS/$1" ] || die "no board '$1' (known: $(known_boards | tr '\n' ' '))"
    names=$1
  else names=$(known_boards); fi
  for n in $names; do stop_board "$n"; done
  log "stopped ${1:-all boards} ($((SECONDS - t0)) s)"
}

need_ns() {
  [ -d "$BOARDS/$1" ] || die "no board '$1'"
  sshd_pid "$1" >/dev/null || die "board $1 is not running"
  ip netns list | grep -qw "ecb-$1" || die "board $1 runs in loopback mode; cuts need BOARDS_NET=netns"
}
cmd_cut() {
  local name=${1:-} n
  [ -n "$name" ] || die "usage: $0 cut NAME [drop|unreach]"
  need_ns "$name"; n=$(spec_get "$name" num)
  case "${2:-drop}" in
    drop) ip -n "ecb-$name" link set eth0 down ;;   # host route stays (linkdown): packets vanish, clients time out
    unreach) ip link set "ecbh$n" down ;;           # host route gone -> unreachable route: EHOSTUNREACH at once
    *) die "usage: $0 cut NAME [drop|unreach]" ;;
  esac
  log "$name cut (${2:-drop})"
}
cmd_restore() {
  local name=${1:-} n
  [ -n "$name" ] || die "usage: $0 restore NAME"
  need_ns "$name"; n=$(spec_get "$name" num)
  ip link set "ecbh$n" up; ip -n "ecb-$name" link set eth0 up
  # a connect during a drop leaves a FAILED neighbour entry: without a flush, new connects
  # would still get EHOSTUNREACH for a few seconds
  ip neigh flush dev "ecbh$n" 2>/dev/null || true
  ip -n "ecb-$name" neigh flush dev eth0 2>/dev/null || true
  local k host; host=$(spec_get "$name" host)
  for k in $(seq 50); do
    timeout 1 bash -c "exec 3<>/dev/tcp/$host/22" 2>/dev/null && break
    [ "$k" = 50 ] && die "$name: not reachable again after restore"
    sleep 0.1
  done
  log "$name restored"
}

cmd_status() {
  local name p link
  is_set_up && echo "setup: done (layer $(basename "$(cat "$STATE/layer.current")"))" || echo "setup: not done"
  is_set_up armv7 && echo "setup armv7: done (armhf rootfs, no python3)" || echo "setup armv7: not done"
  for name in $(known_boards); do
    if p=$(sshd_pid "$name"); then
      link=
      if [ "$(spec_get "$name" net)" = netns ]; then
        link=""
        # admin flags (<...,UP,...>), not the operstate: a peer going down changes that too
        ip -n "ecb-$name" -o link show eth0 2>/dev/null | grep -q '[<,]UP[,>]' || link=" link=CUT(drop)"
        ip -o link show "ecbh$(spec_get "$name" num)" 2>/dev/null | grep -q '[<,]UP[,>]' || link="$link link=CUT(unreach)"
        link=${link:- link=up}
      fi
      echo "$name: up   $(spec_get "$name" host):$(spec_get "$name" port) $(spec_get "$name" net) $(spec_get "$name" cpu) bare=$(spec_get "$name" bare)$([ "$(spec_get "$name" arch)" = armv7 ] && echo " arch=armv7")$link sshd=$p"
    else
      echo "$name: down"
    fi
  done
}

cmd_reset() {
  cmd_stop
  [ -z "$(mounts_under "$BOARDS")" ] || die "still mounted: $(mounts_under "$BOARDS" | tr '\n' ' ')"
  rm -rf "$BOARDS" "$SSHD_DIR/known_hosts"
  rm -f "$BOARDS_FILE" "$STATE/boards.toml"
  log "reset: board files discarded"
}

cmd_purge() {
  [ -d "$STATE" ] && cmd_reset
  [ -z "$(mounts_under "$STATE")" ] || die "still mounted under $STATE"
  rm -rf "$STATE"
  if getent passwd "$BUSER" >/dev/null && [ "$(id -u "$BUSER")" = "$BUID" ]; then userdel "$BUSER"; fi
  if getent group "$BUSER" >/dev/null; then groupdel "$BUSER" 2>/dev/null || true; fi
  ip route del unreachable "$SUBNET.0.0/16" 2>/dev/null || true
  log "purged $STATE, user $BUSER and the $SUBNET.0.0/16 route (apt packages and binfmt stay)"
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case "$cmd" in
  setup) cmd_setup "$@" ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "${1:-}" ;;
  cut) cmd_cut "${1:-}" "${2:-drop}" ;;
  restore) cmd_restore "${1:-}" ;;
  status) cmd_status ;;
  boards-file) write_boards_file ;;
  reset) cmd_reset ;;
  purge) cmd_purge ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
