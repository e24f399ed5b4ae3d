"""What the benchmarks share: an embedded control on a free port, up once it is SERVING.

Imported as `harness` when a benchmark runs as a script (`python benchmarks/batch.py`) and as
`benchmarks.harness` when tests import a benchmark's helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_DEADLINE_S = 60.0
STOP_DEADLINE_S = 60.0


def wait_until_serving(
    process: subprocess.Popen[bytes], port_file: Path, name: str = "control"
) -> str:
    """The address of a service once its port file exists and its health says SERVING.

    Raises:
        SystemExit: the process exited first, or READY_DEADLINE_S passed.
    """
    end = time.monotonic() + READY_DEADLINE_S
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"{name} did not start (exit code {process.poll()})")
        time.sleep(0.05)
    address = f"127.0.0.1:{json.loads(port_file.read_text())['grpc']}"
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            with contextlib.suppress(grpc.RpcError):
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return address
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode} before SERVING")
            time.sleep(0.05)
    raise SystemExit(f"{name} at {address} not SERVING within {READY_DEADLINE_S:.0f}s")


@contextlib.contextmanager
def embedded_control(data_dir: Path, *flags: str) -> Iterator[str]:
    """`python -m services.control --local [flags]` on a free port, its log in `data_dir`;
    yields its address, then stops it with SIGTERM and requires a clean exit."""
    port_file = data_dir / "ports.json"
    command = [
        sys.executable, "-m", "services.control", "--local", *flags,
        "--port", "0", "--port-file", str(port_file), "--data-dir", str(data_dir),
    ]  # fmt: skip
    with (data_dir / "control.log").open("ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield wait_until_serving(process, port_file)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.returncode != 0:
        raise SystemExit(f"control exited with {process.returncode} after SIGTERM")
