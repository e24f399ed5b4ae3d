"""Tuning jobs over a real SQLite store, real training jobs and task queue, and a real Tuner.

A fake worker leases the trials' training tasks, reports the objective metric in heartbeats
and completes them; `advance_all()` runs one pass of the tuning loop, so every step is
deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace

import optuna
import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.tasks import (
    CompletionReport,
    HeartbeatReport,
    TaskKind,
    TaskOutcome,
)
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.control.training.jobs import TrainingJobs
from services.control.training.values import (
    MetricDefinition,
    MetricValue,
    TrainingJobSpec,
    TrainingJobStatus,
)
from services.control.tuning.config import EarlyStoppingType, ObjectiveType, TuningConfig
from services.control.tuning.jobs import TuningJobs
from services.control.tuning.space import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    ParameterRange,
    TuningStrategy,
)
from services.control.tuning.tuner import TrialState
from services.control.tuning.values import TuningJob, TuningJobSpec, TuningJobStatus
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from tests.unit.control.conftest import FakeClock

METRIC = "validation:accuracy"
RANGES: tuple[ParameterRange, ...] = (
    IntegerRange("max_leaf_nodes", 2, 30),
    CategoricalRange("criterion", ("gini", "entropy")),
)


@pytest.fixture(autouse=True)
def quiet_optuna() -> Iterator[None]:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


@pytest.fixture
def template(spec: TrainingJobSpec) -> TrainingJobSpec:
    return replace(
        spec,
        hyperparameters={"max_leaf_nodes": "30", "sagemaker_program": '"train.py"'},
        metric_definitions=(MetricDefinition(METRIC, r"accuracy: ([0-9.]+)"),),
    )


@pytest.fixture
def tuning(
    store: ControlStore,
    jobs: TrainingJobs,
    artifacts: LocalArtifactStore,
    metrics: ControlMetrics,
    clock: FakeClock,
) -> TuningJobs:
    return TuningJobs(store, jobs, artifacts, metrics, clock=clock)


def tuning_spec(template: TrainingJobSpec, **config: object) -> TuningJobSpec:
    settings: dict[str, object] = {"max_jobs": 4, "max_parallel_jobs": 2, "random_seed": 7}
    settings.update(config)
    return TuningJobSpec(
        template=template,
        objective_metric_name=METRIC,
        ranges=RANGES,
        config=TuningConfig(**settings),  # type: ignore[arg-type]
    )


class FakeWorker:
    """Leases training tasks and reports them as a trainer would."""

    def __init__(self, scheduler: Scheduler, clock: FakeClock) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self.leases: dict[str, tuple[str, int]] = {}  # job name -> (task id, attempt)

    def take_all(self) -> list[str]:
        """Leases every queued task; returns the job names."""
        taken = []
        while (lease := self.scheduler.acquire("worker-1", [TaskKind.TRAINING], 0)) is not None:
            self.leases[lease.task.job_name] = (lease.task.task_id, lease.task.attempt)
            taken.append(lease.task.job_name)
        return taken

    def log(self, job_name: str, values: Sequence[float], metric: str = METRIC) -> bool:
        """Heartbeats `values` of `metric`; returns the answer's stop_requested."""
        task_id, attempt = self.leases[job_name]
        samples = []
        for value in values:
            self.clock.advance(0.1)
            samples.append(MetricValue(metric, value, self.clock()))
        answer = self.scheduler.heartbeat(
            HeartbeatReport(task_id, attempt, "worker-1", metrics=tuple(samples))
        )
        return answer.stop_requested

    def end(self, job_name: str, outcome: TaskOutcome = TaskOutcome.SUCCEEDED) -> None:
        task_id, attempt = self.leases.pop(job_name)
        self.clock.advance(1.0)
        self.scheduler.complete(
            CompletionReport(task_id, attempt, "worker-1", outcome, failure_reason="boom")
        )


@pytest.fixture
def worker(scheduler: Scheduler, clock: FakeClock) -> FakeWorker:
    return FakeWorker(scheduler, clock)


def finish_trials(
    tuning: TuningJobs, worker: FakeWorker, objective: dict[str, float] | None = None
) -> list[str]:
    """Runs the loop, completing each launched trial with an objective, until nothing runs."""
    finished = []
    while True:
        tuning.step()
        taken = worker.take_all()
        if not taken:
            return finished
        for name in taken:
            worker.log(name, [(objective or {}).get(name, 0.5)])
            worker.end(name)
            finished.append(name)


def described(tuning: TuningJobs, name: str = "tune") -> TuningJob:
    return tuning.describe(name)


# ----------------------------------------------------------------- validation


def test_create_refuses_a_bad_name(tuning: TuningJobs, template: TrainingJobSpec) -> None:
    with pytest.raises(InvalidArgument, match="1-32"):
        tuning.create("x" * 33, tuning_spec(template))
    with pytest.raises(InvalidArgument):
        tuning.create("-tune", tuning_spec(template))


def test_create_refuses_an_objective_without_a_metric_definition(
    tuning: TuningJobs, template: TrainingJobSpec
) -> None:
    spec = replace(tuning_spec(template), objective_metric_name="loss")
    with pytest.raises(InvalidArgument, match="'loss' is not one of the metric definitions"):
        tuning.create("tune", spec)


@pytest.mark.parametrize(
    ("ranges", "config", "message"),
    [
        ((IntegerRange("n", 5, 5),), {}, "min < max"),
        ((ContinuousRange("c", 0.0, 1.0, "Logarithmic"),), {}, "needs min > 0"),  # type: ignore[arg-type]
        ((ContinuousRange("c", 0.1, 1.0),), {"strategy": TuningStrategy.GRID}, "continuous"),
        (RANGES, {"max_parallel_jobs": 0}, "max_parallel_jobs"),
        (RANGES, {"max_jobs": 501}, "max_jobs"),
    ],
)
def test_create_refuses_bad_ranges_and_configs(
    tuning: TuningJobs,
    template: TrainingJobSpec,
    ranges: tuple[ParameterRange, ...],
    config: dict[str, object],
    message: str,
) -> None:
    spec = replace(tuning_spec(template, **config), ranges=ranges)
    with pytest.raises(InvalidArgument, match=message):
        tuning.create("tune", spec)
    assert tuning.list().jobs == ()


def test_create_validates_the_template_like_a_training_job(
    tuning: TuningJobs, template: TrainingJobSpec
) -> None:
    missing = replace(template, source_uri="store://nowhere/sourcedir.tar.gz")
    with pytest.raises(NotFound, match="source bundle"):
        tuning.create("tune", tuning_spec(missing))
    with pytest.raises(InvalidArgument, match=r"entry point 'absent\.py' is not in"):
        tuning.create("tune", tuning_spec(replace(template, entry_point="absent.py")))


def test_create_refuses_missing_warm_start_parents_and_a_taken_name(
    tuning: TuningJobs, template: TrainingJobSpec
) -> None:
    orphan = replace(
        tuning_spec(template),
        warm_start_parent_names=("nope",),
        warm_start_type="TransferLearning",
    )
    with pytest.raises(NotFound, match="'nope' not found"):
        tuning.create("tune", orphan)
    tuning.create("tune", tuning_spec(template))
    with pytest.raises(AlreadyExists):
        tuning.create("tune", tuning_spec(template))


# ----------------------------------------------------------------- trials


def test_trials_are_training_jobs_with_the_contracts_hyperparameters(
    tuning: TuningJobs, jobs: TrainingJobs, template: TrainingJobSpec, worker: FakeWorker
) -> None:
    created = tuning.create("tune", tuning_spec(template))
    assert created.status is TuningJobStatus.IN_PROGRESS
    tuning.step()

    trials = described(tuning).trials
    assert [trial.number for trial in trials] == [1, 2]  # max_parallel_jobs
    for trial in trials:
        assert re.fullmatch(r"tune-00\d-[0-9a-f]{8}", trial.training_job_name)
        job = jobs.describe(trial.training_job_name)
        assert job.tuning_job_name == "tune"
        assert job.spec.entry_point == "train.py"
        hyperparameters = dict(job.spec.hyperparameters)
        tuned = dict(trial.tuned_hyperparameters)
        assert set(tuned) == {"max_leaf_nodes", "criterion"}
        assert 2 <= int(tuned["max_leaf_nodes"]) <= 30
        assert json.loads(tuned["criterion"]) in {"gini", "entropy"}
        assert hyperparameters == {
            **tuned,
            "sagemaker_program": '"train.py"',
            "_tuning_objective_metric": json.dumps(METRIC),
            "sagemaker_estimator_class_name": '"SKLearn"',
            "sagemaker_estimator_module": '"sagemaker.sklearn.estimator"',
        }
    assert {name for name in worker.take_all()} == {t.training_job_name for t in trials}
    assert jobs.list(tuning_job_name="tune").jobs[0].tuning_job_name == "tune"


def test_exactly_max_parallel_trials_run_until_max_jobs_then_the_best_wins(
    tuning: TuningJobs, template: TrainingJobSpec, worker: FakeWorker
) -> None:
    tuning.create("tune", tuning_spec(template, max_jobs=5))
    tuning.step()
    names = worker.take_all()
    assert len(names) == 2
    objectives = {}
    for round_number in range(4):
        job = described(tuning)
        assert job.counters.in_progress == min(2, 5 - round_number)
        done = names.pop(0)
        objectives[done] = 0.1 * (round_number + 1)
        worker.log(done, [objectives[done]])
        worker.end(done)
        tuning.step()
        names += worker.take_all()
    assert len(described(tuning).trials) == 5
    for name in names:
        objectives[name] = 0.05
        worker.log(name, [0.05])
        worker.end(name)
    tuning.step()

    job = described(tuning)
    assert job.status is TuningJobStatus.COMPLETED
    assert job.end_time is not None
    assert job.counters.completed == 5 and job.counters.in_progress == 0
    assert job.best_trial is not None
    assert job.best_trial.training_job_name == max(objectives, key=objectives.__getitem__)
    assert job.best_trial.objective_value == pytest.approx(0.4)
    assert [trial.state for trial in job.trials] == [TrialState.COMPLETED] * 5


def test_the_objective_is_the_final_value_and_minimize_picks_the_smallest(
    tuning: TuningJobs, template: TrainingJobSpec, worker: FakeWorker
) -> None:
    spec = tuning_spec(template, max_jobs=2, objective_type=ObjectiveType.MINIMIZE)
    tuning.create("tune", spec)
    tuning.step()
    first, second = worker.take_all()
    worker.log(first, [0.1, 0.9, 0.3])  # the final value counts, not the best one
    worker.log(second, [0.5])
    worker.end(first)
    worker.end(second)
    tuning.step()

    job = described(tuning)
    values = {trial.training_job_name: trial.objective_value for trial in job.trials}
    assert values == {first: pytest.approx(0.3), second: pytest.approx(0.5)}
    assert job.best_trial is not None and job.best_trial.training_job_name == first


def test_failed_trials_do_not_stop_the_tuning_job(
    tuning: TuningJobs, template: TrainingJobSpec, worker: FakeWorker
) -> None:
    tuning.create("tune", tuning_spec(template, max_jobs=3, max_parallel_jobs=1))
    tuning.step()
    (first,) = worker.take_all()
    worker.end(first, TaskOutcome.FAILED)
    tuning.step()
    (second,) = worker.take_all()
    worker.log(second, [0.8], metric="something-else")  # completed without the objective
    worker.end(second)
    finish_trials(tuning, worker)

    job = described(tuning)
    assert job.status is TuningJobStatus.COMPLETED
    assert job.counters.non_retryable_error == 1 and job.counters.completed == 2
    states = [(t.state, t.objective_status.value) for t in job.trials]
    assert states == [
        (TrialState.FAILED, "Failed"),
        (TrialState.FAILED, "Failed"),
        (TrialState.COMPLETED, "Succeeded"),
    ]
    assert "without logging the objective metric" in job.trials[1].failure_reason
    assert job.best_trial is not None and job.best_trial.number == 3


def test_the_tuning_job_fails_when_every_trial_fails(
    tuning: TuningJobs, template: TrainingJobSpec, worker: FakeWorker, metrics: ControlMetrics
) -> None:
    tuning.create("tune", tuning_spec(template, max_jobs=2))
    tuning.step()
    for name in worker.take_all():
        worker.end(name, TaskOutcome.FAILED)
    tuning.step()

    job = described(tuning)
    assert job.status is TuningJobStatus.FAILED
    assert "no trial produced the objective metric" in job.failure_reason
    assert job.best_trial is None
    samples = {
        sample.labels["status"]: sample.value
        for family in metrics.tuning_jobs.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert samples == {"InProgress": 1.0, "Failed": 1.0}


def test_early_stopping_stops_a_trial_below_the_running_median(
    tuning: TuningJobs, jobs: TrainingJobs, template: TrainingJobSpec, worker: FakeWorker
) -> None:
    spec = tuning_spec(
        template, max_jobs=5, max_parallel_jobs=1, early_stopping=EarlyStoppingType.AUTO
    )
    tuning.create("tune", spec)
    for _ in range(3):  # the median rule waits for 3 completed trials
        tuning.step()
        (name,) = worker.take_all()
        worker.log(name, [0.8, 0.85, 0.9, 0.92])
        worker.end(name)
    tuning.step()
    (weak,) = worker.take_all()
    assert worker.log(weak, [0.1]) is False
    tuning.step()
    assert worker.log(weak, [0.15]) is False  # the loop has not seen step 2 yet
    tuning.step()  # step 2: the running average 0.125 trails the median 0.825

    assert jobs.describe(weak).status is TrainingJobStatus.STOPPING
    assert worker.log(weak, [0.2]) is True  # the trainer is told to stop
    worker.end(weak, TaskOutcome.STOPPED)
    finish_trials(tuning, worker, {})

    job = described(tuning)
    stopped = job.trials[3]
    assert stopped.training_job_name == weak
    assert stopped.stopped_early and stopped.state is TrialState.STOPPED_EARLY
    assert stopped.objective_status.value == "Failed"
    assert job.counters.stopped == 1 and job.counters.completed == 4
    assert job.status is TuningJobStatus.COMPLETED


def test_stop_stops_running_trials_then_the_job_is_stopped(
    tuning: TuningJobs, jobs: TrainingJobs, template: TrainingJobSpec, worker: FakeWorker
) -> None:
    tuning.create("tune", tuning_spec(template, max_jobs=4))
    tuning.step()
    running = worker.take_all()

    assert tuning.stop("tune").status is TuningJobStatus.STOPPING
    assert tuning.stop("tune").status is TuningJobStatus.STOPPING  # idempotent
    assert {jobs.describe(name).status for name in running} == {TrainingJobStatus.STOPPING}
    tuning.step()
    assert worker.take_all() == []  # nothing new is launched
    for name in running:
        worker.end(name, TaskOutcome.STOPPED)
    tuning.step()

    job = described(tuning)
    assert job.status is TuningJobStatus.STOPPED
    assert job.counters.stopped == 2 and len(job.trials) == 2
    assert not any(trial.stopped_early for trial in job.trials)
    with pytest.raises(FailedPrecondition, match="already ended"):
        tuning.stop("tune")


def test_a_restart_rebuilds_the_tuner_and_counts_every_trial_once(
    store: ControlStore,
    jobs: TrainingJobs,
    artifacts: LocalArtifactStore,
    metrics: ControlMetrics,
    clock: FakeClock,
    template: TrainingJobSpec,
    worker: FakeWorker,
) -> None:
    first = TuningJobs(store, jobs, artifacts, metrics, clock=clock)
    first.create("tune", tuning_spec(template, max_jobs=5))
    first.step()
    done, running = worker.take_all()
    worker.log(done, [0.7])
    worker.end(done)
    first.step()  # trial 1 told, trial 3 launched
    worker.log(running, [0.6])
    third = worker.take_all()

    # The control dies here; a new one opens the same database. Trial 2 ends meanwhile.
    scheduler = Scheduler(
        store, metrics, lease_s=10.0, heartbeat_interval_s=2.0, max_attempts=3,
        retry_backoff_s=1.0, clock=clock,
    )  # fmt: skip
    restarted_jobs = TrainingJobs(store, scheduler, artifacts, metrics, clock=clock)
    scheduler.register(TaskKind.TRAINING, restarted_jobs)
    worker.scheduler = scheduler
    worker.end(running)
    second = TuningJobs(store, restarted_jobs, artifacts, metrics, clock=clock)
    second.resume()
    finish_trials(second, worker)
    for name in third:
        worker.log(name, [0.5])
        worker.end(name)
    finish_trials(second, worker)

    job = second.describe("tune")
    assert job.status is TuningJobStatus.COMPLETED
    assert [trial.number for trial in job.trials] == [1, 2, 3, 4, 5]
    assert job.counters.completed == 5
    assert len(jobs.list(tuning_job_name="tune").jobs) == 5
    assert job.best_trial is not None and job.best_trial.training_job_name == done


def test_list_pages_newest_first_and_filters(tuning: TuningJobs, template: TrainingJobSpec) -> None:
    for name in ("a-1", "a-2", "b-1"):
        tuning.create(name, tuning_spec(template))
    tuning.stop("a-1")
    first = tuning.list(page_size=2)
    assert [job.name for job in first.jobs] == ["b-1", "a-2"]
    assert first.jobs[0].trials == ()
    rest = tuning.list(page_size=2, page_token=first.next_page_token)
    assert [job.name for job in rest.jobs] == ["a-1"] and rest.next_page_token == ""
    assert [job.name for job in tuning.list(name_prefix="a-").jobs] == ["a-2", "a-1"]
    stopping = tuning.list(status=TuningJobStatus.STOPPING).jobs
    assert [job.name for job in stopping] == ["a-1"]
    with pytest.raises(InvalidArgument):
        tuning.list(page_token="garbage")


def test_grid_launches_every_combination_once(
    tuning: TuningJobs, template: TrainingJobSpec, worker: FakeWorker
) -> None:
    ranges = (IntegerRange("max_leaf_nodes", 2, 4), CategoricalRange("criterion", ("a", "b")))
    spec = replace(
        tuning_spec(template, strategy=TuningStrategy.GRID, max_jobs=None), ranges=ranges
    )
    tuning.create("tune", spec)
    finish_trials(tuning, worker)
    job = described(tuning)
    combos = sorted(
        (t.tuned_hyperparameters["max_leaf_nodes"], t.tuned_hyperparameters["criterion"])
        for t in job.trials
    )
    assert combos == sorted((str(n), json.dumps(c)) for n in (2, 3, 4) for c in "ab")
    assert job.status is TuningJobStatus.COMPLETED


def test_warm_start_takes_the_parents_completed_trials(
    tuning: TuningJobs, template: TrainingJobSpec, worker: FakeWorker
) -> None:
    tuning.create("parent", tuning_spec(template, max_jobs=2))
    finish_trials(tuning, worker)
    child = replace(
        tuning_spec(template, max_jobs=1),
        warm_start_parent_names=("parent",),
        warm_start_type="IdenticalDataAndAlgorithm",
    )
    tuning.create("child", child)
    finish_trials(tuning, worker)
    job = described(tuning, "child")
    assert job.status is TuningJobStatus.COMPLETED and len(job.trials) == 1
    with pytest.raises(InvalidArgument, match="warm_start_type"):
        tuning.create(
            "bad", replace(child, warm_start_type="Everything", warm_start_parent_names=("parent",))
        )
