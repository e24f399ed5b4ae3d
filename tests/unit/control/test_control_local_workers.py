"""WorkerSupervisor: children start, crashed ones restart, stop ends them all."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from services.control.local_workers.supervisor import WorkerSpec, WorkerSupervisor

SLEEPER = (sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)")


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_children_start_restart_after_a_crash_and_stop(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "w-0.log"
    supervisor = WorkerSupervisor(
        [WorkerSpec("w-0", SLEEPER, log_path)], restart_backoff_s=0.05, watch_interval_s=0.02
    )
    supervisor.start()
    try:
        _wait_for(lambda: log_path.exists() and "up" in log_path.read_text())
        first_pid = supervisor.pids()["w-0"]
        os.kill(first_pid, signal.SIGKILL)
        _wait_for(lambda: supervisor.pids().get("w-0") not in (None, first_pid))
        _wait_for(lambda: log_path.read_text().count("up") == 2)
    finally:
        supervisor.stop()
    assert supervisor.pids() == {}


def test_no_restart_once_shutdown_began(tmp_path: Path) -> None:
    log_path = tmp_path / "w.log"
    supervisor = WorkerSupervisor(
        [WorkerSpec("w", (sys.executable, "-c", "print('ran', flush=True)"), log_path)],
        restart_backoff_s=0.0,
        watch_interval_s=3600.0,  # the test runs the watcher's passes itself
    )
    supervisor.begin_shutdown()
    supervisor.start()
    _wait_for(lambda: supervisor.pids() == {} and "ran" in log_path.read_text())
    for _ in range(3):
        supervisor.step()  # two passes restart an exited child, were restarts allowed
    assert supervisor.pids() == {}  # a restarted interpreter would still be starting here
    supervisor.stop()
    assert log_path.read_text().count("ran") == 1


def test_sigterm_ignoring_child_is_killed(tmp_path: Path) -> None:
    stubborn = (
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)",
    )
    log_path = tmp_path / "s.log"
    supervisor = WorkerSupervisor([WorkerSpec("s", stubborn, log_path)], stop_timeout_s=0.5)
    supervisor.start()
    _wait_for(lambda: log_path.exists() and "up" in log_path.read_text())
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 5
    assert supervisor.pids() == {}


def test_extra_env_reaches_the_child(tmp_path: Path) -> None:
    log_path = tmp_path / "e.log"
    printer = (sys.executable, "-c", "import os; print(os.environ['SKMAKER_X'], flush=True)")
    supervisor = WorkerSupervisor(
        [WorkerSpec("e", printer, log_path, extra_env={"SKMAKER_X": "hello"})],
        restart_backoff_s=60,
    )
    supervisor.start()
    try:
        _wait_for(lambda: log_path.exists() and "hello" in log_path.read_text())
    finally:
        supervisor.stop()


def test_a_restarted_supervisor_stops_the_children_a_killed_run_left(tmp_path: Path) -> None:
    pid_file = tmp_path / "work" / "local-workers.json"
    # The children ignore SIGTERM, like a worker still draining: the new run must SIGKILL them.
    stubborn = (
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)",
    )
    specs = [WorkerSpec(f"w-{i}", stubborn, tmp_path / f"w-{i}.log") for i in (0, 1)]
    first = WorkerSupervisor(specs, pid_file=pid_file, watch_interval_s=3600.0)
    first.start()
    first.begin_shutdown()  # a killed run restarts nothing and stops nothing
    # Up means the SIGTERM handler is in place.
    _wait_for(lambda: all(_says_up(spec.log_path) for spec in specs))
    left = set(first.pids().values())
    assert len(left) == 2
    second = WorkerSupervisor(specs, pid_file=pid_file, watch_interval_s=3600.0, stop_timeout_s=0.5)
    second.start()
    try:
        for pid in left:
            _wait_for(lambda pid=pid: not _runs(pid))  # type: ignore[misc]
        assert len(second.pids()) == 2
        assert not left & set(second.pids().values())
    finally:
        second.stop()
    assert not pid_file.exists()


def _runs(pid: int) -> bool:
    from services.control.local_workers.supervisor import start_ticks

    return start_ticks(pid) is not None


def _says_up(log_path: Path) -> bool:
    return log_path.exists() and "up" in log_path.read_text()
