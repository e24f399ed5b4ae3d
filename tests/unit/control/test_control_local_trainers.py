"""`--local` trainers follow the training tasks: up to the cap at once, idle extras stop later."""

from __future__ import annotations

from pathlib import Path

from services.control.local_workers.supervisor import WorkerSpec
from services.control.local_workers.trainers import LocalTrainers, TrainingDemand
from tests.unit.control.conftest import FakeClock
from tests.unit.control.test_control_local_batch import FakeSupervisor


class PidSupervisor(FakeSupervisor):
    """A fake supervisor whose children have process ids (trainer-N has pid 100 + N)."""

    def pids(self) -> dict[str, int]:
        return {name: 100 + int(name.rpartition("-")[2]) for name in self.children}


def _trainers(
    tmp_path: Path, demand: list[TrainingDemand], clock: FakeClock, supervisor: FakeSupervisor
) -> LocalTrainers:
    def spec(index: int) -> WorkerSpec:
        return WorkerSpec(f"trainer-{index}", ("true",), tmp_path / f"trainer-{index}.log")

    return LocalTrainers(
        supervisor,
        spec,
        lambda: demand[0],
        min_trainers=1,
        max_trainers=3,
        idle_s=5.0,
        clock=clock,
        worker_id_of=lambda pid: f"host/{pid}",
    )


def test_trainers_start_up_to_the_demand_within_the_cap(tmp_path: Path) -> None:
    supervisor = PidSupervisor()
    supervisor.children.append("batch-0")  # other children are left alone
    demand = [TrainingDemand(0, frozenset())]
    trainers = _trainers(tmp_path, demand, FakeClock(0.0), supervisor)

    assert trainers.reconcile() == 1 and trainers.running() == ["trainer-0"]
    demand[0] = TrainingDemand(2, frozenset({"host/100"}))  # a tuning job's 2 parallel trials
    assert trainers.reconcile() == 2 and trainers.running() == ["trainer-0", "trainer-1"]
    demand[0] = TrainingDemand(7, frozenset({"host/100", "host/101"}))
    assert trainers.reconcile() == 3
    assert trainers.running() == ["trainer-0", "trainer-1", "trainer-2"]
    assert "batch-0" in supervisor.children


def test_only_idle_extra_trainers_stop_after_the_delay(tmp_path: Path) -> None:
    supervisor = PidSupervisor()
    clock = FakeClock(0.0)
    demand = [TrainingDemand(3, frozenset())]
    trainers = _trainers(tmp_path, demand, clock, supervisor)
    trainers.reconcile()
    # One task left, run by the highest-numbered trainer: it must not be the one stopped.
    demand[0] = TrainingDemand(1, frozenset({"host/102"}))
    assert trainers.reconcile() == 3
    clock.advance(4.9)
    assert trainers.reconcile() == 3
    clock.advance(0.2)
    assert trainers.reconcile() == 1 and trainers.running() == ["trainer-2"]


def test_a_busy_trainer_beyond_the_target_stays_until_it_is_idle(tmp_path: Path) -> None:
    supervisor = PidSupervisor()
    clock = FakeClock(0.0)
    demand = [TrainingDemand(2, frozenset())]
    trainers = _trainers(tmp_path, demand, clock, supervisor)
    trainers.reconcile()
    # Both still hold a lease (e.g. the control's demand lags a completion): none stops.
    demand[0] = TrainingDemand(1, frozenset({"host/100", "host/101"}))
    trainers.reconcile()
    clock.advance(5.1)
    assert trainers.reconcile() == 2
    demand[0] = TrainingDemand(0, frozenset())
    trainers.reconcile()
    clock.advance(5.1)
    assert trainers.reconcile() == 1 and trainers.running() == ["trainer-0"]


def test_new_work_within_the_delay_keeps_the_trainers(tmp_path: Path) -> None:
    supervisor = PidSupervisor()
    clock = FakeClock(0.0)
    demand = [TrainingDemand(2, frozenset())]
    trainers = _trainers(tmp_path, demand, clock, supervisor)
    trainers.reconcile()
    demand[0] = TrainingDemand(0, frozenset())
    trainers.reconcile()
    clock.advance(4.0)
    demand[0] = TrainingDemand(2, frozenset())
    trainers.reconcile()
    demand[0] = TrainingDemand(0, frozenset())
    clock.advance(4.0)
    assert trainers.reconcile() == 2
    clock.advance(5.1)
    assert trainers.reconcile() == 1


def test_a_cap_of_zero_runs_no_trainer_at_all(tmp_path: Path) -> None:
    supervisor = PidSupervisor()
    trainers = LocalTrainers(
        supervisor,
        lambda index: WorkerSpec(f"trainer-{index}", ("true",), tmp_path / "t.log"),
        lambda: TrainingDemand(4, frozenset()),
        min_trainers=1,
        max_trainers=0,  # trainers run elsewhere (e.g. their own machines)
        idle_s=5.0,
    )
    assert trainers.reconcile() == 0 and supervisor.children == []
