"""Real faults during a fleet calibration on emulated boards in network namespaces.

The boards (``BOARDS_NET=netns make boards-up BOARDS="emu1 emu2 emu3:bare emu4"``, root): the
fleet is ``emu1`` + ``emu4`` (the same profile, so the same activations), the reference table is
an uncut run on ``emu1`` alone.  Model: the reference digits model with 40 images, so a
two-board run has 7 shards per pass (5, 9, 7, 5, 5, 5, 4 samples) and a one-board run 3 (10,
20, 10).  Each fault comes at a random moment of the capture: once a random number of shard
results is in (0-4 of the 14 of a two-board run, 0-2 of 6 alone) and a capture job of this
process runs on the board (with two boards: a first-pass job, so the board always has work
left to notice the fault with), after a random delay (0-0.8 s), and then as soon as a capture job
of either pass runs there again (so the fault meets work even when the delay outlasted the job
seen; a job counts as running when two polls 30 ms apart see its request without a response:
a finished job's folder, removed file by file, shows that for an instant):

* a. ``emu1``'s link cut in the two-board run (``drop``: packets vanish, or ``unreach``: the
  host route goes; at random), restored 12-16 s later (longer than the keepalive watchdog needs
  to notice it; ``--retries 6``: the tries span ~20 s even when connects fail at once) -> the
  run finishes, the table is identical, ``emu1`` retried, every sample counted once per pass;
* b. ``emu1``'s link cut for good -> ``emu1`` is given up, ``emu4`` takes its shard over;
* c. ``emu4`` powered off (``emuboard.sh stop``) -> the same; ``emu4`` is started again after;
* d. ``emu1``'s agent killed (SIGKILL) mid-job -> retried;
* e. ``emu4``'s work directory (a 4 MiB tmpfs mounted inside its root, in its sshd's mount
  namespace: nothing is written to the host's disk) filled up: with ``emu1``
  the run finishes without ``emu4``; alone it stops with one error line naming the board and
  ``--resume RUN``; freed and resumed, the table is identical and no finished shard is redone;
* f. the single board's link cut for good -> stops resumable; restored and resumed, identical.

The moments come from ``EDGECAL_FAULT_SEED`` (random when unset) and are printed with every
case, so a failure can be replayed.  ``make soak`` (``EDGECAL_SOAK=1``) runs every case
``EDGECAL_SOAK_ROUNDS`` times (default 8) at other moments.  Boards: ``EDGECAL_FAULT_FLEET``
(default ``emu1,emu4``), ``EDGECAL_FAULT_LINK`` (cut / agent kill, default the first) and
``EDGECAL_FAULT_POWER`` (power off / full disk, default the second).  Connect timeouts are 3 s
(a boards file copy) so a cut is noticed within ~6-11 s.  No timing is asserted.

Measured with 40 images on an AMD EPYC host (2 cores, qemu-user): the uncut two-board run
~15-20 s; per case a 26-35 s, b 16-23 s, c 12-27 s, d 10-17 s, e 28-66 s (three runs), f 14-28 s
(two runs).  On an idle Intel Xeon (AVX-512) host a 40-image run took 2.5 s and some moments
came after the work, so the cases run 120 samples per pass: there a 21.6 s, b 19.0 s, c 9.9 s,
d 5.1 s, e 15.5 + 4.8 + 3.3 s, f 12.1 + 2.9 s; the module 100 s.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgecal.boards.config import load_boards
from tests.boards.test_board_calibrate import REF, cli, need, report, unavailable

pytestmark = pytest.mark.board
ROOT = Path(__file__).resolve().parents[2]
EMUBOARD = ROOT / "toolchains" / "emuboard.sh"
#: samples per pass: the reference digits' 40 images three times over, so that a run lasts long
#: enough (a two-board run of 40 took 2.5 s on an idle AVX-512 Xeon host) for every moment to
#: meet running jobs
N_IMAGES = 120
FLEET = tuple(os.environ.get("EDGECAL_FAULT_FLEET", "emu1,emu4").split(","))
LINK = os.environ.get("EDGECAL_FAULT_LINK", FLEET[0])  # link cuts, agent kill
POWER = os.environ.get("EDGECAL_FAULT_POWER", FLEET[-1])  # power off, full disk
SOAK = os.environ.get("EDGECAL_SOAK", "") == "1"
ROUNDS = int(os.environ.get("EDGECAL_SOAK_ROUNDS", "8")) if SOAK else 1
SEED = int(os.environ.get("EDGECAL_FAULT_SEED") or random.SystemRandom().randrange(1_000_000))
CONNECT_TIMEOUT_S = 3
FULL_DIR = "ecfull"  # the tmpfs, in the board's home
PASSES = ("absmax", "histogram")
CUTS = ("drop", "unreach")  # packets vanish / the host route goes (EHOSTUNREACH)
FIRST = ("absmax",)  # two boards: the fault comes in the first pass (see the module doc)


def partner(board: str) -> str:
    return next(b for b in FLEET if b != board)


# ----------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    boards: Path  # a copy of the boards file with short connect timeouts
    state: Path  # toolchains/emuboard.sh's state directory
    images: Path
    reference: bytes  # the table of the uncut run on FLEET[0] alone
    tmp: Path

    def board_root(self, name: str) -> Path:
        return self.state / "boards" / name / "root"

    def workdir(self, name: str) -> Path:
        """The board's work directory, seen from the host."""
        wd = load_boards(self.boards)[name].workdir
        return self.board_root(name) / "home" / "pi" / wd.removeprefix("~/")

    def emuboard(self, *args: str, **env: str) -> None:
        r = subprocess.run(
            ["bash", str(EMUBOARD), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=dict(os.environ, EMUBOARD_STATE=str(self.state), **env),
        )
        assert r.returncode == 0, f"emuboard.sh {' '.join(args)}: {r.stderr}"


def fast_boards(text: str) -> str:
    """Every board with ``connect_timeout_s = 3``."""
    return re.sub(
        r"^(\[boards\.[^\]]+\]\n)",
        rf"\1connect_timeout_s = {CONNECT_TIMEOUT_S}\n",
        text,
        flags=re.M,
    )


def calibrate_args(rig: Rig, out: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "-q",
        "calibrate",
        str(REF / "model.param"),
        str(REF / "model.bin"),
        "--images",
        str(rig.images),
        "--pixel",
        "GRAY",
        "--mean",
        "0",
        "--norm",
        "0.00392157",
        "--shape",
        "32,32",
        "--out",
        str(out),
        "--run-dir",
        str(run_dir),
        "--json",
        *extra,
    ]


def devices(*names: str, boards: Path) -> list[str]:
    out = ["--boards", str(boards)]
    for n in names:
        out += ["--device", n]
    return out


@pytest.fixture(scope="module")
def rig(boards_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Rig:
    need(boards_file, *FLEET)
    known = load_boards(boards_file)
    if os.geteuid() != 0 or not all(known[b].host.startswith("10.200.") for b in FLEET):
        unavailable("fault tests need root and the boards in netns mode (BOARDS_NET=netns)")
    tmp = tmp_path_factory.mktemp("faults")
    fast = tmp / "boards.toml"
    fast.write_text(fast_boards(boards_file.read_text()))
    images = tmp / "images.txt"
    images.write_text("".join(f"{REF}/images/calib_{i % 40:02d}.png\n" for i in range(N_IMAGES)))
    state = Path(str(known[FLEET[0]].identity_file)).parent.parent
    rig = Rig(fast, state, images, b"", tmp)
    from edgecal.cli.main import main

    out = tmp / "reference.table"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(
            calibrate_args(rig, out, tmp / "reference-run", *devices(FLEET[0], boards=fast))
        )
    assert code == 0, err.getvalue()
    rig.reference = out.read_bytes()
    return rig


# ----------------------------------------------------------------------------- moments


def parts_done(run_dir: Path) -> int:
    return sum(len(list((run_dir / "parts" / p).glob("*.npz"))) for p in PASSES)


def job_dirs(jobs: Path) -> set[str]:
    return {p.name for p in jobs.glob("*")} if jobs.is_dir() else set()


def job_in_flight(
    jobs: Path,
    pid: int | None = None,
    old: set[str] | frozenset[str] = frozenset(),
    ops: tuple[str, ...] = PASSES,
) -> bool:
    """A capture job (one of ``ops``) of process ``pid`` (default: this one; 0: any) on the
    board, not among ``old`` (jobs that earlier runs left behind): request written, no
    response yet."""
    pid = os.getpid() if pid is None else pid
    for req in jobs.glob(f"*-{pid}-*/request.json" if pid else "*/request.json"):
        if req.parent.name in old or (req.parent / "response.json").exists():
            continue
        with contextlib.suppress(OSError, ValueError):
            if json.loads(req.read_text()).get("op") in ops:
                return True
    return False


class Moment(threading.Thread):
    """Once ``parts`` shard results are in ``run_dir`` and a capture job (of ``ops``) runs on
    the board (``jobs``: its jobs folder seen from the host), wait ``delay`` s more and call
    ``action`` (``again``: wait for a capture job of either pass in flight once more after the
    delay, so a cut or a kill meets a running job even when the delay outlasted the one seen).
    Never fires after :meth:`cancel`; an exception of ``action`` is kept for :meth:`check`."""

    def __init__(
        self,
        run_dir: Path,
        jobs: Path,
        parts: int,
        delay: float,
        action: Callable[[], None],
        again: bool = False,
        pid: int | None = None,
        ops: tuple[str, ...] = PASSES,
    ) -> None:
        super().__init__(daemon=True, name="fault-moment")
        self.run_dir, self.jobs, self.parts, self.delay = run_dir, jobs, parts, delay
        self.action, self.again, self.pid, self.ops = action, again, pid, ops
        self.old: set[str] = set()
        self.cancelled = threading.Event()
        self.fired_at: float | None = None
        self.error: BaseException | None = None

    def _wait(self, ready: Callable[[], bool]) -> bool:
        """Until ``ready()`` holds on two polls in a row (30 ms apart): a finished job's folder
        is removed file by file, so for a moment it shows a request without a response."""
        seen = False
        while not self.cancelled.is_set():
            now = ready()
            if now and seen:
                return True
            seen = now
            time.sleep(0.03)
        return False

    def start(self) -> None:
        self.old = job_dirs(self.jobs)  # before the run: not its jobs
        super().start()

    def run(self) -> None:
        try:
            if not self._wait(
                lambda: (
                    parts_done(self.run_dir) >= self.parts
                    and job_in_flight(self.jobs, self.pid, self.old, self.ops)
                )
            ):
                return
            if self.cancelled.wait(self.delay):
                return
            if self.again and not self._wait(lambda: job_in_flight(self.jobs, self.pid, self.old)):
                return
            self.fired_at = time.monotonic()
            self.action()
        except BaseException as e:
            self.error = e

    def cancel(self) -> None:
        self.cancelled.set()
        self.join(timeout=120)

    def check(self) -> None:
        if self.error is not None:
            raise self.error
        assert self.fired_at is not None, "the fault never happened (the run ended first)"


@contextlib.contextmanager
def at_moment(moment: Moment) -> Iterator[Moment]:
    moment.start()
    try:
        yield moment
    finally:
        moment.cancel()


def run_cli(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[int, dict[str, Any] | None, str, float]:
    t0 = time.monotonic()
    code, out, err = cli(capsys, *argv)
    return code, (json.loads(out) if code == 0 else None), err, time.monotonic() - t0


def accounts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["board"]: a for a in summary["fleet"]}


def brief(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    return "; ".join(
        f"{a['board']}: {a['shards']} shards/{a['samples']} samples, retried "
        f"{a['retried']}, taken over {a['reassigned']}, collected {a['collected']}"
        + (f", LOST ({a['lost']})" if a["lost"] else "")
        for a in summary["fleet"]
    )


def part_jobs(run_dir: Path) -> dict[tuple[str, str], str]:
    """(pass, shard file) -> the job id that answered it."""
    import numpy as np

    out = {}
    for p in PASSES:
        for f in sorted((run_dir / "parts" / p).glob("*.npz")):
            with np.load(f, allow_pickle=False) as z:
                out[(p, f.name)] = json.loads(str(z["meta"]))["job_id"]
    return out


def done_samples(run_dir: Path) -> int:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = {s["index"]: s["count"] for s in manifest["shards"]}
    return sum(counts[int(f.stem)] for p in PASSES for f in (run_dir / "parts" / p).glob("*.npz"))


def moment_params(
    case: str, round_: int, parts: tuple[int, int], delay: float
) -> tuple[random.Random, int, float, str]:
    rng = random.Random(f"{SEED}:{case}:{round_}")
    k, d = rng.randint(*parts), rng.uniform(0.0, delay)
    return (
        rng,
        k,
        d,
        (
            f"seed {SEED} round {round_} (replay: EDGECAL_FAULT_SEED={SEED}): "
            f"after {k} shard results + {d:.2f} s"
        ),
    )


def assert_finished(
    rig: Rig, code: int, summary: dict[str, Any] | None, err: str, out: Path, what: str
) -> dict[str, dict[str, Any]]:
    assert code == 0, f"{what}: {err}"
    assert summary is not None
    assert out.read_bytes() == rig.reference, f"{what}: the table differs from the uncut run's"
    acc = accounts(summary)
    assert sum(a["samples"] for a in acc.values()) == 2 * N_IMAGES, why(what, acc, err)
    return acc


def why(what: str, acc: dict[str, dict[str, Any]], err: str) -> str:
    """A failed check's whole story (a string: pytest shortens an object's repr): the moment,
    every board's account and what the run said on stderr."""
    return f"{what}\naccounts: {json.dumps(acc, indent=1)}\nstderr:\n{err}"


def one_error_line(err: str, board: str, run_dir: Path) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("edgecal: error:")]
    assert len(lines) == 1, err
    assert board in lines[0] and f"--resume {run_dir}" in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- faults


def agent_pids(root: Path) -> list[int]:
    """The edgecal agents running on a board (host pids: chrooted in ``root``)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(p / "root") != str(root):
                continue
            argv = (p / "cmdline").read_bytes().split(b"\0")
            if (
                any(a.endswith(b".pyz") for a in argv)
                and b"serve" in argv
                and b"edgecal-wrap" not in argv
                and any(a.endswith(b"python3") for a in argv)
            ):
                pids.append(int(p.name))
    return pids


def fill_up(folder: Path) -> int:
    """Write zeros into ``folder`` (a small tmpfs) until it is full; the bytes written."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    total = 0
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            chunk = bytes(size)
            while True:
                try:
                    total += os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return total


class KeepFull:
    """Fill ``folder`` at the moment (``start``) and keep it full until ``release``: space the
    host frees later (it removes a job's folder once it has the answer) is taken again within
    20 ms, so the board's remaining jobs meet a full disk whatever the timing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.bytes = fill_up(self.folder)
        self._thread = threading.Thread(target=self._refill, daemon=True)
        self._thread.start()

    def _refill(self) -> None:
        while not self._stop.wait(0.02):
            self.bytes += fill_up(self.folder)

    def release(self) -> None:
        """Stop refilling and free the space."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        (self.folder / "filler").unlink(missing_ok=True)


@contextlib.contextmanager
def small_workdir(rig: Rig, board: str, options: str = "size=4m") -> Iterator[tuple[Path, Path]]:
    """``board``'s work directory on a 4 MiB tmpfs (mount ``options``: ``ro,size=1m`` for a
    read-only one) inside its root: a boards file copy that points there, and the tmpfs as
    the host sees it.  Unmounted afterwards.

    The board's sshd runs in its own mount namespace (``ip netns exec`` makes one), so the
    tmpfs is mounted there (``nsenter``) and reached through ``/proc/<sshd>/root``."""
    sshd = int((rig.state / "run" / f"{board}.pid").read_text())
    mnt = rig.board_root(board) / "home" / "pi" / FULL_DIR
    mnt.mkdir(exist_ok=True)
    ns = ["nsenter", f"--mount=/proc/{sshd}/ns/mnt", "--"]
    subprocess.run(
        [
            *ns,
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"{options},mode=0755,uid=4242,gid=4242",
            "edgecal-test-full",
            str(mnt),
        ],
        check=True,
        timeout=30,
    )
    boards = rig.tmp / f"boards-{board}-small.toml"
    boards.write_text(
        re.sub(
            rf'(\[boards\.{board}\]\n(?:[^\[]*?\n)?)workdir = "[^"]*"',
            rf'\1workdir = "{FULL_DIR}/wd"',
            rig.boards.read_text(),
        )
    )
    assert load_boards(boards)[board].workdir == f"{FULL_DIR}/wd"
    try:
        yield boards, Path(f"/proc/{sshd}/root{mnt}")
    finally:
        for pid in agent_pids(rig.board_root(board)):
            with contextlib.suppress(OSError):
                if FULL_DIR.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, 9)
        for _ in range(20):
            if (
                subprocess.run(
                    [*ns, "umount", str(mnt)], capture_output=True, check=False
                ).returncode
                == 0
            ):
                break
            time.sleep(0.3)
        else:
            subprocess.run([*ns, "umount", "-l", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def frozen_on_a_job(rig: Rig, board: str, jobs: Path, m: Moment) -> list[int] | None:
    """``board``'s agents stopped (SIGSTOP) while a capture job of this run has a request and
    no response (a response is written atomically: a frozen job is either answered or not); a
    job seen running may have finished since, so until then thaw them and look again.  The
    pids (stopped: the caller kills or thaws them); None once the moment is cancelled."""
    while not m.cancelled.is_set():
        pids = agent_pids(rig.board_root(board))
        _signal_all(pids, signal.SIGSTOP)
        if pids and job_in_flight(jobs, old=m.old):
            return pids
        _signal_all(pids, signal.SIGCONT)
        time.sleep(0.01)
    return None


# ----------------------------------------------------------------------------- cases

ROUND = pytest.mark.parametrize("round_", range(ROUNDS))


@ROUND
def test_link_cut_and_restored_two_boards(
    rig: Rig, tmp_path: Path, round_: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """a. A cut link that comes back: retried on the same board, nothing lost."""
    rng, k, d, when = moment_params("cut-restore", round_, (0, 4), 0.8)
    down, how = rng.uniform(12.0, 16.0), rng.choice(CUTS)

    def cut_for_a_while() -> None:
        """Cut while a capture job is unanswered (:func:`frozen_on_a_job`: CI once cut the
        link just after the board's last job had answered, and nothing was left to retry)."""
        pids = frozen_on_a_job(rig, LINK, jobs, m)
        if pids is None:
            return
        try:
            rig.emuboard("cut", LINK, how)
        finally:
            _signal_all(pids, signal.SIGCONT)
        time.sleep(down)
        rig.emuboard("restore", LINK)

    out, run_dir = tmp_path / "t.table", tmp_path / "run"
    jobs = rig.workdir(LINK) / "jobs"
    try:
        with at_moment(Moment(run_dir, jobs, k, d, cut_for_a_while, again=True, ops=FIRST)) as m:
            code, summary, err, took = run_cli(
                capsys,
                calibrate_args(
                    rig, out, run_dir, *devices(*FLEET, boards=rig.boards), "--retries", "6"
                ),
            )
        m.check()
    finally:
        rig.emuboard("restore", LINK)
    report(
        capsys,
        f"[faults a] {LINK} link cut ({how}) {when} for {down:.1f} s: exit {code} in "
        f"{took:.1f} s; {brief(summary)}",
    )
    acc = assert_finished(rig, code, summary, err, out, when)
    assert acc[LINK]["retried"] >= 1 and acc[LINK]["lost"] is None, why(when, acc, err)


@ROUND
def test_link_cut_for_good_two_boards(
    rig: Rig, tmp_path: Path, round_: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """b. A link that stays cut: the board is given up, its shard goes to the other."""
    rng, k, d, when = moment_params("cut", round_, (0, 4), 0.8)
    how = rng.choice(CUTS)
    out, run_dir = tmp_path / "t.table", tmp_path / "run"
    jobs = rig.workdir(LINK) / "jobs"

    def cut_for_good() -> None:
        """Hold the board on the job seen running (:func:`frozen_on_a_job`), cut ``d`` s
        later: CI once saw the delay outlast the board's last job, and no fault happened."""
        pids = frozen_on_a_job(rig, LINK, jobs, m)
        if pids is None:
            return
        try:
            time.sleep(d)
            rig.emuboard("cut", LINK, how)
        finally:
            _signal_all(pids, signal.SIGCONT)

    try:
        with at_moment(Moment(run_dir, jobs, k, 0.0, cut_for_good, ops=FIRST)) as m:
            code, summary, err, took = run_cli(
                capsys,
                calibrate_args(
                    rig, out, run_dir, *devices(*FLEET, boards=rig.boards), "--retries", "3"
                ),
            )
        m.check()
    finally:
        rig.emuboard("restore", LINK)
    report(
        capsys,
        f"[faults b] {LINK} link cut ({how}) for good {when}: exit {code} in "
        f"{took:.1f} s; {brief(summary)}",
    )
    acc = assert_finished(rig, code, summary, err, out, when)
    assert acc[LINK]["lost"] and acc[partner(LINK)]["reassigned"] >= 1, why(when, acc, err)
    assert f"{LINK}: given up" in err


@ROUND
def test_power_off_two_boards(
    rig: Rig, tmp_path: Path, round_: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """c. A board powered off mid-run (sshd, sessions, agent and netns gone)."""
    _, k, d, when = moment_params("power", round_, (0, 4), 0.8)
    out, run_dir = tmp_path / "t.table", tmp_path / "run"
    jobs = rig.workdir(POWER) / "jobs"

    def power_off() -> None:
        """Off while a capture job is unanswered (:func:`frozen_on_a_job`; the stop kills the
        frozen agents): CI once powered the board off after its last job had answered, and
        nothing was lost."""
        if frozen_on_a_job(rig, POWER, jobs, m) is not None:
            rig.emuboard("stop", POWER)

    try:
        with at_moment(Moment(run_dir, jobs, k, d, power_off, again=True, ops=FIRST)) as m:
            code, summary, err, took = run_cli(
                capsys, calibrate_args(rig, out, run_dir, *devices(*FLEET, boards=rig.boards))
            )
        m.check()
    finally:
        t0 = time.monotonic()
        rig.emuboard(
            "start",
            POWER,
            EMUBOARD_NET="netns",
            EDGECAL_BOARDS_FILE=str(tmp_path / "written-boards.toml"),
        )
        back = time.monotonic() - t0
    report(
        capsys,
        f"[faults c] {POWER} powered off {when}: exit {code} in {took:.1f} s; "
        f"{brief(summary)}; started again in {back:.1f} s",
    )
    acc = assert_finished(rig, code, summary, err, out, when)
    assert acc[POWER]["lost"] and acc[partner(POWER)]["reassigned"] >= 1, why(when, acc, err)
    # the board is back, at the same address with the same host key
    code, hello, err = cli(
        capsys, "hello", "--device", POWER, "--boards", str(rig.boards), "--json"
    )
    assert code == 0, err
    assert json.loads(hello)["machine"] == "aarch64"


@ROUND
def test_agent_killed_mid_job(
    rig: Rig, tmp_path: Path, round_: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """d. The agent killed (SIGKILL) while it runs a capture job: the job runs again."""
    _, k, d, when = moment_params("kill", round_, (0, 4), 0.8)
    killed: list[int] = []
    jobs = rig.workdir(LINK) / "jobs"

    def kill() -> None:
        """Kill the agents only while a capture job is unanswered (:func:`frozen_on_a_job`):
        CI once killed an agent 0.07 s after its job had finished, and rightly nothing was
        retried."""
        for pid in frozen_on_a_job(rig, LINK, jobs, m) or []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    out, run_dir = tmp_path / "t.table", tmp_path / "run"
    with at_moment(Moment(run_dir, jobs, k, d, kill, again=True)) as m:
        code, summary, err, took = run_cli(
            capsys, calibrate_args(rig, out, run_dir, *devices(*FLEET, boards=rig.boards))
        )
    m.check()
    report(
        capsys,
        f"[faults d] {LINK} agent (pids {killed}) killed {when}: exit {code} in "
        f"{took:.1f} s; {brief(summary)}",
    )
    acc = assert_finished(rig, code, summary, err, out, when)
    assert killed and acc[LINK]["retried"] >= 1 and not acc[LINK]["lost"], why(when, acc, err)


@ROUND
def test_full_workdir(
    rig: Rig, tmp_path: Path, round_: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """e. The board's work directory fills up: with another board the run finishes without
    it; alone the run stops resumable, and once space is freed ``--resume`` finishes it
    without redoing a finished shard."""
    # early in pass 1, so the board still has shards to push: a board whose remaining jobs
    # need no new space (its shards are there) rightly goes on, each job reusing the space of
    # the one before (the host removes a job's folder once it has the answer)
    _, k, d, when = moment_params("full-fleet", round_, (0, 1), 0.3)
    with small_workdir(rig, POWER) as (boards, mnt):
        jobs = mnt / "wd" / "jobs"
        out, run_dir = tmp_path / "fleet.table", tmp_path / "fleet-run"
        full = KeepFull(mnt)
        try:
            with at_moment(Moment(run_dir, jobs, k, d, full.start, ops=FIRST)) as m:
                code, summary, err, took = run_cli(
                    capsys, calibrate_args(rig, out, run_dir, *devices(*FLEET, boards=boards))
                )
        finally:
            full.release()
        m.check()
        report(
            capsys,
            f"[faults e] {POWER} work directory filled ({full.bytes} B) {when}, "
            f"with {partner(POWER)}: exit {code} in {took:.1f} s; {brief(summary)}",
        )
        acc = assert_finished(rig, code, summary, err, out, when)
        assert acc[POWER]["lost"] and "full" in acc[POWER]["lost"], why(when, acc, err)
        assert acc[partner(POWER)]["reassigned"] >= 1, why(when, acc, err)

        # alone (3 shards per pass): at least one shard answered before the disk fills
        _, k, d, when = moment_params("full-alone", round_, (1, 1), 0.8)
        out, run_dir = tmp_path / "alone.table", tmp_path / "alone-run"
        full = KeepFull(mnt)
        try:
            with at_moment(Moment(run_dir, jobs, k, d, full.start, ops=FIRST)) as m:
                code, _, err, took = run_cli(
                    capsys,
                    calibrate_args(
                        rig, out, run_dir, *devices(POWER, boards=boards), "--retries", "2"
                    ),
                )
        finally:
            full.release()  # space freed for the resume below
        m.check()
        line = one_error_line(err, POWER, run_dir)
        report(
            capsys,
            f"[faults e] {POWER} alone, work directory filled {when}: exit {code} "
            f"in {took:.1f} s: {line}",
        )
        assert code != 0 and not out.exists() and "full" in line
        before, done = part_jobs(run_dir), done_samples(run_dir)
        assert before

        code, summary, err, took = run_cli(
            capsys, ["-q", "calibrate", "--resume", str(run_dir), "--json"]
        )
    report(
        capsys,
        f"[faults e] resumed after freeing space: exit {code} in {took:.1f} s, "
        f"{len(before)} shard results kept; {brief(summary)}",
    )
    assert code == 0, err
    assert summary is not None and out.read_bytes() == rig.reference
    after = part_jobs(run_dir)
    assert {key: after[key] for key in before} == before  # finished shards not redone
    assert sum(a["samples"] for a in summary["fleet"]) == 2 * N_IMAGES - done


@ROUND
def test_single_board_cut_then_resume(
    rig: Rig, tmp_path: Path, round_: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """f. The only board's link cut for good: the run stops with a resumable run directory;
    once the link is back, ``--resume`` writes the uncut run's table."""
    rng, k, d, when = moment_params("cut-alone", round_, (0, 2), 0.8)
    how = rng.choice(CUTS)
    out, run_dir = tmp_path / "t.table", tmp_path / "run"
    try:
        with at_moment(
            Moment(
                run_dir, rig.workdir(LINK) / "jobs", k, d, lambda: rig.emuboard("cut", LINK, how)
            )
        ) as m:
            code, _, err, took = run_cli(
                capsys,
                calibrate_args(
                    rig, out, run_dir, *devices(LINK, boards=rig.boards), "--retries", "2"
                ),
            )
        m.check()
    finally:
        rig.emuboard("restore", LINK)
    line = one_error_line(err, LINK, run_dir)
    report(
        capsys,
        f"[faults f] {LINK} alone, link cut ({how}) for good {when}: exit {code} in "
        f"{took:.1f} s: {line}",
    )
    assert code != 0 and not out.exists()
    before, done = part_jobs(run_dir), done_samples(run_dir)
    code, summary, err, took = run_cli(
        capsys, ["-q", "calibrate", "--resume", str(run_dir), "--json"]
    )
    report(
        capsys,
        f"[faults f] resumed: exit {code} in {took:.1f} s, {len(before)} shard "
        f"results kept; {brief(summary)}",
    )
    assert code == 0, err
    assert summary is not None and out.read_bytes() == rig.reference
    after = part_jobs(run_dir)
    assert {key: after[key] for key in before} == before
    assert sum(a["samples"] for a in summary["fleet"]) == 2 * N_IMAGES - done
