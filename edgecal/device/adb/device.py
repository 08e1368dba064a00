"""``AdbDevice``: the native agent and the job protocol on an Android phone over ``adb``.

Layout on the phone, all under one work directory (default ``/data/local/tmp/edgecal``, the
one place an app-less shell user may write and execute)::

    <workdir>/edgecal-agent-native-aarch64-<sha12>   the native agent (static, chmod 755)
    <workdir>/files/<sha256>/<name>                  pushed models and shards, content-addressed
    <workdir>/jobs/<job_id>/...                      one job: request, inputs, artifacts, response

A phone has no Python: the agent is the C++ one (``edgecal_agent/native``), the facts come
from ``sh``, ``getprop`` and ``/sys`` (:mod:`edgecal.device.adb.facts`).  The guarantees are
SSH's, from the same :class:`~edgecal.device.remote.RemoteDevice`:

* uploads are content-addressed: a pushed file gets an mtime derived from its sha256
  (``touch -t``, :func:`~edgecal.device.remote.mark_mtime`); "regular file, right size, that
  mtime, no symlink on the way" (``stat``, for all files of a push in one ``adb shell``) means
  it is there and 0 bytes are pushed; a file without the mark is hashed on the phone
  (``sha256sum``, toybox has it) or pushed again;
  a push goes to a per-process staging name (a planted symlink there is removed first) and is
  renamed into place; the agent checks a ``files/<sha256>/`` input's content before its first
  use;
* the agent writes each response atomically (temp + rename), and a job whose answer did not
  reach the host is collected later by its id (:meth:`collect_job`);
* every remote path is built from the resolved work directory and a checked relative name
  (no ``..``, no absolute path, no NUL); the agent runs with ``--root`` the work directory's
  parent and refuses anything outside;
* every adb call has a deadline (:mod:`edgecal.device.adb.link`);
* every command is one string of ``shlex.quote``-d words (:mod:`edgecal.device.adb.shell`).
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import NoReturn

from edgecal.device.adb.facts import (
    PhoneFacts,
    parse_phone_probe,
    phone_probe_script,
    pinned_cpus,
    taskset_mask,
)
from edgecal.device.adb.link import AdbLink, AdbTarget
from edgecal.device.adb.shell import touch_stamp
from edgecal.device.base import Submission
from edgecal.device.nativeagent import NativeAgentSource, built_native_agent
from edgecal.device.probe import AgentChoice, BoardFacts, native_target
from edgecal.device.remote import (
    MAX_RESPONSE_BYTES,
    PushCheck,
    RemoteDevice,
    mark_mtime,
)
from edgecal.device.session import AgentProcess
from edgecal.errors import BoardSetupError, DeviceError, ProtocolError
from edgecal_agent.messages import JOBS_DIR, RESPONSE_FILE, check_relpath

__all__ = ["PHONE_TMP", "PHONE_WORKDIR", "AdbDevice", "mark_mtime", "phone_workdir"]

log = logging.getLogger(__name__)

#: Where edgecal works on a phone unless the boards file says otherwise.
PHONE_WORKDIR = "/data/local/tmp/edgecal"
#: A relative ``workdir`` of a phone is relative to this folder.
PHONE_TMP = "/data/local/tmp"


def phone_workdir(workdir: str | None) -> str:
    """The absolute work directory on the phone: ``workdir`` as given when absolute, else
    below ``/data/local/tmp``."""
    wd = workdir or PHONE_WORKDIR
    return posixpath.normpath(wd if wd.startswith("/") else posixpath.join(PHONE_TMP, wd))


def file_states_script(workdir: str, checks: Sequence[PushCheck]) -> str:
    """``sh`` that says what each file is: builtins find symlinks on the way, absent files
    and other kinds; the regular files' sizes and mtimes come from one ``stat``, in order
    (read by :func:`parse_file_states`)."""
    lines = [f"cd {shlex.quote(workdir)} || exit 5", "set --"]
    for i, c in enumerate(checks):
        parts = PurePosixPath(c.rel).parts
        comps = " ".join(shlex.quote("/".join(parts[: k + 1])) for k in range(len(parts)))
        f = shlex.quote(c.rel)
        lines.append(
            f'k=file; for c in {comps}; do if [ -L "$c" ]; then k=link; break; fi; done; '
            f"if [ $k = file ]; then if [ ! -e {f} ]; then k=absent; "
            f'elif [ ! -f {f} ]; then k=other; else set -- "$@" {f}; fi; fi; '
            f"echo EDGECAL-STATE {i} $k"
        )
    lines.append("[ $# -eq 0 ] || stat -c 'EDGECAL-STAT %s %Y' -- \"$@\"")
    return "\n".join(lines)


def parse_file_states(out: str, checks: Sequence[PushCheck]) -> list[str]:
    """The states (see ``RemoteDevice._file_states``) in the answer of ``_file_states``'s
    script: ``EDGECAL-STATE I file|absent|link|other`` per file, then one ``EDGECAL-STAT SIZE
    MTIME`` per regular file in order.  A file whose figures are missing (``stat`` failed: it
    went away meanwhile) is ``unknown``."""
    states = ["unknown"] * len(checks)
    regular: list[int] = []
    stats: list[list[str]] = []
    for line in out.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "EDGECAL-STATE" and words[1].isdigit():
            i = int(words[1])
            if i < len(checks) and words[2] == "file":
                regular.append(i)
            elif i < len(checks):
                states[i] = "absent" if words[2] == "absent" else "bad"
        elif words[:1] == ["EDGECAL-STAT"]:
            stats.append(words[1:])
    if len(stats) == len(regular):
        for i, got in zip(regular, stats, strict=True):
            if got == [str(checks[i].size), str(checks[i].mark)]:
                states[i] = "verified"
    return states


class AdbDevice(RemoteDevice):
    """An Android phone over adb.  Connects (``adb connect`` for ``host:port``) and creates
    the work directory at construction.

    ``threads``: default ncnn thread count for ``deployed`` jobs.  ``affinity``: the cores
    the agent runs on (``taskset``): ``all``, ``big`` (the fastest cluster, as apps do with
    ncnn's ``set_cpu_powersave(2)``) or ``little`` (``set_cpu_powersave(1)``).
    ``native_agent``: where the aarch64/armv7 binary comes from (default: built or found in
    the cache by ``edgecal.native``).
    """

    machine = "phone"
    link_kind = "adb"
    lost_hint = (
        "check the phone's cable or network (`adb devices`), then rerun "
        "(`edgecal board check {name}`)"
    )
    dead_hint = "the phone may have killed it (low memory)"
    target: AdbTarget
    link: AdbLink

    def __init__(
        self,
        target: AdbTarget,
        *,
        workdir: str | None = None,
        workdir_root: str | None = None,
        threads: int | None = None,
        affinity: str = "all",
        startup_timeout_s: float = 120.0,
        native_agent: NativeAgentSource | None = None,
        adb: str | None = None,
        shell_v1: bool = False,
    ) -> None:
        wd = phone_workdir(workdir)
        given = PurePosixPath(workdir or PHONE_WORKDIR)
        if ".." in given.parts or "\x00" in wd or wd in ("/", PHONE_TMP):
            raise BoardSetupError(
                f"{target.name}: work directory {workdir!r} is not a folder of its own",
                hint=f"use a path like {PHONE_WORKDIR}",
            )
        if affinity not in ("all", "big", "little"):
            raise ValueError(f"affinity must be all, big or little, not {affinity!r}")
        super().__init__(target, threads=threads, startup_timeout_s=startup_timeout_s)
        self.workdir = PurePosixPath(wd)
        self.workdir_root = workdir_root or posixpath.dirname(wd)
        self.affinity = affinity
        self._native_agent = native_agent or built_native_agent
        self._dirs_ok: set[str] = set()
        self._facts: PhoneFacts | None = None
        self._open(lambda: AdbLink(target, adb, shell_v1=shell_v1), self._make_workdir)

    # -- paths -----------------------------------------------------------------------------------
    def _run(self, script: str, what: str, timeout_s: float | None = None) -> str:
        """Run ``script``; its output, or a ``DeviceError`` naming ``what`` when it fails."""
        res = self.link.run(script, timeout_s=timeout_s or self._short_timeout)
        if res.status != 0:
            text = res.stdout.strip()
            raise self._explain(text, what)
        return res.stdout

    def _sh(self, script: str, args: Sequence[str], what: str) -> str:
        return self._run(shlex.join(["sh", "-c", script, "edgecal", *args]), what)

    @property
    def _short_timeout(self) -> float:
        return max(60.0, self.target.connect_timeout_s)

    def _explain(self, text: str, what: str) -> DeviceError:
        last = (text.splitlines() or ["?"])[-1]
        if "No space" in text:
            return BoardSetupError(
                f"{self.name}: the phone's storage is full: {what}: {last}",
                hint=f"free space on the phone (`edgecal board check {self.name}` shows it) or "
                "move the work directory",
            )
        if "ermission" in text or "Read-only" in text:
            return BoardSetupError(
                f"{self.name}: the work directory is not writable: {what}: {last}",
                hint=f"use a folder below {PHONE_TMP} (`workdir = ...` in the boards file)",
            )
        return DeviceError(f"{self.name}: {what} failed: {last}", hint=self._check_hint)

    def _mkdirs_script(self, rel: str | None) -> str:
        """``mkdir`` of the work directory (from its root) and then ``rel`` inside it, one
        component at a time; a symlink on the way is refused (status 3)."""
        comps: list[str] = []
        root = PurePosixPath(self.workdir_root)
        wd = self.workdir
        chain = [str(p) for p in reversed(wd.parents) if p != root and root in p.parents]
        chain.append(str(wd))
        if rel:
            chain += [
                posixpath.join(str(wd), *PurePosixPath(rel).parts[: i + 1])
                for i in range(len(PurePosixPath(rel).parts))
            ]
        for p in chain:
            q = shlex.quote(p)
            comps.append(
                f"if [ -L {q} ]; then echo 'EDGECAL-SYMLINK '{q}; exit 3; fi; "
                f"[ -d {q} ] || mkdir {q} || exit 4"
            )
        return "\n".join(comps)

    def _make_workdir(self) -> None:
        out = self._run(
            self._mkdirs_script(None) + f"\ncd {shlex.quote(str(self.workdir))} && pwd -P",
            "creating the work directory",
        )
        real = out.strip().splitlines()[-1] if out.strip() else ""
        if real != str(self.workdir):
            raise BoardSetupError(
                f"{self.name}: the work directory {self.workdir} resolves to {real!r}: a "
                "symlink on the way",
                hint="choose a workdir whose folders are real directories",
            )

    def _ensure_dir(self, rel: str) -> None:
        if rel in self._dirs_ok:
            return
        check_relpath(rel, "dir")
        try:
            self._run(self._mkdirs_script(rel), f"creating {rel}")
        except DeviceError as e:
            if "EDGECAL-SYMLINK" in e.message:
                raise DeviceError(
                    f"{self.name}: {rel} is a symlink (refused inside the work directory)",
                    hint="remove it from the phone's work directory",
                ) from None
            raise
        self._dirs_ok.add(rel)

    # -- transport: adb shell and adb push/pull --------------------------------------------------
    def _file_states(self, checks: Sequence[PushCheck]) -> list[str]:
        """The state of every file in ONE ``adb shell`` with ONE ``stat`` (each is a process
        start on the phone, ~40 ms under emulation): :func:`file_states_script`."""
        what = checks[0].rel if len(checks) == 1 else f"{len(checks)} pushed files"
        out = self._run(file_states_script(str(self.workdir), checks), f"looking at {what}")
        return parse_file_states(out, checks)

    def _hash(self, rel: str) -> str | None:
        return self.remote_sha256(rel)

    def remote_sha256(self, rel: str) -> str | None:
        """sha256 of a workdir file by the phone's ``sha256sum`` (None: not available)."""
        res = self.link.run(
            f"cd {shlex.quote(str(self.workdir))} && sha256sum {shlex.quote(rel)}",
            timeout_s=self._short_timeout,
        )
        words = res.stdout.split()
        if res.status == 0 and words and len(words[0]) == 64:
            return words[0].lower()
        return None

    def _mark_script(self, rel: str, mark: int) -> str:
        stamp = touch_stamp(mark)
        return f"TZ=UTC0 touch -c -t {stamp} {shlex.quote(self.remote(rel))}"

    def _set_mark(self, rel: str, mark: int) -> None:
        self._run(self._mark_script(rel, mark), f"marking {rel}")

    def _stage(self, local: Path, rel: str) -> None:
        tmp = self.remote(self.staging_rel(rel))
        self._run(f"rm -f {shlex.quote(tmp)}", f"preparing the upload of {rel}")
        self.link.push(local, tmp)

    def _place(self, local: Path, rel: str, mark: int, mode: str | None) -> None:
        q_tmp = shlex.quote(self.remote(self.staging_rel(rel)))
        q_final = shlex.quote(self.remote(rel))
        chmod = f"chmod {mode} {q_tmp} && " if mode else ""
        try:
            self._run(
                f"{chmod}if [ -L {q_final} ] || [ -d {q_final} ]; then rm -rf {q_final}; fi; "
                f"mv -f {q_tmp} {q_final} && {self._mark_script(rel, mark)}",
                f"placing {rel}",
            )
        except DeviceError:
            with contextlib.suppress(DeviceError):
                self._run(f"rm -f {q_tmp}", "removing a staged upload")
            raise

    # -- facts -----------------------------------------------------------------------------------
    def phone_facts(self) -> PhoneFacts:
        """Model, Android version, ABI, cores and clusters, features, memory, free space,
        screen and thermal state (one ``adb shell``)."""
        if self._facts is None:
            res = self.link.run(phone_probe_script(str(self.workdir)), timeout_s=120.0)
            self._facts = parse_phone_probe(res.stdout)
        return self._facts

    def probe(self) -> BoardFacts:
        """The phone's facts in :class:`BoardFacts` form (the native agent's needs)."""
        return self.phone_facts().board_facts()

    def native_target(self) -> str:
        facts = self.phone_facts()
        target = native_target(facts.machine)
        if target is None:
            raise BoardSetupError(
                f"{self.name}: no native agent for this phone's CPU ({facts.machine or '?'}, "
                f"ABI {facts.abi or '?'})",
                hint="native agents exist for aarch64 (arm64-v8a), armv7 (armeabi-v7a) and x86_64",
            )
        return target

    # -- agent -----------------------------------------------------------------------------------
    def deploy_agent(self) -> str:
        """Push the native agent (content-addressed: 0 bytes when it is there) with mode
        755; its path relative to the work directory."""
        if self._agent_rel is None:
            target = self.native_target()
            local = Path(self._native_agent(target))
            digest = self._digests.sha256(local)
            name = f"edgecal-agent-native-{target}-{digest[:12]}"
            self._ensure_pushed([(local, name, digest)], mode="755")
            self._agent_rel = name
        return self._agent_rel

    def agent_argv(self) -> list[str]:
        agent = self.remote(self.deploy_agent())
        argv = [agent, "serve", "--root", self.workdir_root, "--workdir", str(self.workdir)]
        cpus = self.cpus
        if cpus:
            argv = ["taskset", taskset_mask(cpus), *argv]
        return argv

    @property
    def cpus(self) -> tuple[int, ...]:
        """The cores the agent is pinned to (empty: all; see ``affinity``)."""
        if self.affinity == "all":
            return ()
        facts = self.phone_facts()
        cpus = pinned_cpus(facts, self.affinity)
        if cpus and not facts.taskset:
            log.warning("%s: no taskset on the phone; the agent runs on every core", self.name)
            return ()
        return cpus

    @property
    def agent_choice(self) -> AgentChoice:
        """A phone gets the native agent: it has no Python."""
        return AgentChoice("native", "a phone over adb: no Python there")

    def _start_agent(self, argv: Sequence[str]) -> AgentProcess:
        return self.link.start(argv, str(self.workdir))

    def _link_up(self) -> bool:
        return self.link.is_online()

    def _agent_start_failed(self, e: DeviceError) -> NoReturn:
        raise BoardSetupError(
            f"{self.name}: the agent does not start: {e.message}", hint=self._check_hint
        ) from e

    def _kill_remote(self, pid: int) -> None:
        self.link.kill_remote(pid)

    # -- transport: job files --------------------------------------------------------------------
    def _write_job(self, job: Submission) -> None:
        """One push of the job's folder into jobs/ (the agent reads it when it gets the id)."""
        self._ensure_dir(JOBS_DIR)
        local = self._local / "out" / job.job_id
        shutil.rmtree(local.parent, ignore_errors=True)
        local.mkdir(parents=True)
        for name, data in job.files:
            path = local / check_relpath(name, "job file")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.bytes_job_files += len(data)
        self.link.push(local, self.remote(JOBS_DIR))
        shutil.rmtree(local.parent, ignore_errors=True)

    def _read_response(self, job_rel: str) -> str | None:
        q = shlex.quote(self.remote(job_rel))
        out = self._run(
            f"cd {q} 2>/dev/null || {{ echo EDGECAL-NOJOB; exit 0; }}\n"
            f"if [ -L {RESPONSE_FILE} ] || [ ! -f {RESPONSE_FILE} ]; then "
            "echo EDGECAL-NORESPONSE; exit 0; fi\n"
            f"echo EDGECAL-RESPONSE; cat {RESPONSE_FILE}",
            f"reading the response of {job_rel}",
        )
        _, sep, body = out.partition("EDGECAL-RESPONSE\n")
        if not sep:
            return None
        self._bytes_fetched += len(body.encode("utf-8"))
        if len(body) > MAX_RESPONSE_BYTES:
            raise ProtocolError(f"{self.name}: the response of {job_rel} is too large")
        return body

    def _check_artifacts(self, job_rel: str, names: Sequence[str], job_id: str) -> None:
        """Check that every artifact is a regular file (no symlink) in the job folder."""
        q = shlex.quote(self.remote(job_rel))
        checks = "\n".join(
            f"if [ -L {shlex.quote(n)} ] || [ ! -f {shlex.quote(n)} ]; then "
            f"echo EDGECAL-MISSING {shlex.quote(n)}; else echo EDGECAL-SIZE $(wc -c < "
            f"{shlex.quote(n)}); fi"
            for n in names
        )
        out = self._run(f"cd {q} || exit 5\n{checks}", f"looking at the artifacts of {job_rel}")
        for line in out.splitlines():
            if line.startswith("EDGECAL-MISSING "):
                name = line[len("EDGECAL-MISSING ") :]
                raise ProtocolError(
                    f"{self.name}: artifact {name} of job {job_id} is missing (or not a "
                    "regular file) on the phone",
                    hint="something on the phone removed the job's files; run the command again",
                )

    def _fetch_file(self, rel: str, local: Path) -> None:
        self.link.pull(self.remote(rel), local, MAX_RESPONSE_BYTES)

    def _remove_job(self, job_rel: str) -> None:
        with contextlib.suppress(DeviceError):
            self._run(f"rm -rf {shlex.quote(self.remote(job_rel))}", "removing a job")

    def __repr__(self) -> str:
        return f"AdbDevice(name={self.name!r}, serial={self.target.serial!r})"
