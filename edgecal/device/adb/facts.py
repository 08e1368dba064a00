"""A phone's facts from one ``adb shell``: ``getprop``, ``/proc``, ``/sys``, ``dumpsys``.

:func:`phone_probe_script` is the script (POSIX ``sh``, toybox commands); it prints the shell
probe's sections (``board_snippets/probe.sh``: machine, cores, cpuinfo, meminfo, df, workdir)
and the phone's own: properties, one line per core (capacity, max and capped frequency), the
display's power state and the thermal zones.  :func:`parse_phone_probe` reads them (pure).

Cores are grouped into clusters by ``cpu_capacity`` (the scheduler's relative speed; absent on
old kernels) or else ``cpuinfo_max_freq``; the fastest cluster is ``big``.  A core's type comes
from its ``CPU part`` in ``/proc/cpuinfo`` (:data:`ARM_PARTS`).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecal.device.probe import SHELL_PROBE_MAGIC, BoardFacts, parse_shell_probe
from edgecal.device.snippets import board_snippet

PROPS = (
    "ro.product.manufacturer",
    "ro.product.model",
    "ro.product.device",
    "ro.build.version.release",
    "ro.build.version.sdk",
    "ro.product.cpu.abi",
    "ro.product.cpu.abilist",
    "ro.soc.model",
    "ro.board.platform",
)

#: ARM's ``CPU part`` numbers (implementer 0x41) of phone cores.
ARM_PARTS = {
    0xD03: "cortex-a53",
    0xD04: "cortex-a35",
    0xD05: "cortex-a55",
    0xD07: "cortex-a57",
    0xD08: "cortex-a72",
    0xD09: "cortex-a73",
    0xD0A: "cortex-a75",
    0xD0B: "cortex-a76",
    0xD0D: "cortex-a77",
    0xD41: "cortex-a78",
    0xD44: "cortex-x1",
    0xD46: "cortex-a510",
    0xD47: "cortex-a710",
    0xD48: "cortex-x2",
    0xD4D: "cortex-a715",
    0xD4E: "cortex-x3",
    0xD80: "cortex-a520",
    0xD81: "cortex-a720",
    0xD82: "cortex-x4",
}

#: A thermal zone hotter than this (milli-degrees C) counts as throttling the CPU.
HOT_MILLI_C = 75_000


def phone_probe_script(workdir: str) -> str:
    """The probe: the shell probe (``probe.sh`` with ``$1`` = workdir) plus the phone's
    sections.  Every value read is printed raw; nothing of the phone is trusted as code."""
    import shlex

    props = " ".join(PROPS)
    return (
        f"set -- {shlex.quote(workdir)}\n"
        + board_snippet("probe.sh")
        + "\necho '== props'\n"
        + f'for p in {props}; do echo "$p=$(getprop $p 2>/dev/null)"; done\n'
        + "echo '== percpu'\n"
        + "for d in /sys/devices/system/cpu/cpu[0-9]*; do\n"
        + '  [ -d "$d" ] || continue\n'
        + "  c=$(cat $d/cpu_capacity 2>/dev/null); m=$(cat $d/cpufreq/cpuinfo_max_freq "
        + "2>/dev/null)\n"
        + "  s=$(cat $d/cpufreq/scaling_max_freq 2>/dev/null); o=$(cat $d/online 2>/dev/null)\n"
        + '  echo "${d##*/} cap=$c max=$m smax=$s online=$o"\n'
        + "done\n"
        + "echo '== power'\n"
        + "dumpsys power 2>/dev/null | grep -E 'mWakefulness=|Display Power: state=' "
        + "| head -n 4\n"
        + "echo '== thermal'\n"
        + "for z in /sys/class/thermal/thermal_zone*; do\n"
        + '  [ -d "$z" ] || continue\n'
        + '  echo "zone $(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"\n'
        + "done\n"
        + "for z in /sys/class/thermal/cooling_device*; do\n"
        + '  [ -d "$z" ] || continue\n'
        + '  echo "cool $(cat $z/type 2>/dev/null) $(cat $z/cur_state 2>/dev/null) '
        + '$(cat $z/max_state 2>/dev/null)"\n'
        + "done\n"
        + "echo '== taskset'; command -v taskset 2>/dev/null\n"
        + "echo '== done'\n"
    )


@dataclass(frozen=True)
class Core:
    cpu: int
    capacity: int | None = None
    max_khz: int | None = None
    capped_khz: int | None = None  # scaling_max_freq below max_khz: a cap (thermal, power)
    online: bool = True
    part: str | None = None  # cortex-a76, ...


@dataclass(frozen=True)
class Cluster:
    kind: str  # big, mid, little (or "all" when the cores are alike)
    cpus: tuple[int, ...]
    part: str | None
    max_khz: int | None


@dataclass
class PhoneFacts:
    """What one probe of a phone found (missing items are None/empty: not readable there)."""

    machine: str = ""
    props: dict[str, str] = field(default_factory=dict)
    cores: list[Core] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    screen: str | None = None  # on, off, dozing, or None (dumpsys not readable)
    hot_zones: list[tuple[str, int]] = field(default_factory=list)
    cooling: list[tuple[str, int, int]] = field(default_factory=list)  # active cooling devices
    shell: BoardFacts = field(default_factory=BoardFacts)
    taskset: bool = False  # the phone's shell has taskset (to pin the agent to a cluster)

    @property
    def model(self) -> str:
        maker = self.props.get("ro.product.manufacturer", "")
        model = self.props.get("ro.product.model", "")
        return " ".join(x for x in (maker, model) if x)

    @property
    def android(self) -> str:
        rel = self.props.get("ro.build.version.release", "")
        sdk = self.props.get("ro.build.version.sdk", "")
        return f"{rel} (API {sdk})" if rel and sdk else rel or (f"API {sdk}" if sdk else "")

    @property
    def abi(self) -> str:
        return self.props.get("ro.product.cpu.abi", "")

    @property
    def big_cpus(self) -> tuple[int, ...]:
        """The fastest cluster's cores (all cores when they are alike)."""
        return self.clusters[0].cpus if self.clusters else ()

    @property
    def throttled(self) -> list[str]:
        """Why the CPU looks throttled, in words (empty: it does not, or cannot be read)."""
        out = [f"{name} at {t / 1000:.0f} C" for name, t in self.hot_zones]
        out += [f"cooling device {name} at state {cur}/{top}" for name, cur, top in self.cooling]
        capped = [c for c in self.cores if c.capped_khz and c.max_khz and c.capped_khz < c.max_khz]
        if capped:
            out.append(
                "cpu "
                + ", ".join(f"{c.cpu} capped at {(c.capped_khz or 0) // 1000} MHz" for c in capped)
            )
        return out

    def board_facts(self) -> BoardFacts:
        """The shell probe's :class:`BoardFacts` with the phone's facts added."""
        facts = dict(self.shell.facts)
        facts.update(
            phone=True,
            model=self.model or None,
            android=self.android or None,
            abi=self.abi or None,
            abilist=self.props.get("ro.product.cpu.abilist") or None,
            soc=self.props.get("ro.soc.model") or self.props.get("ro.board.platform") or None,
            clusters=[asdict(c) for c in self.clusters],
            screen=self.screen,
            throttled=self.throttled,
        )
        if facts.get("cpu_model") is None and self.clusters:
            facts["cpu_model"] = " + ".join(
                f"{len(c.cpus)}x {c.part or '?'}" for c in self.clusters
            )
        return BoardFacts(python=None, python_error=self.shell.python_error, facts=facts)

    def to_dict(self) -> dict[str, Any]:
        return self.board_facts().facts


def _int(text: str | None) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(str(text).strip())
    return None


def _sections(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.replace("\r\n", "\n").splitlines():
        if line.startswith("== "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return out


def parse_props(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        k, sep, v = line.partition("=")
        if sep and v.strip():
            out[k.strip()] = v.strip()
    return out


def cpu_parts(cpuinfo: list[str]) -> dict[int, str]:
    """``cpu -> core type`` from ``/proc/cpuinfo``'s ``processor`` / ``CPU part`` lines."""
    out: dict[int, str] = {}
    cpu: int | None = None
    for line in cpuinfo:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "processor":
            cpu = _int(v)
        elif k == "cpu part" and cpu is not None:
            with contextlib.suppress(ValueError):
                part = int(v.strip(), 16)
                out[cpu] = ARM_PARTS.get(part, f"arm part {v.strip()}")
    return out


def parse_cores(percpu: list[str], parts: dict[int, str]) -> list[Core]:
    cores = []
    for line in percpu:
        words = line.split()
        if not words or not words[0].startswith("cpu"):
            continue
        cpu = _int(words[0][3:])
        if cpu is None:
            continue
        kv = dict(w.partition("=")[::2] for w in words[1:])
        cores.append(
            Core(
                cpu=cpu,
                capacity=_int(kv.get("cap")),
                max_khz=_int(kv.get("max")),
                capped_khz=_int(kv.get("smax")),
                online=kv.get("online", "") != "0",
                part=parts.get(cpu),
            )
        )
    return sorted(cores, key=lambda c: c.cpu)


def clusters(cores: list[Core]) -> list[Cluster]:
    """The cores grouped by capacity and max frequency, fastest first:
    ``big`` (fastest), ``mid``, ``little`` (slowest); one ``all`` cluster when alike."""

    def speed(c: Core) -> tuple[int, int]:
        return (c.capacity or 0, c.max_khz or 0)

    groups: dict[tuple[int, int], list[Core]] = {}
    for c in cores:
        groups.setdefault(speed(c), []).append(c)
    ordered = sorted(groups.items(), key=lambda kv: kv[0], reverse=True)
    n = len(ordered)
    kinds = ["all"] if n <= 1 else ["big"] + ["mid"] * (n - 2) + ["little"]
    return [
        Cluster(
            kind,
            tuple(c.cpu for c in cs),
            next((c.part for c in cs if c.part), None),
            cs[0].max_khz,
        )
        for kind, (_, cs) in zip(kinds, ordered, strict=True)
    ]


def parse_power(lines: list[str]) -> str | None:
    """``on``, ``off`` or ``dozing`` from ``dumpsys power`` (None: not readable)."""
    for line in lines:
        if "Display Power: state=" in line:
            state = line.split("state=", 1)[1].strip().upper()
            return {"ON": "on", "OFF": "off", "DOZE": "dozing"}.get(state, state.lower())
    for line in lines:
        if "mWakefulness=" in line:
            state = line.split("mWakefulness=", 1)[1].strip().split()[0]
            return {"Awake": "on", "Asleep": "off", "Dozing": "dozing"}.get(state, state.lower())
    return None


def parse_thermal(lines: list[str]) -> tuple[list[tuple[str, int]], list[tuple[str, int, int]]]:
    """Zones hotter than :data:`HOT_MILLI_C` and CPU cooling devices in use."""
    hot, cooling = [], []
    for line in lines:
        words = line.split()
        if len(words) == 3 and words[0] == "zone":
            t = _int(words[2])
            if t is not None and t >= HOT_MILLI_C:
                hot.append((words[1], t))
        elif len(words) == 4 and words[0] == "cool":
            cur, top = _int(words[2]), _int(words[3])
            if cur and top and "cpu" in words[1].lower():
                cooling.append((words[1], cur, top))
    return hot, cooling


def parse_phone_probe(stdout: str, exit_code: int = 0, stderr: str = "") -> PhoneFacts:
    """The phone probe's output (pure)."""
    text = stdout.replace("\r\n", "\n")
    shell = parse_shell_probe(exit_code, text, stderr)
    if SHELL_PROBE_MAGIC not in text.splitlines():
        return PhoneFacts(shell=shell)
    s = _sections(text)
    cores = parse_cores(s.get("percpu", []), cpu_parts(s.get("cpuinfo", [])))
    hot, cooling = parse_thermal(s.get("thermal", []))
    return PhoneFacts(
        machine=str(shell.get("machine") or ""),
        props=parse_props(s.get("props", [])),
        cores=cores,
        clusters=clusters(cores),
        screen=parse_power(s.get("power", [])),
        hot_zones=hot,
        cooling=cooling,
        shell=shell,
        taskset=any(line.strip() for line in s.get("taskset", [])),
    )


def pinned_cpus(facts: PhoneFacts, affinity: str) -> tuple[int, ...]:
    """The cores an agent with ``affinity`` (all, big, little) runs on: the fastest or the
    slowest cluster; empty (every core) for ``all`` or when the cores are alike."""
    if affinity == "all" or len(facts.clusters) < 2:
        return ()
    return facts.clusters[0 if affinity == "big" else -1].cpus


def taskset_mask(cpus: tuple[int, ...]) -> str:
    """``taskset``'s hexadecimal CPU mask of ``cpus``."""
    return f"{sum(1 << c for c in set(cpus)):x}"
