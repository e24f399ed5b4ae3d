"""Helpers of the client tests that run against a real control: code folders, bundles, restarts.

`RestartableControl` is a control a test may kill -9 and start again on the same port with the
same data directory, as a crash and a supervisor's restart would.
"""

from __future__ import annotations

import os
import signal
import socket
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from skmaker import Session
from tests.harness import ServiceProcess, run_service


def write_code(folder: Path, files: Mapping[str, str]) -> Path:
    """Writes dedented `files` (name -> source) into `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return folder


def upload_bundle(
    session: Session, scratch: Path, files: Mapping[str, str], key_prefix: str
) -> str:
    """Packs `files` into sourcedir.tar.gz, uploads it under `key_prefix`; returns its URI."""
    code = write_code(scratch / "bundle-code", files)
    archive = scratch / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in files:
            tar.add(code / name, arcname=name)
    return session.upload_data(archive, key_prefix=key_prefix)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Polls `condition` until it holds; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        time.sleep(0.05)


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port where nothing listens (bound, not listening, so no one else takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class RestartableControl:
    """A control that a test kills -9 and restarts on the same port with the same data.

    Args:
        workdir: folder for the data directory and each run's logs.
        args: flags of every run (the data directory is added).
    """

    def __init__(
        self, workdir: Path, args: Sequence[str] = (), *, own_trainer: bool = False
    ) -> None:
        self._workdir = workdir
        self._args = [*args, f"--data-dir={workdir / 'data'}"]
        self.runs = [run_service("control", workdir / "run-0", self._args)]
        self.port = self.runs[0].grpc_port
        # A trainer of its own (not a --local child, which stops with the control): it runs on
        # across a kill -9 of the control and reconnects to the restarted one.
        self.trainer = (
            run_service(
                "trainer",
                workdir / "trainer",
                ["--control", self.address, "--work-dir", str(workdir / "trainer-work")],
            )
            if own_trainer
            else None
        )
        self._restarter: threading.Thread | None = None
        self._restart_error: BaseException | None = None
        self._orphan_groups: list[int] = []

    @property
    def current(self) -> ServiceProcess:
        """The latest run."""
        return self.runs[-1]

    @property
    def address(self) -> str:
        """127.0.0.1:port, the same for every run."""
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """kill -9 of the control and its children."""
        self.current.kill()

    def kill_control_only(self) -> None:
        """kill -9 of the control alone: its --local children stop by themselves (lifeline),
        a trainer of its own (`own_trainer`) lives on and reconnects after a restart."""
        self._orphan_groups.append(self.current.process.pid)
        self.current.kill_leader_only()

    def restart(self) -> None:
        """Starts the control again on the same port and data; returns once it is SERVING."""
        run = run_service(
            "control",
            self._workdir / f"run-{len(self.runs)}",
            [*self._args, f"--port={self.port}"],
        )
        self.runs.append(run)

    def restart_in_background(self, delay_s: float = 0.0) -> None:
        """Restarts from a thread after `delay_s`, while the test's call is in flight."""

        def restart() -> None:
            time.sleep(delay_s)
            try:
                self.restart()
            except BaseException as err:  # re-raised by join_restart in the test's thread
                self._restart_error = err

        self._restarter = threading.Thread(target=restart, name="restart-control")
        self._restarter.start()

    def join_restart(self, timeout_s: float = 60.0) -> None:
        """Waits for a background restart; raises what it raised."""
        if self._restarter is not None:
            self._restarter.join(timeout_s)
            assert not self._restarter.is_alive(), f"restart not done in {timeout_s}s"
            self._restarter = None
        if self._restart_error is not None:
            raise self._restart_error

    def stop(self) -> None:
        """SIGTERM to the latest run (asserting a clean exit) and to orphaned trainers."""
        try:
            self.join_restart()
        finally:
            if self.current.process.poll() is None:
                self.current.stop()
            if self.trainer is not None:
                self.trainer.stop()
            for group in self._orphan_groups:
                _terminate_group(group)


def _terminate_group(group: int, timeout_s: float = 20.0) -> None:
    """SIGTERM to a process group we no longer parent; waits until it is gone, then SIGKILL."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError(f"process group {group} did not exit on SIGTERM")
