"""Local inference replica processes: how they run, starting one, reading its files, and
stopping the ones a previous control run left.

Files of replica R of endpoint E under the control's data folder:
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.control.backends.replica_runtime import ReplicaPython, SupervisionSettings
from services.runtime.auth import token_digest
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
        auth_token: callers of the replicas must present it; each replica gets only its
            digest, and its own token from `issue_token` for the control (through an
            inherited pipe, never argv or environment).
        issue_token: issues a replica's own, model-scoped token.
        extra_args: extra flags for every replica.
        supervision: start, health and drain timings.
        python: the interpreter replicas run on (the script runtime's, which has the
            libraries handlers import) when `python_for` is not given.
        python_for: the interpreter of each model's replicas (its own script runtime's).
    """

    data_dir: Path
    host: str = "127.0.0.1"
    auth_token: str = ""
    extra_args: tuple[str, ...] = ()
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    python: str = sys.executable
    # (endpoint, replica id, model) -> the replica's own token; None gives it `auth_token`.
    issue_token: Callable[[str, str, str], str] | None = None
    python_for: ReplicaPython | None = None

    def replica_tokens(self, endpoint: str, replica_id: str, model: str) -> tuple[str, str]:
        """(token the replica calls the control with, digest it checks its callers against)."""
        if not self.auth_token:
            return "", ""
        own = self.issue_token(endpoint, replica_id, model) if self.issue_token else ""
        return own or self.auth_token, token_digest(self.auth_token)


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


@dataclass(frozen=True)
class ReplicaProcess:
    """A started replica process and the files it reports through."""

    process: subprocess.Popen[bytes]
    port_file: Path
    failure_file: Path
    log_path: Path
    log_offset: int  # where this start's output begins in the (appended) log

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

    Its own session: a signal to the control's process group (Ctrl-C) must not reach it, since
    the control drains its replicas itself, and a replica must outlive a control crash so the
    next control finds and stops it deliberately.
    """
    endpoint_dir = launch.data_dir / "work" / "endpoints" / launch.endpoint_name
    work_dir = endpoint_dir / launch.replica_id
    port_file = endpoint_dir / f"{launch.replica_id}.ports.json"
    failure_file = endpoint_dir / f"{launch.replica_id}.failure.txt"
    log_path = (
        launch.data_dir / "logs" / "endpoints" / launch.endpoint_name / (f"{launch.replica_id}.log")
    )
    # A previous run may have used this id; its files must not be read as this start's.
    shutil.rmtree(work_dir, ignore_errors=True)
    port_file.unlink(missing_ok=True)
    failure_file.unlink(missing_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
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
        str(launch.data_dir / "work" / "inference-deps"),
        "--host",
        launch.host,
        "--shared-port",
        str(launch.shared_port),
        "--grpc-port=0",
        "--metrics-port=0",
        "--shutdown-grace-s",
        str(launch.shutdown_grace_s),
        "--port-file",
        str(port_file),
        "--failure-file",
        str(failure_file),
        *launch.extra_args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                pass_fds=(token_fd,) if token_fd >= 0 else (),
            )
    finally:
        if token_fd >= 0:
            os.close(token_fd)
    return ReplicaProcess(process, port_file, failure_file, log_path, log_offset)


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
    killed: bool = False

    @property
    def label(self) -> str:
        """How events name it."""
        return f"pid {self.pid}"

    def is_gone(self) -> bool:
        """True once it exited; SIGKILLs it (once) when it overran `kill_at`."""
        if not is_alive(self.pid):
            return True
        if time.monotonic() >= self.kill_at and not self.killed:
            send_signal(self.pid, signal.SIGKILL)
            self.killed = True
        return False


def stop_leftover(
    endpoint_name: str, replica_id: str, handle: str, kill_after_s: float
) -> Leftover | None:
    """SIGTERMs (drains) a recorded replica that still runs; None when it is already gone.

    Args:
        endpoint_name: the endpoint it served.
        replica_id: its recorded id.
        handle: its recorded pid, as text.
        kill_after_s: how long it may drain before SIGKILL.
    """
    pid = int(handle) if handle.isdigit() else 0
    if not pid or not runs_replica(pid, endpoint_name, replica_id):
        return None  # exited, or the pid now belongs to another program
    send_signal(pid, signal.SIGTERM)
    return Leftover(replica_id, pid, time.monotonic() + kill_after_s)
