"""`--local` batch workers follow the running transform jobs; a supervised child can be removed."""

from __future__ import annotations

import sys
from pathlib import Path

from services.control.local_workers.batch import LocalBatchWorkers, batch_worker_spec
from services.control.local_workers.supervisor import WorkerSpec, WorkerSupervisor
from tests.unit.control.conftest import FakeClock


class FakeSupervisor(WorkerSupervisor):
    """Records adds and removes instead of starting processes."""

    def __init__(self) -> None:
        super().__init__()
        self.children: list[str] = []

    def add(self, spec: WorkerSpec) -> None:
        self.children.append(spec.name)

    def remove(self, name: str) -> bool:
        self.children.remove(name)
        return True

    def names(self) -> list[str]:
        return sorted(self.children)


def test_spec_points_the_worker_at_the_control(tmp_path: Path) -> None:
    spec = batch_worker_spec(
        1,
        data_dir=tmp_path,
        control_address="127.0.0.1:5",
        extra_args="--log-level DEBUG",
        auth_token="t0k",
    )
    assert spec.name == "batch-1"
    assert spec.argv[1:5] == ("-m", "services.batch", "--control", "127.0.0.1:5")
    assert spec.argv[-2:] == ("--log-level", "DEBUG")
    assert str(tmp_path.resolve() / "work" / "batch-1") in spec.argv
    assert "t0k" not in " ".join(spec.argv)
    assert (spec.token, spec.token_fd_env) == ("t0k", "SKMAKER_BATCH_AUTH_TOKEN_FD")
    assert "t0k" not in " ".join(spec.argv) and not spec.extra_env
    assert spec.log_path == tmp_path.resolve() / "logs" / "batch-1.log"


def test_worker_runs_on_the_script_runtimes_python(tmp_path: Path) -> None:
    python = "/opt/runtimes/sklearn-1.9/bin/python"
    spec = batch_worker_spec(0, data_dir=tmp_path, control_address="a:1", python=python)
    assert spec.argv[:3] == (python, "-m", "services.batch")


def test_workers_start_at_once_and_stop_after_the_idle_delay(tmp_path: Path) -> None:
    supervisor = FakeSupervisor()
    supervisor.children.append("trainer-0")
    clock = FakeClock(0.0)
    wanted = [0]
    workers = LocalBatchWorkers(
        supervisor,
        lambda runtime, index: batch_worker_spec(index, data_dir=tmp_path, control_address="a:1"),
        lambda: {"": wanted[0]},
        max_workers=2,
        idle_s=5.0,
        clock=clock,
    )
    assert workers.reconcile() == 0 and workers.running() == []
    wanted[0] = 3  # more than the machine allows
    assert workers.reconcile() == 2
    assert workers.running() == ["batch-0", "batch-1"]
    wanted[0] = 1
    assert workers.reconcile() == 2
    clock.advance(4.9)
    assert workers.reconcile() == 2
    clock.advance(0.2)
    assert workers.reconcile() == 1 and workers.running() == ["batch-0"]
    wanted[0] = 0
    workers.reconcile()
    wanted[0] = 1  # a new job before the delay passed: the worker stays
    clock.advance(4.0)
    workers.reconcile()
    wanted[0] = 0
    clock.advance(4.0)
    assert workers.reconcile() == 1
    clock.advance(5.0)
    assert workers.reconcile() == 0
    assert supervisor.names() == ["trainer-0"]


def test_supervisor_remove_stops_the_child_for_good(tmp_path: Path) -> None:
    # The test runs the watcher's passes itself; two passes restart an exited child.
    supervisor = WorkerSupervisor(watch_interval_s=3600.0, restart_backoff_s=0.0)
    supervisor.start()
    try:
        supervisor.add(
            WorkerSpec(
                name="sleeper",
                argv=(sys.executable, "-c", "import time; time.sleep(60)"),
                log_path=tmp_path / "sleeper.log",
            )
        )
        assert "sleeper" in supervisor.pids()
        assert supervisor.remove("sleeper")
        for _ in range(3):
            supervisor.step()  # nothing comes back
        assert supervisor.pids() == {} and supervisor.names() == []
        assert not supervisor.remove("sleeper")
    finally:
        supervisor.stop()


def test_each_runtime_gets_its_own_workers_once_it_is_built(tmp_path: Path) -> None:
    supervisor = FakeSupervisor()
    clock = FakeClock(0.0)
    wanted = {"sklearn-1.9": 1, "sklearn-1.2": 2}
    built = {"sklearn-1.9"}

    def spec_for(runtime: str, index: int) -> WorkerSpec | None:
        if runtime not in built:
            return None  # still being built
        python = f"/rt/{runtime}/bin/python"
        return batch_worker_spec(
            index, data_dir=tmp_path, control_address="a:1", python=python, runtime=runtime
        )

    workers = LocalBatchWorkers(
        supervisor, spec_for, lambda: wanted, max_workers=4, idle_s=5.0, clock=clock
    )
    assert workers.reconcile() == 1
    assert workers.running() == ["batch-sklearn-1.9-0"]
    built.add("sklearn-1.2")
    assert workers.reconcile() == 3
    assert workers.running() == [
        "batch-sklearn-1.2-0",
        "batch-sklearn-1.2-1",
        "batch-sklearn-1.9-0",
    ]
    wanted = {"sklearn-1.9": 1}  # the 1.2 job ended: its workers go after the idle delay
    workers.reconcile()
    clock.advance(5.1)
    assert workers.reconcile() == 1
    assert workers.running() == ["batch-sklearn-1.9-0"]
