"""Starts real skmaker processes for integration tests and stops them as production would.

`run_service("control", tmp_path, "--local")` starts `python -m services.control` on port 0
with a port file, waits for the port file and then for grpc.health.v1 SERVING under a deadline
(failing fast with the child's stderr if it exits), and returns a handle. `stop()` sends SIGTERM
to the process group and asserts a clean exit 0; `kill()` is the kill -9 of chaos tests.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent

# Short reconnect backoff: a restarted server is reached in milliseconds, not a second.
FAST_RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
)


@dataclass
class ServiceProcess:
    """A running service process and where to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    grpc_port: int
    metrics_port: int
    stdout_path: Path
    stderr_path: Path
    port_file: Path
    _channels: list[grpc.Channel] = field(default_factory=list)
    # TLS credentials of `channel()` when the service serves TLS; None: plaintext.
    credentials: grpc.ChannelCredentials | None = None

    @property
    def address(self) -> str:
        """127.0.0.1:port of the gRPC server."""
        return f"127.0.0.1:{self.grpc_port}"

    def channel(self) -> grpc.Channel:
        """A channel to the service, closed when the service is stopped."""
        channel = _open(self.address, self.credentials)
        self._channels.append(channel)
        return channel

    def logs(self) -> str:
        """stdout and stderr so far, for assertion messages."""
        return (
            f"--- {self.name} stdout ---\n{self.stdout_path.read_text(errors='replace')}\n"
            f"--- {self.name} stderr ---\n{self.stderr_path.read_text(errors='replace')}"
        )

    def _close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM to the process group; asserts the process exits 0 within `timeout_s`."""
        self._close_channels()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                message = f"{self.name} did not exit on SIGTERM\n{self.logs()}"
                raise AssertionError(message) from None
        code = self.process.returncode
        assert code == 0, f"{self.name} exited {code} after SIGTERM\n{self.logs()}"
        return code

    def kill(self) -> None:
        """kill -9 of the whole process group (the service and its children)."""
        self._close_channels()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill_leader_only(self) -> None:
        """kill -9 of the service process alone; its children live on (crash of one process)."""
        self._close_channels()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def script_visible_dir() -> Path:
    """A fresh folder a training script can read and write, removed when the tests end.

    A trainer running as root runs scripts as its job user, to whom pytest's `tmp_path`
    (under a 0700 folder) is closed; files a test and its script share go here instead.
    """
    folder = Path(tempfile.mkdtemp(prefix="skmaker-test-"))
    folder.chmod(0o777)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def is_running(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie (from /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name sits in parentheses and may hold spaces; the state letter follows it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _open(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(address, options=FAST_RECONNECT_OPTIONS)
    return grpc.secure_channel(address, credentials, options=FAST_RECONNECT_OPTIONS)


def wait_for_serving(
    address: str,
    deadline_s: float,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Polls grpc.health.v1 Check until SERVING or the deadline passes (then raises)."""
    end = time.monotonic() + deadline_s
    last_error = "no answer"
    with _open(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.RpcError as err:
                last_error = f"{err.code().name}: {err.details()}"
            time.sleep(0.05)
    raise TimeoutError(f"{address} not SERVING within {deadline_s}s: {last_error}")


def run_service(
    name: str,
    workdir: Path,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    deadline_s: float = 60.0,
    label: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> ServiceProcess:
    """Starts `python -m services.<name>` on port 0 and returns once it is SERVING.

    Args:
        name: service package name (control, trainer, inference, batch).
        workdir: folder for the port file and the captured stdout/stderr.
        args: extra command-line flags.
        env: extra environment variables.
        deadline_s: how long the process may take to become SERVING.
        label: file-name stem for logs and port file (default: name).
        credentials: TLS credentials to check its health with (it serves TLS); None: plain.
    """
    label = label or name
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / f"{label}.port.json"
    port_file.unlink(missing_ok=True)
    stdout_path = workdir / f"{label}.stdout.log"
    stderr_path = workdir / f"{label}.stderr.log"
    command = [
        sys.executable,
        "-m",
        f"services.{name}",
        "--grpc-port=0",
        "--metrics-port=0",
        f"--port-file={port_file}",
        *args,
    ]
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=child_env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    handle = ServiceProcess(
        name=label,
        process=process,
        grpc_port=0,
        metrics_port=0,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        port_file=port_file,
        credentials=credentials,
    )
    end = time.monotonic() + deadline_s
    while not port_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited with {process.returncode}\n{handle.logs()}")
        if time.monotonic() > end:
            handle.kill()
            raise TimeoutError(f"{label} wrote no port file in {deadline_s}s\n{handle.logs()}")
        time.sleep(0.02)
    ports = json.loads(port_file.read_text())
    handle.grpc_port, handle.metrics_port = int(ports["grpc"]), int(ports["metrics"])
    try:
        wait_for_serving(handle.address, max(1.0, end - time.monotonic()), credentials=credentials)
    except TimeoutError as err:
        alive = process.poll() is None
        handle.kill()
        raise TimeoutError(f"{err} (process alive: {alive})\n{handle.logs()}") from None
    return handle


def source_bundle(members: dict[str, bytes]) -> bytes:
    """A gzipped tar of `members` (name -> bytes), as the client packs a `source_dir`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
