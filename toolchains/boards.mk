# Emulated aarch64 + armv7 boards for tests (qemu-user + real SSH): see toolchains/EMUBOARD.md.
# Included by the main Makefile. Everything here needs root (sudo make boards-up).
#
#   make boards-setup                      host packages, rootfs(es), wheels, keys for $(BOARDS) (idempotent)
#   make boards-up                         emu1 (Pi 4-like) + emu2 (Pi 5-like) on 127.0.0.1:2222/2223
#   BOARDS_NET=netns make boards-up        the same, each in its own network namespace (10.200.N.2:22)
#   make boards-up BOARDS="emu1 emu2 emu3:bare"   also a board without numpy/ncnn
#   make boards-up BOARDS="emu1 emuv7"     also the 32-bit armv7 board (qemu-arm, no python3)
#   make board-cut B=emu1 [CUT=unreach]    netns mode: unplug a board; make board-restore B=emu1
#   make boards-down                       power off all boards (their files stay)
#
# The numpy/ncnn pins come from the project's venv when it exists (make venv first), else
# from toolchains/emuboard.sh's defaults.

EMUBOARD ?= bash toolchains/emuboard.sh
EMUPHONE ?= bash toolchains/emuphone.sh
BOARDS ?= emu1 emu2
# phoneN entries of BOARDS are emulated phones (emuphone.sh), the others boards (emuboard.sh)
PHONES_UP = $(filter phone%,$(BOARDS))
BOARDS_UP = $(filter-out phone%,$(BOARDS))
P ?=
BOARDS_NET ?= loopback
BOARDS_OUT ?= out/boards.toml
CUT ?= drop
B ?=
EMUBOARD_HOST_PYTHON ?= $(if $(wildcard $(or $(VENV),.venv)/bin/python),$(abspath $(or $(VENV),.venv)/bin/python))
EMUBOARD_ENV = $(if $(EMUBOARD_HOST_PYTHON),EMUBOARD_HOST_PYTHON=$(EMUBOARD_HOST_PYTHON))

.PHONY: boards-setup boards-up boards-down boards-status board-cut board-restore phone-cut \
	phone-restore phone-reboot

boards-setup:
	$(if $(BOARDS_UP),$(EMUBOARD_ENV) $(EMUBOARD) setup $(BOARDS_UP))
	$(if $(PHONES_UP),$(EMUPHONE) setup)

boards-up: boards-setup
	$(if $(BOARDS_UP),EMUBOARD_NET=$(BOARDS_NET) $(EMUBOARD) start $(BOARDS_UP))
	$(if $(PHONES_UP),$(EMUPHONE) start $(PHONES_UP))
	mkdir -p $(dir $(BOARDS_OUT))
	cp $${EDGECAL_BOARDS_FILE:-/srv/edgecal-boards/boards.toml} $(BOARDS_OUT)
	@echo "EDGECAL_BOARDS=$(abspath $(BOARDS_OUT))"

boards-down:
	$(EMUBOARD) stop
	$(EMUPHONE) stop

boards-status:
	$(EMUBOARD) status
	$(EMUPHONE) status

board-cut:
	@test -n "$(B)" || { echo "usage: make board-cut B=emu1 [CUT=drop|unreach]" >&2; exit 2; }
	$(EMUBOARD) cut $(B) $(CUT)

board-restore:
	@test -n "$(B)" || { echo "usage: make board-restore B=emu1" >&2; exit 2; }
	$(EMUBOARD) restore $(B)

phone-cut:
	@test -n "$(P)" || { echo "usage: make phone-cut P=phone1 [CUT=drop|hold]" >&2; exit 2; }
	$(EMUPHONE) cut $(P) $(if $(filter hold,$(CUT)),hold,drop)

phone-restore:
	@test -n "$(P)" || { echo "usage: make phone-restore P=phone1" >&2; exit 2; }
	$(EMUPHONE) restore $(P)

phone-reboot:
	@test -n "$(P)" || { echo "usage: make phone-reboot P=phone1" >&2; exit 2; }
	$(EMUPHONE) reboot $(P) $(or $(DOWN),0)

# the phone tests need the real adb client: Debian's `adb`, installed by `make test-deps` as root
# (an extra prerequisite of the Makefile's test-deps)
test-deps: test-deps-adb
.PHONY: test-deps-adb
test-deps-adb:
	@if command -v adb >/dev/null 2>&1; then adb version | head -1; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends adb \
	    >/dev/null && adb version | head -1; \
	else echo "test-deps: no adb and not root: the phone tests will be skipped"; fi
