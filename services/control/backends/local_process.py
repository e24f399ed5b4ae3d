"""Local inference replica processes: how they run, starting one, reading its files, and
stopping the ones a previous control run left.

Files of replica R of endpoint E under the control's data folder (all but the log removed once
R is gone: when it exited, or at the control's start for replicas a previous run left):
  work/endpoints/E/R/            its work dir (model and code unpacked), emptied at each start
  work/endpoints/E/R.ports.json  its port file: {"grpc": p, "metrics": p[, "shared": p]}
  work/endpoints/E/R.failure.txt why it could not load its model (written by the replica)
  logs/endpoints/E/R.log         its stdout and stderr, appended across starts
  work/inference-deps/           requirements.txt installs, shared by every replica
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.control.backends.replica_runtime import ReplicaPython, SupervisionSettings
from services.runtime.auth import token_digest
from services.runtime.job_user import (
    JobUser,
    allowed_environment,
    as_user_command,
    hand_over,
)
from services.runtime.lifeline import child_lifeline
from services.runtime.settings import pass_secret

_LOG_TAIL_LINES = 12
_LOG_TAIL_BYTES = 16 * 1024


@dataclass(frozen=True)
class LocalBackendSettings:
    """How the local backend runs replicas (plain values taken from ControlSettings).

    Attributes:
        data_dir: the control's data folder; replicas work under `work/endpoints/` and log
            under `logs/endpoints/`.
        host: the loopback or host address replicas bind (own, metrics and shared ports).
        auth_token: the control's single token, given to replicas to call it with when
            there is no `issue_token`.
        caller_token_sha256: the digests (hex, comma-separated) of the people's tokens
            replicas accept from callers; empty: replicas take no token. Each replica gets
            its own token from `issue_token` for the control (through an inherited pipe,
            never argv or environment).
        environment: added to each replica's (TLS file paths, the metrics token).
        issue_token: issues a replica's own, model-scoped token.
        extra_args: extra flags for every replica.
        supervision: start, health and drain timings.
        python: the interpreter replicas run on (the script runtime's, which has the
            libraries handlers import) when `python_for` is not given.
        issue_token: issues a replica's own, model-scoped token.
        run_as: the user replicas run as (see `launch_replica`); None: the control's.
        python_for: the interpreter of each model's replicas (its own script runtime's).
    """

    data_dir: Path
    host: str = "127.0.0.1"
    auth_token: str = ""
    caller_token_sha256: str = ""
    extra_args: tuple[str, ...] = ()
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    python: str = sys.executable
    # (endpoint, replica id, model) -> the replica's own token; None gives it `auth_token`.
    issue_token: Callable[[str, str, str], str] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    # The user replicas run as when not the control's (a root control's job user).
    run_as: JobUser | None = None
    python_for: ReplicaPython | None = None

    def replica_tokens(self, endpoint: str, replica_id: str, model: str) -> tuple[str, str]:
        """(token the replica calls the control with, digests it checks its callers against)."""
        digests = self.caller_token_sha256 or (
            token_digest(self.auth_token) if self.auth_token else ""
        )
        if not digests:
            return "", ""
        own = self.issue_token(endpoint, replica_id, model) if self.issue_token else ""
        return own or self.auth_token, digests


@dataclass(frozen=True)
class ReplicaFiles:
    """The files of one replica under the control's data folder (see the module docstring)."""

    data_dir: Path
    endpoint_name: str
    replica_id: str

    @property
    def endpoint_dir(self) -> Path:
        """work/endpoints/<endpoint>/, shared by the endpoint's replicas."""
        return self.data_dir / "work" / "endpoints" / self.endpoint_name

    @property
    def work_dir(self) -> Path:
        """Where its model and code are unpacked."""
        return self.endpoint_dir / self.replica_id

    @property
    def port_file(self) -> Path:
        """Where it reports its ports."""
        return self.endpoint_dir / f"{self.replica_id}.ports.json"

    @property
    def failure_file(self) -> Path:
        """Where it says why it could not load its model."""
        return self.endpoint_dir / f"{self.replica_id}.failure.txt"

    def remove(self) -> None:
        """Removes its work dir, port file and failure file (its log stays), and the endpoint's
        folder once empty."""
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.port_file.unlink(missing_ok=True)
        self.failure_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: other replicas of the endpoint
            self.endpoint_dir.rmdir()


def remove_files_of_gone_replicas(data_dir: Path) -> int:
    """Removes the files of every replica under `data_dir` that no running process works in.

    A control that was killed left its replicas' work dirs; those still draining are kept
    (their `Leftover` removes them once gone).

    Returns:
        How many replicas' files were removed.
    """
    root = data_dir / "work" / "endpoints"
    if not root.is_dir():
        return 0
    in_use = _replica_work_dirs_in_use()
    removed = 0
    for endpoint_dir in sorted(root.iterdir()):
        if not endpoint_dir.is_dir():
            continue
        replica_ids = {
            entry.name.removesuffix(".ports.json").removesuffix(".failure.txt")
            for entry in endpoint_dir.iterdir()
            if not entry.name.startswith(".")
        }
        for replica_id in sorted(replica_ids):
            files = ReplicaFiles(data_dir, endpoint_dir.name, replica_id)
            if str(files.work_dir) not in in_use:
                files.remove()
                removed += 1
    return removed


def _replica_work_dirs_in_use() -> set[str]:
    """The `--work-dir` of every running `services.inference` process on this machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = [
                w.decode(errors="replace") for w in (entry / "cmdline").read_bytes().split(b"\0")
            ]
        except OSError:
            continue
        if "services.inference" in words:
            flags = dict(itertools.pairwise(words))
            if "--work-dir" in flags:
                found.add(flags["--work-dir"])
    return found


@dataclass(frozen=True)
class ReplicaLaunch:
    """What one replica process is started with."""

    data_dir: Path
    control_address: str
    endpoint_name: str
    model_name: str
    replica_id: str
    host: str
    shared_port: int
    shutdown_grace_s: float
    auth_token: str = ""
    caller_token_sha256: str = ""
    extra_args: Sequence[str] = ()
    python: str = sys.executable
    environment: Mapping[str, str] = field(default_factory=dict)
    run_as: JobUser | None = None


@dataclass(frozen=True)
class ReplicaProcess:
    """A started replica process and the files it reports through."""

    process: subprocess.Popen[bytes]
    files: ReplicaFiles
    log_path: Path
    log_offset: int  # where this start's output begins in the (appended) log

    @property
    def port_file(self) -> Path:
        """Where it reports its ports."""
        return self.files.port_file

    @property
    def failure_file(self) -> Path:
        """Where it says why it could not load its model."""
        return self.files.failure_file

    def read_ports(self) -> dict[str, int]:
        """The port file's ports; empty until the replica wrote it (replaced atomically)."""
        try:
            values = json.loads(self.port_file.read_text())
        except (OSError, ValueError):
            return {}
        return {key: value for key, value in values.items() if isinstance(value, int)}

    def failure_text(self) -> str:
        """The failure file's reason on one line; empty when the replica wrote none."""
        try:
            return " ".join(self.failure_file.read_text(errors="replace").split())
        except OSError:
            return ""

    def log_tail(self) -> str:
        """The last lines this start wrote to the log, joined with ' | '."""
        try:
            with self.log_path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(self.log_offset, size - _LOG_TAIL_BYTES))
                text = handle.read().decode(errors="replace")
        except OSError:
            return f"(cannot read {self.log_path})"
        lines = [line for line in text.splitlines() if line.strip()][-_LOG_TAIL_LINES:]
        return " | ".join(lines) or f"(nothing; see {self.log_path})"


def launch_replica(launch: ReplicaLaunch) -> ReplicaProcess:
    """Starts `python -m services.inference` for `launch` in its own session.

    With `run_as` it runs as that user, with an allow-listed environment (`allowed_environment`,
    `HOME` in its work dir), owning its work dir, the endpoint's folder (its port and failure
    files) and the shared requirements folder, and nothing else of the control's.

    Its own session: a signal to the control's process group (Ctrl-C) must not reach it, since
    the control drains its replicas itself. It holds the control's lifeline
    (`services.runtime.lifeline`): when the control dies, even by SIGKILL, it drains and exits;
    the next control starts the endpoint's replicas afresh (and stops any left still draining).
    """
    files = ReplicaFiles(launch.data_dir, launch.endpoint_name, launch.replica_id)
    work_dir = files.work_dir
    log_path = (
        launch.data_dir / "logs" / "endpoints" / launch.endpoint_name / (f"{launch.replica_id}.log")
    )
    deps_dir = launch.data_dir / "work" / "inference-deps"
    # A previous run may have used this id; its files must not be read as this start's.
    files.remove()
    work_dir.mkdir(parents=True, exist_ok=True)
    if launch.run_as is not None:
        # It writes its work dir, its port and failure files, and requirements installs.
        for folder in (files.endpoint_dir, work_dir, deps_dir):
            hand_over(folder, launch.run_as)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        launch.python,
        "-m",
        "services.inference",
        "--control",
        launch.control_address,
        "--endpoint-name",
        launch.endpoint_name,
        "--model-name",
        launch.model_name,
        "--replica-id",
        launch.replica_id,
        "--work-dir",
        str(work_dir),
        "--deps-dir",
        str(deps_dir),
        "--host",
        launch.host,
        "--shared-port",
        str(launch.shared_port),
        "--grpc-port=0",
        "--metrics-port=0",
        "--shutdown-grace-s",
        str(launch.shutdown_grace_s),
        "--port-file",
        str(files.port_file),
        "--failure-file",
        str(files.failure_file),
        *launch.extra_args,
    ]
    lifeline_env, lifeline_fds = child_lifeline()
    env = {**os.environ, **launch.environment, "PYTHONUNBUFFERED": "1", **lifeline_env}
    command = argv
    if launch.run_as is not None:
        # The TLS file paths and metrics token survive the allow-list (they are skmaker's own).
        env = {**allowed_environment(env), **launch.environment, "HOME": str(work_dir)}
        command = as_user_command(launch.run_as, argv)
    token_fd = -1
    if launch.auth_token:
        # Through an inherited pipe the replica reads at start, never argv or the environment:
        # the replica imports the model's code, which could read both from /proc/self.
        token_fd = pass_secret(launch.auth_token)
        env["SKMAKER_INFERENCE_AUTH_TOKEN_FD"] = str(token_fd)
    if launch.caller_token_sha256:
        env["SKMAKER_INFERENCE_AUTH_TOKEN_SHA256"] = launch.caller_token_sha256
    try:
        with log_path.open("ab") as log_file:
            log_offset = log_file.tell()
            # The child keeps its own copy of the descriptor; ours closes with the block.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                pass_fds=(*lifeline_fds, *((token_fd,) if token_fd >= 0 else ())),
            )
    finally:
        if token_fd >= 0:
            os.close(token_fd)
    return ReplicaProcess(process, files, log_path, log_offset)


def runs_replica(pid: int, endpoint_name: str, replica_id: str) -> bool:
    """True when `pid` runs `services.inference` for this endpoint and replica id.

    Guards against pid reuse before a restarted control signals a recorded pid.
    """
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [arg.decode(errors="replace") for arg in args]
    if "services.inference" not in words:
        return False
    flags = dict(itertools.pairwise(words))
    return flags.get("--endpoint-name") == endpoint_name and flags.get("--replica-id") == replica_id


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan its new parent has yet to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def send_signal(pid: int, signum: signal.Signals) -> None:
    """Signals `pid`; a process already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass
class Leftover:
    """A replica process a previous control run left running, being stopped by this one."""

    replica_id: str
    pid: int
    kill_at: float  # monotonic time after which it gets SIGKILL
    files: ReplicaFiles | None = None  # removed once it is gone
    killed: bool = False

    @property
    def label(self) -> str:
        """How events name it."""
        return f"pid {self.pid}"

    def is_gone(self) -> bool:
        """True once it exited (its files then removed); SIGKILLs it (once) when it overran
        `kill_at`."""
        if not is_alive(self.pid):
            if self.files is not None:
                self.files.remove()
            return True
        if time.monotonic() >= self.kill_at and not self.killed:
            send_signal(self.pid, signal.SIGKILL)
            self.killed = True
        return False


def stop_leftover(
    endpoint_name: str,
    replica_id: str,
    handle: str,
    kill_after_s: float,
    files: ReplicaFiles | None = None,
) -> Leftover | None:
    """SIGTERMs (drains) a recorded replica that still runs; None when it is already gone.

    Its `files` are removed once it is gone (at once when it is).

    Args:
        endpoint_name: the endpoint it served.
        replica_id: its recorded id.
        handle: its recorded pid, as text.
        kill_after_s: how long it may drain before SIGKILL.
    """
    pid = int(handle) if handle.isdigit() else 0
    if not pid or not runs_replica(pid, endpoint_name, replica_id):
        if files is not None:
            files.remove()
        return None  # exited, or the pid now belongs to another program
    send_signal(pid, signal.SIGTERM)
    return Leftover(replica_id, pid, time.monotonic() + kill_after_s, files)
