"""The box user code runs in: its own user, its own cgroup (else rlimits), a tree killed whole.

A trainer builds one `Sandbox` at start. Each process it runs for a job (pip for
``requirements.txt``, then the script) gets a `JobBox`:

- **user**: when the trainer runs as root, the process runs as a dedicated system user
  (``skmaker-job`` unless configured otherwise, created when missing) that owns only the job's
  workspace, so it cannot read the trainer's files or ``/proc/<trainer>/environ``. Without root
  it runs as the trainer's user, and a warning says the isolation is weaker.
- **cgroup**: where the kernel offers one it can write to (cgroup v1 with memory, pids and
  freezer controllers, or v2 with memory and pids), the process and everything it starts live in
  a fresh cgroup with the memory and process limits; at the end the cgroup is frozen and every
  process in it killed, ``setsid`` or not. Elsewhere the limits are rlimits (address space,
  processes of the user) and the tree is found through the trainer's children, the trainer being
  a child subreaper so orphans (a ``setsid`` grandchild) are re-parented to it.
- **rlimits** in both cases: open files and CPU seconds (per process).

The process is started through `box_exec` (join the cgroup, set the limits, drop the user,
exec), so nothing runs in the trainer between fork and exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_JOB_USER = "skmaker-job"
CGROUP_ROOT = Path("/sys/fs/cgroup")
_PR_SET_CHILD_SUBREAPER = 36
_KILL_DEADLINE_S = 10.0
_POLL_S = 0.02
_box_ids = itertools.count(1)

OUT_OF_MEMORY = "OutOfMemory"
CPU_TIME_EXCEEDED = "CpuTimeLimitExceeded"


@dataclass(frozen=True)
class JobLimits:
    """Limits of one job's process tree; 0 means no limit.

    Attributes:
        memory_bytes: memory of the whole tree (cgroup), else address space per process.
        max_processes: processes and threads of the tree (cgroup pids), else of the job user.
        max_open_files: open files per process.
        cpu_seconds: CPU time per process; SIGXCPU, then SIGKILL 5 s later.
    """

    memory_bytes: int = 0
    max_processes: int = 0
    max_open_files: int = 0
    cpu_seconds: int = 0

    def describe(self) -> str:
        """One line for the log, e.g. ``memory 512 MiB, processes 4096, ...``."""
        parts = [
            f"memory {self.memory_bytes // 2**20} MiB" if self.memory_bytes else "memory -",
            f"processes {self.max_processes or '-'}",
            f"open files {self.max_open_files or '-'}",
            f"CPU {self.cpu_seconds} s" if self.cpu_seconds else "CPU -",
        ]
        return ", ".join(parts)


def default_memory_bytes() -> int:
    """Three quarters of this machine's memory: the trainer itself keeps some headroom."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4


# --- cgroups ---------------------------------------------------------------------------------


class CgroupBox:
    """One job process tree's cgroup(s)."""

    def __init__(self, dirs: dict[str, Path], version: int) -> None:
        self._dirs = dirs  # controller (v1) or "unified" (v2) -> folder
        self.version = version

    @property
    def procs_files(self) -> list[str]:
        """Where the first process writes its pid to join."""
        return [str(d / "cgroup.procs") for d in self._dirs.values()]

    def pids(self) -> set[int]:
        """Every process in the cgroup(s)."""
        found: set[int] = set()
        for folder in self._dirs.values():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return found

    def kill_all(self) -> None:
        """Kills every process, forks racing the kill included (freeze first where possible)."""
        if self.version == 2 and (self._dirs["unified"] / "cgroup.kill").exists():
            _write(self._dirs["unified"] / "cgroup.kill", "1")
        else:
            self._set_frozen(True)
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._set_frozen(False)  # killed tasks die once thawed
        deadline = time.monotonic() + _KILL_DEADLINE_S
        while self.pids():
            if time.monotonic() > deadline:
                log.warning("processes %s survived the kill of their cgroup", sorted(self.pids()))
                return
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(_POLL_S)

    def _set_frozen(self, frozen: bool) -> None:
        if self.version == 1 and "freezer" in self._dirs:
            _write(self._dirs["freezer"] / "freezer.state", "FROZEN" if frozen else "THAWED")
        elif self.version == 2:
            with contextlib.suppress(OSError):
                _write(self._dirs["unified"] / "cgroup.freeze", "1" if frozen else "0")

    def out_of_memory(self) -> bool:
        """True when the kernel killed a process of the tree for going over the memory limit."""
        if self.version == 1:
            events = _read_keyed(self._dirs.get("memory"), "memory.oom_control")
        else:
            events = _read_keyed(self._dirs.get("unified"), "memory.events")
        return events.get("oom_kill", 0) > 0

    def remove(self) -> None:
        """Removes the (empty) cgroup folders."""
        for folder in self._dirs.values():
            try:
                folder.rmdir()
            except OSError as err:
                log.warning("cannot remove cgroup %s: %s", folder, err)


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _read_keyed(folder: Path | None, name: str) -> dict[str, int]:
    if folder is None:
        return {}
    try:
        lines = (folder / name).read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


class Cgroups:
    """Where job cgroups are made: under the trainer's own cgroup, in v1 or v2."""

    V1_CONTROLLERS = ("memory", "pids", "freezer")

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self._bases = bases

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT, own: Path = Path("/proc/self/cgroup")) -> Cgroups:
        """The cgroups this process can make job cgroups in.

        Raises:
            OSError: no usable hierarchy (not mounted, read-only, controllers missing).
        """
        lines = own.read_text().splitlines()
        paths = {}
        for line in lines:
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path.lstrip("/")
        if (root / "cgroup.controllers").exists():  # unified (v2) hierarchy
            return cls._detect_v2(root, root / paths.get("", ""))
        bases = {}
        for controller in cls.V1_CONTROLLERS:
            mount = root / controller
            if controller not in paths or not (mount / "cgroup.procs").exists():
                raise OSError(f"cgroup v1 controller {controller} is not mounted at {mount}")
            bases[controller] = mount / paths[controller]
        probe = cls(1, bases)
        probe.create("probe").remove()  # writable?
        return probe

    @classmethod
    def _detect_v2(cls, root: Path, own: Path) -> Cgroups:
        available = (own / "cgroup.controllers").read_text().split()
        missing = {"memory", "pids"} - set(available)
        if missing:
            raise OSError(f"cgroup v2 at {own} does not offer {', '.join(sorted(missing))}")
        jobs = own / "skmaker-jobs"
        jobs.mkdir(exist_ok=True)
        try:
            _write(own / "cgroup.subtree_control", "+memory +pids")
        except OSError:
            # v2 lets a non-root cgroup that holds processes have no controllers for its
            # children: move this process into a leaf of its own first, as systemd does.
            leaf = own / "skmaker-trainer"
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            _write(own / "cgroup.subtree_control", "+memory +pids")
        _write(jobs / "cgroup.subtree_control", "+memory +pids")
        probe = cls(2, {"unified": jobs})
        probe.create("probe").remove()
        return probe

    def create(self, name: str, limits: JobLimits | None = None) -> CgroupBox:
        """A new cgroup (one per controller in v1) with `limits` applied."""
        limits = limits or JobLimits()
        dirs: dict[str, Path] = {}
        try:
            for key, base in self._bases.items():
                folder = base / name
                folder.mkdir()
                dirs[key] = folder
            box = CgroupBox(dirs, self.version)
            if self.version == 1:
                if limits.memory_bytes:
                    _write(dirs["memory"] / "memory.limit_in_bytes", str(limits.memory_bytes))
                    memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
                    if memsw.exists():  # swap counts too, else the limit only moves the pages
                        _write(memsw, str(limits.memory_bytes))
                if limits.max_processes:
                    _write(dirs["pids"] / "pids.max", str(limits.max_processes))
            else:
                unified = dirs["unified"]
                if limits.memory_bytes:
                    _write(unified / "memory.max", str(limits.memory_bytes))
                    with contextlib.suppress(OSError):
                        _write(unified / "memory.swap.max", "0")
                if limits.max_processes:
                    _write(unified / "pids.max", str(limits.max_processes))
            return box
        except OSError:
            for folder in dirs.values():
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise


# --- the tree without cgroups ----------------------------------------------------------------


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_descendants(keep_unreaped: int) -> None:
    """SIGKILLs every process below this one (a subreaper), reaping all but `keep_unreaped`."""
    deadline = time.monotonic() + _KILL_DEADLINE_S
    while True:
        alive = descendants(os.getpid())
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap_adopted(keep_unreaped)
        if not alive:
            return
        if time.monotonic() > deadline:
            log.warning("processes %s survived the kill of their job", sorted(alive))
            return
        time.sleep(_POLL_S)


def _reap_adopted(keep_unreaped: int) -> None:
    # Orphans re-parented to this subreaper become its zombies; the script's own pid is left
    # to its Popen.
    for child in _children_including_zombies():
        if child != keep_unreaped:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)


def _children_including_zombies() -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.append(int(entry.name))
    return found


def _become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


# --- users and files -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobUser:
    """Who job processes run as."""

    name: str
    uid: int
    gid: int
    dedicated: bool  # False: the trainer's own user


def ensure_job_user(name: str) -> JobUser:
    """The system user `name`, created (no home, no login shell) when missing.

    Raises:
        OSError: the user does not exist and cannot be created.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        command = [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as err:
            raise OSError(f"cannot create the job user {name!r}: {err}") from err
        try:
            entry = pwd.getpwnam(name)  # a concurrent trainer may have created it
        except KeyError:
            raise OSError(f"cannot create the job user {name!r}: {done.stderr.strip()}") from None
        log.info("created system user %s (uid %d) for training scripts", name, entry.pw_uid)
    if entry.pw_uid == 0:
        raise OSError(f"job user {name!r} is root")
    return JobUser(name, entry.pw_uid, entry.pw_gid, dedicated=True)


def can_reach(path: Path, uid: int, gid: int) -> bool:
    """True when a process of `uid`/`gid` (no other groups) can traverse to `path`."""
    for folder in [path, *path.parents]:
        try:
            info = folder.stat()
        except OSError:
            return False
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Gives `root` and everything below it to `uid`/`gid`; links are not followed."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in itertools.chain(dirnames, filenames):
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def is_inside_without_links(path: Path, root: Path) -> bool:
    """True when `path` is below `root` and no component between them is a symbolic link.

    The trainer checks this before it reads or writes, with its own rights, a file user code
    could have replaced by a link (``failure``, ``success``, ``model/``).
    """
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            return False
    return True


def interpreter_paths(python: str) -> list[str]:
    """The folders `python` needs: its binary's, its prefix and base prefix (real paths)."""
    code = "import sys; print(sys.prefix); print(sys.base_prefix)"
    try:
        done = subprocess.run(
            [python, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        prefixes = done.stdout.split()
    except (OSError, subprocess.SubprocessError):
        prefixes = []
    paths = [os.path.dirname(os.path.realpath(python)), *prefixes]
    return sorted({os.path.realpath(p) for p in paths})


def wrapped(plan: dict[str, object], command: Sequence[str]) -> list[str]:
    """`command` started through `box_exec` with `plan`."""
    wrapper = str(Path(__file__).with_name("box_exec.py"))
    return [sys.executable, "-I", "-S", wrapper, json.dumps(plan), *command]


def _probe(user: JobUser, expose: list[str], python: str) -> str:
    """Empty when `user` can start `python` through the box; else what went wrong."""
    plan = {"uid": user.uid, "gid": user.gid, "expose": expose}
    command = wrapped(plan, [python, "-c", "import sys"])
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False, cwd="/"
        )
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


# --- the sandbox -----------------------------------------------------------------------------


class Sandbox:
    """How a trainer boxes the processes of its jobs (see the module docstring)."""

    def __init__(
        self,
        user: JobUser,
        limits: JobLimits,
        cgroups: Cgroups | None,
        subreaper: bool,
        expose: Sequence[str] = (),
    ) -> None:
        self.user = user
        self.limits = limits
        self.cgroups = cgroups
        self._subreaper = subreaper
        self.expose = list(expose)
        self._temporary_roots: list[Path] = []

    @classmethod
    def create(
        cls, job_user: str, limits: JobLimits, *, python: str, use_cgroups: bool = True
    ) -> Sandbox:
        """Sets up the user and the cgroups this machine allows, warning about what is missing.

        Args:
            job_user: the dedicated user's name (used when running as root).
            limits: every job process tree's limits.
            python: the interpreter jobs run; the job user must be able to start it (when it
                lives under a folder closed to other users, such as /root, the job's mount
                namespace exposes it), else scripts run as the trainer's user, with a warning.
            use_cgroups: False forces rlimits.

        Raises:
            OSError: running as root, the dedicated job user cannot be found or created.
        """
        expose: list[str] = []
        if os.geteuid() == 0:
            user = ensure_job_user(job_user)
            expose = interpreter_paths(python)
            problem = _probe(user, expose, python)
            if problem:
                log.warning(
                    "job user %s cannot start %s (%s): training scripts run as root, "
                    "isolated only by their environment and limits",
                    user.name,
                    python,
                    problem,
                )
                user = JobUser("root", 0, 0, dedicated=False)
        else:
            me = pwd.getpwuid(os.geteuid())
            user = JobUser(me.pw_name, me.pw_uid, os.getegid(), dedicated=False)
            log.warning(
                "the trainer does not run as root, so training scripts run as its own user "
                "%s: they can read its files and /proc entries. Run it as root to give them "
                "a user of their own (%s).",
                me.pw_name,
                job_user,
            )
        cgroups = None
        if use_cgroups:
            try:
                cgroups = Cgroups.detect()
            except (OSError, ValueError) as err:
                log.warning(
                    "no usable cgroup (%s): job limits are rlimits (memory per process, "
                    "processes per user) and the process tree is tracked through /proc",
                    err,
                )
        subreaper = cgroups is None and _become_subreaper()
        sandbox = cls(user, limits, cgroups, subreaper, expose if user.dedicated else ())
        log.info(
            "training scripts run as %s, %s; limits: %s",
            user.name,
            f"in cgroup v{cgroups.version}" if cgroups else "with rlimits",
            limits.describe(),
        )
        return sandbox

    @property
    def tracks_descendants(self) -> bool:
        """True when job trees are found below this process (no cgroup; a subreaper)."""
        return self._subreaper

    def job_root(self, wanted: Path) -> Path:
        """Where job workspaces can live: `wanted`, unless the job user cannot reach it.

        Then a fresh folder in the system's temporary folder, with a warning: the user's
        workspace must be reachable, and changing the modes of the operator's folders is
        not the trainer's business.
        """
        wanted.mkdir(parents=True, exist_ok=True)
        if not self.user.dedicated or can_reach(wanted, self.user.uid, self.user.gid):
            return wanted
        fallback = Path(tempfile.mkdtemp(prefix="skmaker-jobs-"))
        fallback.chmod(0o711)
        self._temporary_roots.append(fallback)
        log.warning(
            "job user %s cannot reach %s (a parent folder is closed to other users); job "
            "workspaces go to %s instead",
            self.user.name,
            wanted,
            fallback,
        )
        return fallback

    def can_reach(self, path: Path) -> bool:
        """True when the job user can get to `path` (always, when it is the trainer's user)."""
        return not self.user.dedicated or can_reach(path, self.user.uid, self.user.gid)

    def close(self) -> None:
        """Removes the temporary job root `job_root` made, if any."""
        for root in self._temporary_roots:
            shutil.rmtree(root, ignore_errors=True)
        self._temporary_roots.clear()

    def give(self, path: Path) -> None:
        """Hands `path` (a workspace, a pip target) to the job user."""
        if self.user.dedicated:
            chown_tree(path, self.user.uid, self.user.gid)

    def take_back(self, path: Path) -> None:
        """Takes `path` back from the job user (a finished pip install joins the shared cache)."""
        if self.user.dedicated:
            chown_tree(path, os.geteuid(), os.getegid())

    def box(self, label: str) -> JobBox:
        """A box for one process tree; `label` names its cgroup."""
        return JobBox(self, f"skmaker-{label}-{os.getpid()}-{next(_box_ids)}")


class JobBox:
    """One process tree in the sandbox: `open`, start `wrap(command)`, `kill_all`, `close`."""

    def __init__(self, sandbox: Sandbox, name: str) -> None:
        self._sandbox = sandbox
        self._name = name
        self._cgroup: CgroupBox | None = None

    def open(self) -> None:
        """Creates the cgroup; on failure the rlimits alone apply, with a warning."""
        cgroups = self._sandbox.cgroups
        if cgroups is None:
            return
        try:
            self._cgroup = cgroups.create(self._name, self._sandbox.limits)
        except OSError as err:
            log.warning("cannot create cgroup %s (%s); rlimits only", self._name, err)

    def wrap(self, command: Sequence[str]) -> list[str]:
        """`command` started through `box_exec` with this box's plan."""
        limits = self._sandbox.limits
        rlimits: dict[str, list[int]] = {}
        if limits.max_open_files:
            rlimits["RLIMIT_NOFILE"] = [limits.max_open_files, limits.max_open_files]
        if limits.cpu_seconds:
            rlimits["RLIMIT_CPU"] = [limits.cpu_seconds, limits.cpu_seconds + 5]
        if self._cgroup is None:
            if limits.memory_bytes:
                rlimits["RLIMIT_AS"] = [limits.memory_bytes, limits.memory_bytes]
            if limits.max_processes and self._sandbox.user.dedicated:
                rlimits["RLIMIT_NPROC"] = [limits.max_processes, limits.max_processes]
        user = self._sandbox.user
        plan: dict[str, object] = {
            "cgroup_procs": self._cgroup.procs_files if self._cgroup else [],
            "rlimits": rlimits,
            "uid": user.uid if user.dedicated else None,
            "gid": user.gid if user.dedicated else None,
            "expose": self._sandbox.expose,
        }
        return wrapped(plan, command)

    def kill_all(self, main_pid: int) -> None:
        """Kills every process of the tree; `main_pid` (exited, not yet reaped) is left to its
        Popen."""
        if self._cgroup is not None:
            self._cgroup.kill_all()
        elif self._sandbox.tracks_descendants:
            kill_descendants(keep_unreaped=main_pid)

    def limit_reason(self, exit_code: int | None, stderr_tail: Sequence[str]) -> str:
        """Which limit ended the tree, as a failure reason's start; empty when none did."""
        limits = self._sandbox.limits
        memory = f"{limits.memory_bytes // 2**20} MiB"
        if self._cgroup is not None and self._cgroup.out_of_memory():
            return (
                f"{OUT_OF_MEMORY}: the job's processes used more than their memory limit of "
                f"{memory} and the kernel killed them (trainer --job-memory-mb)"
            )
        if self._cgroup is None and limits.memory_bytes:
            last = next((line for line in reversed(stderr_tail) if line.strip()), "")
            if last.startswith("MemoryError"):
                return (
                    f"{OUT_OF_MEMORY}: the script ran out of its memory limit of {memory} "
                    "(trainer --job-memory-mb)"
                )
        if limits.cpu_seconds and exit_code == 128 + signal.SIGXCPU:
            return (
                f"{CPU_TIME_EXCEEDED}: a process used more than {limits.cpu_seconds} s of "
                "CPU time (trainer --job-cpu-seconds)"
            )
        return ""

    def close(self) -> None:
        """Removes the cgroup (after `kill_all`)."""
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
