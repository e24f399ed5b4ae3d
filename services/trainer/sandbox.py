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

import itertools
import logging
import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from services.runtime.job_user import (
    JobUser,
    can_reach,
    chown_tree,
    ensure_job_user,
    interpreter_paths,
    is_inside_without_links,
    probe_box,
    wrapped,
)
from services.trainer.cgroups import CGROUP_ROOT, CgroupBox, Cgroups
from services.trainer.job_limits import JobLimits, default_memory_bytes
from services.trainer.process_tree import become_subreaper, descendants, kill_descendants

# Re-exported: the trainer and its tests import these from here.
__all__ = [
    "CGROUP_ROOT",
    "CPU_TIME_EXCEEDED",
    "DEFAULT_JOB_USER",
    "OUT_OF_MEMORY",
    "CgroupBox",
    "Cgroups",
    "JobBox",
    "JobLimits",
    "JobUser",
    "Sandbox",
    "can_reach",
    "chown_tree",
    "default_memory_bytes",
    "descendants",
    "ensure_job_user",
    "interpreter_paths",
    "is_inside_without_links",
    "kill_descendants",
    "wrapped",
]

log = logging.getLogger(__name__)

DEFAULT_JOB_USER = "skmaker-job"
_box_ids = itertools.count(1)

OUT_OF_MEMORY = "OutOfMemory"
CPU_TIME_EXCEEDED = "CpuTimeLimitExceeded"


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
            problem = probe_box(user, expose, python)
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
        subreaper = cgroups is None and become_subreaper()
        sandbox = cls(user, limits, cgroups, subreaper, expose if user.dedicated else ())
        log.info(
            "training scripts run as %s, %s; limits: %s",
            user.name,
            f"in cgroup v{cgroups.version}" if cgroups else "with rlimits",
            limits.describe(),
        )
        return sandbox

    def allow_python(self, python: str) -> None:
        """Lets the job user start `python` too (another script runtime's interpreter)."""
        if not self.user.dedicated:
            return
        for path in interpreter_paths(python):
            if path not in self.expose:
                self.expose.append(path)

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
