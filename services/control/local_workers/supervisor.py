"""Supervisor of worker processes the control runs as its children (`--local`).

Each `WorkerSpec` names one child: its argv and the log file its stdout and stderr are appended
to. Children stay in the control's process group, so a signal to the group (Ctrl-C, `kill --
-pgid`) reaches them too, and hold its lifeline (`services.runtime.lifeline`), so they stop
when the control dies, even by SIGKILL. A watcher thread restarts a child that exits while
the supervisor is running, after a backoff that doubles while the child keeps dying young.
`stop()` sends SIGTERM to every child, waits, then SIGKILLs the stragglers. Nothing here knows
what a child does: trainers and batch workers (`add` and `remove` as jobs need them).

With a pid file, the children's process ids (and start times, which tell a reused pid) are
kept there; `start()` first stops whatever a previous run recorded that still runs (a child
still draining after that run was killed), so a restarted control never runs more children
than it was told to.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.runtime.components import StepLoop
from services.runtime.job_user import (
    JobUser,
    allowed_environment,
    as_user_command,
    hand_over,
)
from services.runtime.lifeline import child_lifeline
from services.runtime.settings import pass_secret

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """One child process to keep running."""

    name: str
    argv: tuple[str, ...]
    log_path: Path
    cwd: Path | None = None
    # Added to the control's own environment (which children inherit).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # A bearer token for the child, handed over through an inherited pipe whose descriptor
    # number goes in `token_fd_env` (e.g. SKMAKER_TRAINER_AUTH_TOKEN_FD): never in argv or the
    # environment, where the child's user code could read it from /proc.
    token: str = ""
    token_fd_env: str = ""
    # Another user to run as (a root control's job user; argv[0] is a python), through
    # `as_user_command`, with an allow-listed environment (`allowed_environment`) and `HOME` in
    # the first of `owned_dirs`, which are given to it.
    run_as: JobUser | None = None
    owned_dirs: tuple[Path, ...] = ()


@dataclass
class _Child:
    spec: WorkerSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = 0.0
    restart_at: float | None = None


class WorkerSupervisor:
    """Starts children, restarts the ones that die, and stops them all on shutdown."""

    def __init__(
        self,
        specs: Sequence[WorkerSpec] = (),
        *,
        restart_backoff_s: float = 1.0,
        max_restart_backoff_s: float = 30.0,
        stable_after_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        watch_interval_s: float = 0.2,
        pid_file: Path | None = None,
    ) -> None:
        """Prepares the children; nothing starts before `start()`.

        Args:
            specs: the children to run.
            restart_backoff_s: wait before restarting a child that exited; doubles (up to
                `max_restart_backoff_s`) while it keeps exiting within `stable_after_s`.
            max_restart_backoff_s: the longest wait before a restart.
            stable_after_s: a child that ran this long gets the initial backoff again.
            stop_timeout_s: how long `stop()` waits after SIGTERM before SIGKILL.
            watch_interval_s: how often the watcher looks at the children.
            pid_file: where the children's process ids are kept across runs (None: nowhere).
        """
        self._children = {spec.name: _Child(spec) for spec in specs}
        self._restart_backoff_s = restart_backoff_s
        self._max_restart_backoff_s = max_restart_backoff_s
        self._stable_after_s = stable_after_s
        self._stop_timeout_s = stop_timeout_s
        self._pid_file = pid_file
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = False
        # Restarts children that exited, every interval; the first pass waits one.
        self._watcher = StepLoop(
            "worker-supervisor", self.step, watch_interval_s, step_at_start=False
        )

    def add(self, spec: WorkerSpec) -> None:
        """Adds a child; it starts at once when the supervisor is running.

        Raises:
            ValueError: a child with this name exists.
        """
        with self._lock:
            if spec.name in self._children:
                raise ValueError(f"worker {spec.name!r} exists already")
            child = _Child(spec)
            self._children[spec.name] = child
            if self._started and not self._stopping.is_set():
                self._spawn(child)
                self._record_pids()

    def start(self) -> None:
        """Stops the children a previous run left (see the pid file), then starts every child
        and the watcher thread."""
        self.stop_leftovers()
        with self._lock:
            for child in self._children.values():
                self._spawn(child)
            self._started = True
            self._record_pids()
        self._watcher.start()

    def stop_leftovers(self) -> int:
        """SIGTERMs every process the pid file names that still runs (the same process: same
        start time), SIGKILLs those still there after `stop_timeout_s`.

        Returns:
            How many there were.
        """
        if self._pid_file is None:
            return 0
        try:
            recorded = json.loads(self._pid_file.read_text())
        except (OSError, ValueError):
            return 0
        leftovers = [
            (str(name), int(entry["pid"]))
            for name, entry in (recorded.items() if isinstance(recorded, dict) else [])
            if isinstance(entry, dict)
            and isinstance(entry.get("pid"), int)
            and start_ticks(int(entry["pid"])) == entry.get("start_ticks")
        ]
        for name, pid in leftovers:
            log.warning("%s (pid %d) of a previous run still runs; stopping it", name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        while any(start_ticks(pid) is not None for _, pid in leftovers):
            if time.monotonic() >= deadline:
                for _, pid in leftovers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        return len(leftovers)

    def _record_pids(self) -> None:
        """Writes the running children's pids and start times to the pid file (lock held)."""
        if self._pid_file is None:
            return
        entries = {}
        for name, child in self._children.items():
            if child.process is not None and child.process.poll() is None:
                ticks = start_ticks(child.process.pid)
                if ticks is not None:
                    entries[name] = {"pid": child.process.pid, "start_ticks": ticks}
        self._pid_file.parent.mkdir(parents=True, exist_ok=True)
        scratch = self._pid_file.with_name(self._pid_file.name + ".tmp")
        scratch.write_text(json.dumps(entries))
        os.replace(scratch, self._pid_file)

    def pids(self) -> dict[str, int]:
        """Process id of each running child, by name."""
        with self._lock:
            return {
                name: child.process.pid
                for name, child in self._children.items()
                if child.process is not None and child.process.poll() is None
            }

    def names(self) -> list[str]:
        """Names of the children the supervisor keeps running, sorted."""
        with self._lock:
            return sorted(self._children)

    def remove(self, name: str) -> bool:
        """Stops one child for good: SIGTERM, up to `stop_timeout_s`, then SIGKILL.

        The child is forgotten first, so the watcher does not restart it. Blocks while the
        child drains: call it outside RPC handlers and transactions.

        Returns:
            False when no child has this name.
        """
        with self._lock:
            child = self._children.pop(name, None)
            self._record_pids()
        if child is None:
            return False
        process = child.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs; killing it", name, self._stop_timeout_s)
                process.kill()
                process.wait()
        log.info("stopped %s", name)
        return True

    def begin_shutdown(self) -> None:
        """No more restarts: children exiting from now on are expected to."""
        self._stopping.set()

    def stop(self) -> None:
        """SIGTERM to every child, up to `stop_timeout_s` for them to exit, then SIGKILL."""
        self._stopping.set()
        self._watcher.stop(timeout_s=5.0)
        with self._lock:
            running = [
                child.process
                for child in self._children.values()
                if child.process is not None and child.process.poll() is None
            ]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "worker pid %d ignored SIGTERM for %.0fs; killing it",
                    process.pid,
                    self._stop_timeout_s,
                )
                process.kill()
                process.wait()
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)
        log.info("stopped %d local worker(s)", len(running))

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        if spec.cwd is not None:
            spec.cwd.mkdir(parents=True, exist_ok=True)
        lifeline_env, lifeline_fds = child_lifeline()
        env = {**os.environ, **spec.extra_env, **lifeline_env}
        command = list(spec.argv)
        if spec.run_as is not None:
            for folder in spec.owned_dirs:
                hand_over(folder, spec.run_as)
            env = allowed_environment(env)
            if spec.owned_dirs:
                env["HOME"] = str(spec.owned_dirs[0])
            command = as_user_command(spec.run_as, spec.argv)
        token_fd = -1
        if spec.token:
            token_fd = pass_secret(spec.token)
            env[spec.token_fd_env] = str(token_fd)
        try:
            with spec.log_path.open("ab") as log_file:
                # The child keeps its own copy of the descriptor; ours closes with the block.
                child.process = subprocess.Popen(
                    command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=env,
                    pass_fds=(*lifeline_fds, *((token_fd,) if token_fd >= 0 else ())),
                )
        finally:
            if token_fd >= 0:
                os.close(token_fd)
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started %s (pid %d), logging to %s", spec.name, child.process.pid, spec.log_path)

    def step(self) -> None:
        """One pass of the watcher: restarts (with backoff) every child that exited."""
        if self._stopping.is_set():
            return
        with self._lock:
            for child in self._children.values():
                self._check(child)

    def _check(self, child: _Child) -> None:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at and not self._stopping.is_set():
                self._spawn(child)
                self._record_pids()
            return
        if child.process is None or child.process.poll() is None:
            return
        ran_for = now - child.started_at
        if ran_for >= self._stable_after_s or child.backoff_s == 0:
            child.backoff_s = self._restart_backoff_s
        else:
            child.backoff_s = min(child.backoff_s * 2, self._max_restart_backoff_s)
        child.restart_at = now + child.backoff_s
        log.warning(
            "%s (pid %d) exited with %s after %.1fs; restarting in %.1fs (see %s)",
            child.spec.name,
            child.process.pid,
            child.process.returncode,
            ran_for,
            child.backoff_s,
            child.spec.log_path,
        )


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot), or None when it does not run.

    With its pid it names one process: a pid reused by another program has another start time.
    A zombie counts as not running.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])  # field 22 of stat; the two before the parenthesis are cut
