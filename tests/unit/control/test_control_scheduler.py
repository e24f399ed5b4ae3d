"""Scheduler and training state machine: leases, expiry, retries, fencing, completion, stop."""

from __future__ import annotations

import threading

import pytest

from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.tasks import (
    CompletionReport,
    HeartbeatReport,
    Lease,
    TaskKind,
    TaskOutcome,
    TaskState,
    WorkerLogLine,
)
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.control.training.jobs import TrainingJobs, TrainingTaskPayload
from services.control.training.values import (
    MetricValue,
    RuntimeVersions,
    TrainingJobSpec,
    TrainingJobStatus,
)
from services.runtime.errors import FailedPrecondition, InvalidArgument
from tests.unit.control.helpers import FakeClock

TRAINING = (TaskKind.TRAINING,)


def _acquire(scheduler: Scheduler, worker: str = "w1") -> Lease:
    lease = scheduler.acquire(worker, TRAINING, wait_s=0)
    assert lease is not None
    return lease


def _complete(
    lease: Lease, outcome: TaskOutcome = TaskOutcome.SUCCEEDED, **fields: object
) -> CompletionReport:
    return CompletionReport(
        task_id=lease.task.task_id,
        attempt=lease.task.attempt,
        worker_id=lease.task.worker_id,
        outcome=outcome,
        **fields,  # type: ignore[arg-type]
    )


def _counter(metrics: ControlMetrics, status: str) -> float:
    return metrics.training_jobs.labels(status=status)._value.get()


def test_create_queues_a_task_and_acquire_leases_it(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec, clock: FakeClock
) -> None:
    created = jobs.create("job-1", spec)
    assert (created.status, created.secondary_status) == (TrainingJobStatus.IN_PROGRESS, "Starting")
    assert created.spec.max_runtime_seconds == 86400
    assert created.spec.output_uri == "store://jobs"
    assert scheduler.queue_depth() == 1

    lease = _acquire(scheduler)
    assert lease.task.attempt == 1
    assert lease.task.lease_expires == clock.now + 10.0
    assert lease.heartbeat_interval_s == 2.0
    assert isinstance(lease.payload, TrainingTaskPayload)
    # The trainer reads the bundle kept under the digest the job is bound to.
    digest = created.spec.source_sha256
    kept = f"store://code-bundles/sha256/{digest}/sourcedir.tar.gz"
    assert len(digest) == 64
    assert lease.payload.spec == created.spec
    assert lease.payload.source_bundle_uri == kept
    job = jobs.describe("job-1")
    assert (job.attempts, job.training_start_time) == (1, clock.now)
    assert scheduler.acquire("w2", TRAINING, wait_s=0) is None


def test_acquire_long_poll_wakes_on_enqueue(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec
) -> None:
    got: list[Lease | None] = []
    poller = threading.Thread(target=lambda: got.append(scheduler.acquire("w", TRAINING, 10)))
    poller.start()
    jobs.create("job-1", spec)
    poller.join(timeout=5)
    assert not poller.is_alive()
    assert got[0] is not None and got[0].task.job_name == "job-1"


def test_heartbeat_renews_lease_and_records_logs_metrics_status(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec, clock: FakeClock
) -> None:
    jobs.create("job-1", spec)
    lease = _acquire(scheduler)
    clock.advance(5)
    answer = scheduler.heartbeat(
        HeartbeatReport(
            task_id=lease.task.task_id,
            attempt=1,
            worker_id="w1",
            log_lines=(WorkerLogLine(clock.now, "stdout", "acc=0.9"),),
            metrics=(MetricValue("acc", 0.9, clock.now),),
            secondary_status="Training",
        )
    )
    assert answer.stop_requested is False
    assert answer.lease_expires == clock.now + 10.0
    job = jobs.describe("job-1")
    assert job.secondary_status == "Training"
    assert [t.status for t in job.transitions] == ["Starting", "Training"]
    assert job.transitions[0].end_time == clock.now
    assert job.final_metrics == (MetricValue("acc", 0.9, clock.now),)
    batches = list(jobs.follow_logs("job-1", 0, follow=False))
    assert [line.text for batch in batches for line in batch.lines] == ["acc=0.9"]


def test_heartbeat_refuses_a_status_workers_may_not_report(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec
) -> None:
    jobs.create("job-1", spec)
    lease = _acquire(scheduler)
    report = HeartbeatReport(lease.task.task_id, 1, "w1", secondary_status="Completed")
    with pytest.raises(InvalidArgument, match="not one of"):
        scheduler.heartbeat(report)


def test_expired_lease_is_requeued_with_doubling_backoff(
    jobs: TrainingJobs,
    scheduler: Scheduler,
    spec: TrainingJobSpec,
    clock: FakeClock,
    metrics: ControlMetrics,
) -> None:
    jobs.create("job-1", spec)
    _acquire(scheduler, "w1")
    clock.advance(10.5)
    assert scheduler.expire_leases() == 1
    assert metrics.lease_expirations._value.get() == 1
    job = jobs.describe("job-1")
    assert job.secondary_status == "Pending"
    assert job.transitions[-1].message == (
        "worker w1 lost (lease expired); retrying, attempt 2 of 3"
    )
    assert scheduler.acquire("w2", TRAINING, wait_s=0) is None  # backoff 1 s
    clock.advance(1.0)
    second = _acquire(scheduler, "w2")
    assert second.task.attempt == 2

    clock.advance(10.5)
    scheduler.expire_leases()
    clock.advance(1.5)
    assert scheduler.acquire("w3", TRAINING, wait_s=0) is None  # backoff 2 s now
    clock.advance(0.5)
    assert _acquire(scheduler, "w3").task.attempt == 3


def test_job_fails_once_every_attempt_lost_its_worker(
    jobs: TrainingJobs,
    scheduler: Scheduler,
    spec: TrainingJobSpec,
    clock: FakeClock,
    metrics: ControlMetrics,
) -> None:
    jobs.create("job-1", spec)
    for _ in range(3):
        clock.advance(60)
        _acquire(scheduler)
        clock.advance(10.5)
        scheduler.expire_leases()
    job = jobs.describe("job-1")
    assert job.status is TrainingJobStatus.FAILED
    assert (
        job.failure_reason == "InternalServerError: worker lost (lease expired) on all 3 attempts"
    )
    assert job.training_end_time == clock.now
    assert scheduler.queue_depth() == 0
    assert _counter(metrics, "Failed") == 1
    clock.advance(60)
    assert scheduler.acquire("w", TRAINING, wait_s=0) is None


def test_a_superseded_attempt_is_fenced_off(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec, clock: FakeClock
) -> None:
    jobs.create("job-1", spec)
    first = _acquire(scheduler, "w1")
    clock.advance(10.5)
    scheduler.expire_leases()
    clock.advance(1)
    second = _acquire(scheduler, "w2")
    with pytest.raises(FailedPrecondition, match="attempt 1 superseded"):
        scheduler.heartbeat(HeartbeatReport(first.task.task_id, 1, "w1"))
    with pytest.raises(FailedPrecondition, match="attempt 1 superseded"):
        scheduler.complete(_complete(first))
    scheduler.complete(_complete(second))
    assert jobs.describe("job-1").status is TrainingJobStatus.COMPLETED


def test_heartbeat_after_requeue_but_before_release_is_fenced(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec, clock: FakeClock
) -> None:
    jobs.create("job-1", spec)
    first = _acquire(scheduler, "w1")
    clock.advance(10.5)
    scheduler.expire_leases()
    with pytest.raises(FailedPrecondition, match=r"attempt 1 superseded.*queued"):
        scheduler.heartbeat(HeartbeatReport(first.task.task_id, 1, "w1"))


def test_completion_is_idempotent_and_a_job_never_completes_twice(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec, metrics: ControlMetrics
) -> None:
    jobs.create("job-1", spec)
    lease = _acquire(scheduler)
    report = _complete(
        lease,
        model_artifact_uri="store://job-1/output/model.tar.gz",
        runtime_versions=RuntimeVersions("3.11.7", "1.9.0", "2.4.0"),
        log_lines=(WorkerLogLine(1.0, "stdout", "done"),),
    )
    scheduler.complete(report)
    scheduler.complete(report)  # a retried RPC: accepted, ignored
    with pytest.raises(FailedPrecondition, match="superseded"):
        scheduler.complete(_complete(lease, TaskOutcome.FAILED, failure_reason="x"))
    job = jobs.describe("job-1")
    assert job.status is TrainingJobStatus.COMPLETED
    assert job.model_artifact_uri == "store://job-1/output/model.tar.gz"
    assert job.runtime_versions.sklearn == "1.9.0"
    assert job.transitions[-1].end_time is not None
    assert _counter(metrics, "Completed") == 1
    assert [line.text for b in jobs.follow_logs("job-1", 0, False) for line in b.lines] == ["done"]


@pytest.mark.parametrize(
    ("outcome", "status", "secondary"),
    [
        (TaskOutcome.FAILED, TrainingJobStatus.FAILED, "Failed"),
        (TaskOutcome.STOPPED, TrainingJobStatus.STOPPED, "Stopped"),
        (TaskOutcome.MAX_RUNTIME_EXCEEDED, TrainingJobStatus.STOPPED, "MaxRuntimeExceeded"),
    ],
)
def test_outcomes_map_to_statuses(
    jobs: TrainingJobs,
    scheduler: Scheduler,
    spec: TrainingJobSpec,
    outcome: TaskOutcome,
    status: TrainingJobStatus,
    secondary: str,
) -> None:
    jobs.create("job-1", spec)
    lease = _acquire(scheduler)
    scheduler.complete(_complete(lease, outcome, failure_reason="AlgorithmError: " + "x" * 2000))
    job = jobs.describe("job-1")
    assert (job.status, job.secondary_status) == (status, secondary)
    assert len(job.failure_reason) <= 1024


def test_stop_of_a_queued_job_is_immediate(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec
) -> None:
    jobs.create("job-1", spec)
    stopped = jobs.stop("job-1")
    assert (stopped.status, stopped.secondary_status) == (TrainingJobStatus.STOPPED, "Stopped")
    assert scheduler.acquire("w", TRAINING, wait_s=0) is None
    with pytest.raises(FailedPrecondition, match="already ended"):
        jobs.stop("job-1")


def test_stop_of_a_running_job_goes_through_the_heartbeat(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec
) -> None:
    jobs.create("job-1", spec)
    lease = _acquire(scheduler)
    stopping = jobs.stop("job-1")
    assert (stopping.status, stopping.secondary_status) == (TrainingJobStatus.STOPPING, "Stopping")
    assert jobs.stop("job-1").status is TrainingJobStatus.STOPPING  # idempotent
    answer = scheduler.heartbeat(HeartbeatReport(lease.task.task_id, 1, "w1"))
    assert answer.stop_requested
    scheduler.complete(_complete(lease, TaskOutcome.STOPPED))
    assert jobs.describe("job-1").status is TrainingJobStatus.STOPPED


def test_a_worker_lost_while_stopping_ends_the_job_stopped(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec, clock: FakeClock
) -> None:
    jobs.create("job-1", spec)
    _acquire(scheduler)
    jobs.stop("job-1")
    clock.advance(11)
    scheduler.expire_leases()
    assert jobs.describe("job-1").status is TrainingJobStatus.STOPPED
    assert scheduler.queue_depth() == 0


def test_start_gives_leases_held_before_a_restart_one_more_period(
    jobs: TrainingJobs,
    scheduler: Scheduler,
    spec: TrainingJobSpec,
    clock: FakeClock,
    store: ControlStore,
) -> None:
    jobs.create("job-1", spec)
    lease = _acquire(scheduler)
    clock.advance(60)  # the control was down for a minute
    scheduler.start()
    try:
        task = store.get_task(lease.task.task_id)
        assert task is not None
        assert (task.state, task.lease_expires) == (TaskState.LEASED, clock.now + 10.0)
        answer = scheduler.heartbeat(HeartbeatReport(lease.task.task_id, 1, "w1"))
        assert answer.lease_expires == clock.now + 10.0
    finally:
        scheduler.stop()


def test_follow_logs_streams_until_the_job_ends(
    jobs: TrainingJobs, scheduler: Scheduler, spec: TrainingJobSpec
) -> None:
    jobs.create("job-1", spec)
    lease = _acquire(scheduler)
    received: list[str] = []

    def follow() -> None:
        for batch in jobs.follow_logs("job-1", 0, follow=True):
            received.extend(line.text for line in batch.lines)

    follower = threading.Thread(target=follow)
    follower.start()
    scheduler.heartbeat(
        HeartbeatReport(lease.task.task_id, 1, "w1", (WorkerLogLine(1.0, "stdout", "a"),))
    )
    scheduler.complete(_complete(lease, log_lines=(WorkerLogLine(2.0, "stdout", "b"),)))
    follower.join(timeout=5)
    assert not follower.is_alive()
    assert received == ["a", "b"]


def test_list_is_newest_first_with_filters_and_pages(
    jobs: TrainingJobs, spec: TrainingJobSpec
) -> None:
    for index in range(5):
        jobs.create(f"job-{index}", spec)
    jobs.create("other", spec)
    jobs.stop("job-3")
    first = jobs.list(name_prefix="job-", page_size=2)
    assert [job.name for job in first.jobs] == ["job-4", "job-3"]
    second = jobs.list(name_prefix="job-", page_size=2, page_token=first.next_page_token)
    assert [job.name for job in second.jobs] == ["job-2", "job-1"]
    third = jobs.list(name_prefix="job-", page_size=2, page_token=second.next_page_token)
    assert ([job.name for job in third.jobs], third.next_page_token) == (["job-0"], "")
    assert [j.name for j in jobs.list(status=TrainingJobStatus.STOPPED).jobs] == ["job-3"]
    with pytest.raises(InvalidArgument, match="page_token"):
        jobs.list(page_token="garbage")
