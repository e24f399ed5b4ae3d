"""Transform jobs over a real SQLite store, scheduler and artifact store, with workers simulated.

A simulated worker leases a shard, writes its output where the payload says, heartbeats and
completes the task, as `services.batch` does; the control assembles `.out` files, fails files,
re-queues lost shards and stops jobs.
"""

from __future__ import annotations

import json
from pathlib import Path

import prometheus_client
import pytest

from services.control.artifacts.store import LocalArtifactStore, key_of
from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.tasks import (
    CompletionReport,
    HeartbeatReport,
    Lease,
    TaskKind,
    TaskOutcome,
    TaskState,
    TransformShardResult,
)
from services.control.hosting.model_registry import ModelRegistry
from services.control.hosting.model_values import Model
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.control.training.values import RuntimeVersions
from services.control.transform.jobs import TransformJobs, TransformTaskPayload
from services.control.transform.values import (
    DataProcessing,
    FileStatus,
    RecordError,
    TransformJobSpec,
    TransformJobStatus,
    model_from_json,
    model_to_json,
)
from services.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tests.unit.control.conftest import FakeClock, put_bytes

WORKER = "host/1"
# 40 lines of 10 bytes: with 100-byte shards, big.csv has 4 shards.
BIG = b"".join(f"{i:03d},1,2,3\n".encode() for i in range(40))
SMALL = b"7,8,9\n"


@pytest.fixture
def models(store: ControlStore, artifacts: LocalArtifactStore) -> ModelRegistry:
    registry = ModelRegistry(store, artifacts)
    put_bytes(artifacts, "models/m/model.tar.gz", b"not really a tarball")
    registry.create(Model("m", "store://models/m/model.tar.gz", "inference.py"))
    return registry


@pytest.fixture
def transforms(
    store: ControlStore,
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    models: ModelRegistry,
    metrics: ControlMetrics,
    clock: FakeClock,
) -> TransformJobs:
    put_bytes(artifacts, "in/a/big.csv", BIG)
    put_bytes(artifacts, "in/small.csv", SMALL)
    jobs = TransformJobs(
        store, scheduler, artifacts, models, metrics, target_shard_bytes=100, clock=clock
    )
    scheduler.register(TaskKind.TRANSFORM, jobs)
    return jobs


def _spec(**changes: object) -> TransformJobSpec:
    values: dict[str, object] = {
        "model_name": "m",
        "input_uri": "store://in",
        "content_type": "text/csv",
        "split_type": "Line",
    }
    values.update(changes)
    return TransformJobSpec(**values)  # type: ignore[arg-type]


def _acquire(scheduler: Scheduler) -> Lease | None:
    return scheduler.acquire(WORKER, [TaskKind.TRANSFORM], 0)


def _score(artifacts: LocalArtifactStore, payload: TransformTaskPayload) -> bytes:
    """What a worker would write for a shard: the lines of its byte range, upper-cased."""
    data = artifacts.read_range(
        key_of(payload.input_uri), payload.start, payload.end - payload.start
    )
    output = data.upper()
    artifacts.write(key_of(payload.output_uri), lambda out: out.write(output))
    return output


def _complete(
    scheduler: Scheduler,
    lease: Lease,
    outcome: TaskOutcome = TaskOutcome.SUCCEEDED,
    reason: str = "",
    errors: tuple[RecordError, ...] = (),
) -> None:
    payload = lease.payload
    assert isinstance(payload, TransformTaskPayload)
    scheduler.complete(
        CompletionReport(
            task_id=lease.task.task_id,
            attempt=lease.task.attempt,
            worker_id=WORKER,
            outcome=outcome,
            failure_reason=reason,
            transform_result=TransformShardResult(
                records_done=(payload.end - payload.start) // 10,
                bytes_done=payload.end - payload.start,
                record_errors=errors,
            ),
        )
    )


def _score_all(scheduler: Scheduler, artifacts: LocalArtifactStore) -> list[TransformTaskPayload]:
    """Leases, scores and completes shards one at a time until none is left; their payloads."""
    payloads = []
    while (lease := _acquire(scheduler)) is not None:
        assert isinstance(lease.payload, TransformTaskPayload)
        _score(artifacts, lease.payload)
        _complete(scheduler, lease)
        payloads.append(lease.payload)
    return payloads


def _run_all(scheduler: Scheduler, artifacts: LocalArtifactStore) -> None:
    _score_all(scheduler, artifacts)


def _metric(metrics: ControlMetrics, status: str) -> float:
    return metrics.transform_jobs.labels(status=status)._value.get()  # type: ignore[no-any-return]


# ----------------------------------------------------------------- create


def test_create_fills_defaults_plans_shards_and_queues_them(
    transforms: TransformJobs, scheduler: Scheduler
) -> None:
    job = transforms.create("t1", _spec(split_type=""))
    assert job.status is TransformJobStatus.IN_PROGRESS
    spec = job.spec
    assert (spec.split_type, spec.assemble_with) == ("None", "None")
    # Left unset, as SageMaker describes them: the worker asks the model's
    # execution_parameters_fn, else uses MultiRecord, 6 and 1.
    assert (spec.batch_strategy, spec.max_payload_mb, spec.max_concurrent_transforms) == ("", 0, 0)
    assert (spec.compression_type, spec.data_processing.join_source) == ("None", "None")
    assert spec.output_uri == "store://transform-jobs/t1"
    assert [(f.key, f.size, f.status) for f in job.files] == [
        ("a/big.csv", len(BIG), FileStatus.PENDING),
        ("small.csv", len(SMALL), FileStatus.PENDING),
    ]
    # SplitType None: one shard per file, however large.
    assert job.shards_total == 2
    assert scheduler.queue_depth() == 2
    assert job.model.name == "m"


def test_a_large_line_file_is_cut_on_line_boundaries(
    transforms: TransformJobs, scheduler: Scheduler, artifacts: LocalArtifactStore
) -> None:
    # Two instances: 406 bytes make at most 8 shares of 51 bytes, so the 100-byte target holds.
    job = transforms.create("t1", _spec(instance_count=2))
    assert job.shards_total == 5
    payloads = _score_all(scheduler, artifacts)
    big = [p for p in payloads if p.input_uri.endswith("big.csv")]
    assert [(p.shard_index, p.start, p.end) for p in big] == [
        (0, 0, 100),
        (1, 100, 200),
        (2, 200, 300),
        (3, 300, 400),
    ]
    assert [p.is_first_shard for p in big] == [True, False, False, False]
    # Workers on the control's disk may read the object's file instead of downloading it.
    assert all(p.input_size == len(BIG) for p in big)
    assert Path(big[2].input_path).read_bytes()[200:300] == BIG[200:300]
    assert big[1].output_uri == "store://transform-jobs/t1/.skmaker-shards/a/big.csv.out.000001"
    assert big[0].model.model_data_uri == "store://models/m/model.tar.gz"


def test_shards_grow_so_each_instance_gets_a_few_not_many(
    transforms: TransformJobs, scheduler: Scheduler, artifacts: LocalArtifactStore
) -> None:
    # One instance: 406 bytes in at most 4 shards, so they grow past the 100-byte target to
    # 102 bytes (plus the rest of the line each cut falls in); the small file stays whole.
    job = transforms.create("t1", _spec(instance_count=1))
    payloads = _score_all(scheduler, artifacts)
    big = [(p.start, p.end) for p in payloads if p.input_uri.endswith("big.csv")]
    assert big == [(0, 110), (110, 220), (220, 330), (330, 400)]
    assert job.shards_total == 5


def test_no_more_shards_of_a_job_are_leased_at_once_than_its_instance_count(
    transforms: TransformJobs, scheduler: Scheduler
) -> None:
    transforms.create("one", _spec(instance_count=1, output_uri="store://o1"))
    transforms.create("two", _spec(instance_count=2, output_uri="store://o2"))
    first = _acquire(scheduler)
    assert first is not None and first.task.job_name == "one"
    # "one" has its instance: the next free worker gets "two"'s shards, two at most.
    leased = [_acquire(scheduler) for _ in range(3)]
    assert [lease.task.job_name if lease else None for lease in leased] == ["two", "two", None]
    _complete(scheduler, first)
    after = _acquire(scheduler)
    assert after is not None and after.task.job_name == "one"


def test_one_object_as_input(transforms: TransformJobs) -> None:
    job = transforms.create("t1", _spec(input_uri="store://in/small.csv", output_uri="store://o"))
    assert [f.key for f in job.files] == ["small.csv"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"split_type": "RecordIO"}, "split_type"),
        ({"batch_strategy": "Multi"}, "batch_strategy"),
        ({"max_payload_mb": 101}, "max_payload_mb"),
        ({"max_payload_mb": 30, "max_concurrent_transforms": 4}, "must not exceed 100"),
        # An unset value counts as its default (6 MB) in the limit.
        ({"max_concurrent_transforms": 17}, "(17) x MaxPayloadInMB (6)"),
        ({"max_concurrent_transforms": -1}, "max_concurrent_transforms"),
        ({"assemble_with": "Newline"}, "assemble_with"),
        ({"compression_type": "Zip"}, "compression_type"),
        ({"instance_count": 0}, "instance_count"),
        ({"input_uri": "s3://b/in"}, "input_uri"),
        ({"output_uri": "store://o/../x"}, "output_uri"),
        ({"environment": {"1BAD": "x"}}, "environment"),
        ({"data_processing": DataProcessing(join_source="Input")}, "JoinSource"),
        ({"data_processing": DataProcessing(input_filter="$[")}, "$["),
        ({"data_processing": DataProcessing(join_source="Output")}, "join_source"),
    ],
)
def test_bad_settings_are_refused(
    transforms: TransformJobs, scheduler: Scheduler, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        transforms.create("t1", _spec(**changes))
    assert message in str(caught.value)
    assert scheduler.queue_depth() == 0
    with pytest.raises(NotFound):
        transforms.describe("t1")


def test_missing_model_input_and_duplicate_name(transforms: TransformJobs) -> None:
    with pytest.raises(NotFound, match="model 'nope'"):
        transforms.create("t1", _spec(model_name="nope"))
    with pytest.raises(NotFound, match="no input at store://nothing"):
        transforms.create("t1", _spec(input_uri="store://nothing"))
    with pytest.raises(InvalidArgument, match="transform job name"):
        transforms.create("bad_name", _spec())
    transforms.create("t1", _spec())
    with pytest.raises(AlreadyExists):
        transforms.create("t1", _spec())


def test_outputs_inside_the_input_are_no_input(
    transforms: TransformJobs, artifacts: LocalArtifactStore
) -> None:
    put_bytes(artifacts, "in/out/small.csv.out", b"old\n")
    job = transforms.create("t1", _spec(output_uri="store://in/out"))
    assert [f.key for f in job.files] == ["a/big.csv", "small.csv"]


# ----------------------------------------------------------------- running


def test_shards_are_assembled_in_order_and_the_job_completes(
    transforms: TransformJobs,
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    metrics: ControlMetrics,
    clock: FakeClock,
) -> None:
    transforms.create("t1", _spec(instance_count=5))  # all five shards leased at once
    leases = []
    while (lease := _acquire(scheduler)) is not None:
        leases.append(lease)
    job = transforms.describe("t1")
    assert job.start_time == clock.now
    assert {f.status for f in job.files} == {FileStatus.IN_PROGRESS}
    # Progress from a heartbeat shows per file.
    scheduler.heartbeat(
        HeartbeatReport(leases[0].task.task_id, 1, WORKER, records_done=3, bytes_done=30)
    )
    assert transforms.describe("t1").files[0].records_done == 3
    # Completed out of order: the assembly still follows shard order.
    for lease in reversed(leases):
        assert isinstance(lease.payload, TransformTaskPayload)
        _score(artifacts, lease.payload)
        _complete(scheduler, lease)
    job = transforms.describe("t1")
    assert [f.status for f in job.files] == [FileStatus.ASSEMBLING] * 2
    assert job.status is TransformJobStatus.IN_PROGRESS
    assert transforms.step() == 2
    job = transforms.describe("t1")
    assert job.status is TransformJobStatus.COMPLETED
    assert job.end_time == clock.now
    assert (job.shards_done, job.shards_total) == (5, 5)
    big = job.files[0]
    assert big.output_uri == "store://transform-jobs/t1/a/big.csv.out"
    assert artifacts.read_range("transform-jobs/t1/a/big.csv.out", 0, 10**6) == BIG.upper()
    assert artifacts.read_range("transform-jobs/t1/small.csv.out", 0, 100) == SMALL.upper()
    assert (big.records_done, big.bytes_done, big.records_failed) == (40, len(BIG), 0)
    assert big.errors_uri == ""
    # Nothing staged is left, and listings never showed it.
    assert [i.key for i in artifacts.list("transform-jobs/t1")] == [
        "transform-jobs/t1/a/big.csv.out",
        "transform-jobs/t1/small.csv.out",
    ]
    assert not (artifacts._objects / "transform-jobs" / "t1" / ".skmaker-shards").exists()
    assert _metric(metrics, "InProgress") == 1 and _metric(metrics, "Completed") == 1
    assert transforms.wanted_workers() == {}


def test_a_failed_shard_fails_its_file_only(
    transforms: TransformJobs, scheduler: Scheduler, artifacts: LocalArtifactStore
) -> None:
    transforms.create("t1", _spec(instance_count=2))
    first = _acquire(scheduler)
    second = _acquire(scheduler)
    assert first is not None and second is not None
    reason = "line 7 of store://in/a/big.csv: ModelError: could not convert 'x' to float"
    _complete(scheduler, first, TaskOutcome.FAILED, reason)
    job = transforms.describe("t1")
    assert job.files[0].status is FileStatus.FAILED
    assert job.files[0].failure_reason == reason
    # The file's queued shards left the queue; its running one hears "stop".
    assert scheduler.queue_depth() == 1
    answer = scheduler.heartbeat(HeartbeatReport(second.task.task_id, 1, WORKER))
    assert answer.stop_requested
    _run_all(scheduler, artifacts)  # small.csv
    transforms.step()
    # The cancelled shard's worker still holds it: the job waits for its report.
    assert transforms.describe("t1").status is TransformJobStatus.IN_PROGRESS
    _complete(scheduler, second, TaskOutcome.STOPPED)
    job = transforms.describe("t1")
    assert job.status is TransformJobStatus.FAILED
    assert job.failure_reason == f"1 of 2 input files failed: store://in/a/big.csv: {reason}"
    assert job.files[1].status is FileStatus.COMPLETED
    assert [i.key for i in artifacts.list("transform-jobs/t1")] == [
        "transform-jobs/t1/small.csv.out"
    ]


def test_record_errors_go_to_an_errors_file(
    transforms: TransformJobs, scheduler: Scheduler, artifacts: LocalArtifactStore
) -> None:
    transforms.create("t1", _spec(input_uri="store://in/small.csv", record_errors=True))
    lease = _acquire(scheduler)
    assert lease is not None and isinstance(lease.payload, TransformTaskPayload)
    _score(artifacts, lease.payload)
    _complete(scheduler, lease, errors=(RecordError(3, "bad 3"), RecordError(1, "bad 1")))
    transforms.step()
    job = transforms.describe("t1")
    assert job.status is TransformJobStatus.COMPLETED
    file = job.files[0]
    assert file.records_failed == 2
    assert file.errors_uri == "store://transform-jobs/t1/small.csv.out.errors"
    text = artifacts.read_range("transform-jobs/t1/small.csv.out.errors", 0, 1000).decode()
    assert [json.loads(line) for line in text.splitlines()] == [
        {"line": 1, "error": "bad 1"},
        {"line": 3, "error": "bad 3"},
    ]


def _complete_staging_errors(
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    lease: Lease,
    lines: list[int],
) -> None:
    """Completes a shard as a current worker does: bad records uploaded, only their count sent."""
    payload = lease.payload
    assert isinstance(payload, TransformTaskPayload)
    assert payload.errors_uri == payload.output_uri + ".errors"
    _score(artifacts, payload)
    if lines:
        text = b"".join(
            json.dumps({"line": n, "error": f"bad {n}"}).encode() + b"\n" for n in lines
        )
        artifacts.write(key_of(payload.errors_uri), lambda out: out.write(text))
    scheduler.complete(
        CompletionReport(
            task_id=lease.task.task_id,
            attempt=lease.task.attempt,
            worker_id=WORKER,
            outcome=TaskOutcome.SUCCEEDED,
            transform_result=TransformShardResult(
                records_done=(payload.end - payload.start) // 10 - len(lines),
                bytes_done=payload.end - payload.start,
                records_failed=len(lines),
            ),
        )
    )


def test_staged_errors_are_concatenated_in_shard_order_with_inline_ones(
    transforms: TransformJobs, scheduler: Scheduler, artifacts: LocalArtifactStore
) -> None:
    transforms.create("t1", _spec(input_uri="store://in/a", record_errors=True, instance_count=4))
    leases = []
    while (lease := _acquire(scheduler)) is not None:
        leases.append(lease)
    assert len(leases) == 4
    # Out of order; shard 1 from an older worker (inline); shard 2 had none this attempt,
    # though a lost attempt left an errors object behind: it is ignored.
    stale = leases[2].payload
    assert isinstance(stale, TransformTaskPayload)
    artifacts.write(key_of(stale.errors_uri), lambda out: out.write(b'{"line": 0}\n'))
    _complete_staging_errors(scheduler, artifacts, leases[3], [31, 35])
    _complete_staging_errors(scheduler, artifacts, leases[2], [])
    _score(artifacts, leases[1].payload)  # type: ignore[arg-type]
    _complete(scheduler, leases[1], errors=(RecordError(15, "x" * 5000), RecordError(12, "b")))
    _complete_staging_errors(scheduler, artifacts, leases[0], [1, 7])
    file = transforms.describe("t1").files[0]
    assert file.records_failed == 6
    transforms.step()
    job = transforms.describe("t1")
    assert job.status is TransformJobStatus.COMPLETED
    file = job.files[0]
    assert (file.records_failed, file.errors_uri) == (
        6,
        "store://transform-jobs/t1/big.csv.out.errors",
    )
    text = artifacts.read_range("transform-jobs/t1/big.csv.out.errors", 0, 10**6).decode()
    errors = [json.loads(line) for line in text.splitlines()]
    assert [error["line"] for error in errors] == [1, 7, 12, 15, 31, 35]
    # An inline message is cut to a sensible length.
    assert len(errors[3]["error"]) == 1024
    assert artifacts.read_range("transform-jobs/t1/big.csv.out", 0, 10**6) == BIG.upper()
    # The staged outputs and errors objects are gone.
    assert [i.key for i in artifacts.list("transform-jobs/t1")] == [
        "transform-jobs/t1/big.csv.out",
        "transform-jobs/t1/big.csv.out.errors",
    ]
    assert not (artifacts._objects / "transform-jobs" / "t1" / ".skmaker-shards").exists()


def test_a_lost_shard_is_rerun_and_its_output_overwritten(
    transforms: TransformJobs,
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    clock: FakeClock,
) -> None:
    transforms.create("t1", _spec(input_uri="store://in/small.csv"))
    lost = _acquire(scheduler)
    assert lost is not None and isinstance(lost.payload, TransformTaskPayload)
    # The lost worker got as far as uploading a (partial) output before it died.
    artifacts.write(key_of(lost.payload.output_uri), lambda out: out.write(b"PARTIAL"))
    clock.advance(11)
    assert scheduler.expire_leases() == 1
    assert transforms.describe("t1").files[0].status is FileStatus.IN_PROGRESS
    clock.advance(2)
    again = _acquire(scheduler)
    assert again is not None and again.task.attempt == 2
    assert again.payload == lost.payload
    _score(artifacts, again.payload)  # type: ignore[arg-type]
    _complete(scheduler, again)
    transforms.step()
    assert transforms.describe("t1").status is TransformJobStatus.COMPLETED
    assert artifacts.read_range("transform-jobs/t1/small.csv.out", 0, 100) == SMALL.upper()


def test_a_shard_lost_on_every_attempt_fails_its_file(
    transforms: TransformJobs, scheduler: Scheduler, clock: FakeClock
) -> None:
    transforms.create("t1", _spec(input_uri="store://in/small.csv"))
    for _ in range(3):
        clock.advance(10)
        assert _acquire(scheduler) is not None
        clock.advance(11)
        scheduler.expire_leases()
    job = transforms.describe("t1")
    assert job.status is TransformJobStatus.FAILED
    assert "batch worker lost (lease expired) on all 3 attempts" in job.failure_reason


def test_stop_withdraws_queued_shards_and_stops_running_ones(
    transforms: TransformJobs, scheduler: Scheduler, store: ControlStore
) -> None:
    transforms.create("t1", _spec())
    running = _acquire(scheduler)
    assert running is not None
    job = transforms.stop("t1")
    assert job.status is TransformJobStatus.STOPPING
    assert transforms.stop("t1").status is TransformJobStatus.STOPPING
    assert scheduler.queue_depth() == 0
    assert scheduler.heartbeat(HeartbeatReport(running.task.task_id, 1, WORKER)).stop_requested
    _complete(scheduler, running, TaskOutcome.STOPPED)
    job = transforms.describe("t1")
    assert job.status is TransformJobStatus.STOPPED
    assert {f.status for f in job.files} == {FileStatus.STOPPED}
    with pytest.raises(FailedPrecondition):
        transforms.stop("t1")
    assert all(task.state is TaskState.DONE for task in store.tasks_of_job("t1"))


def test_stop_of_a_queued_job_is_immediate(transforms: TransformJobs) -> None:
    transforms.create("t1", _spec())
    assert transforms.stop("t1").status is TransformJobStatus.STOPPED


def test_assembly_resumes_after_a_restart(
    tmp_path: Path,
    transforms: TransformJobs,
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    models: ModelRegistry,
    store: ControlStore,
    clock: FakeClock,
) -> None:
    transforms.create("t1", _spec())
    _run_all(scheduler, artifacts)
    # The control dies before assembling: a new one over the same database picks it up.
    reopened = ControlStore(tmp_path / "control.db")
    try:
        registry = prometheus_client.CollectorRegistry()
        fresh_metrics = ControlMetrics(registry)
        fresh_scheduler = Scheduler(
            reopened,
            fresh_metrics,
            lease_s=10,
            heartbeat_interval_s=2,
            max_attempts=3,
            retry_backoff_s=1,
            clock=clock,
        )
        again = TransformJobs(
            reopened,
            fresh_scheduler,
            artifacts,
            ModelRegistry(reopened, artifacts),
            fresh_metrics,
            clock=clock,
        )
        again.step()  # the assembler's first pass after the restart
        assert again.describe("t1").status is TransformJobStatus.COMPLETED
    finally:
        reopened.close()
    assert artifacts.read_range("transform-jobs/t1/a/big.csv.out", 0, 10**6) == BIG.upper()


def test_list_pages_newest_first(transforms: TransformJobs) -> None:
    for index in range(5):
        transforms.create(f"job-{index}", _spec(input_uri="store://in/small.csv"))
    transforms.stop("job-1")
    first = transforms.list(page_size=2)
    assert [job.name for job in first.jobs] == ["job-4", "job-3"]
    assert first.jobs[0].files == ()
    second = transforms.list(page_size=2, page_token=first.next_page_token)
    assert [job.name for job in second.jobs] == ["job-2", "job-1"]
    stopped = transforms.list(status=TransformJobStatus.STOPPED)
    assert [job.name for job in stopped.jobs] == ["job-1"]
    assert [job.name for job in transforms.list(name_prefix="job-0").jobs] == ["job-0"]
    with pytest.raises(InvalidArgument):
        transforms.list(page_token="garbage")


def test_wanted_workers_is_the_largest_instance_count(transforms: TransformJobs) -> None:
    # The fixture's models record no runtime: their workers are the default runtime's ("").
    assert transforms.wanted_workers() == {}
    transforms.create("t1", _spec(instance_count=1))
    transforms.create("t2", _spec(instance_count=3))
    assert transforms.wanted_workers() == {"": 3}
    transforms.stop("t2")
    assert transforms.wanted_workers() == {"": 1}


def test_stopping_a_training_job_of_the_same_name_leaves_the_shards_queued(
    transforms: TransformJobs, scheduler: Scheduler
) -> None:
    transforms.create("same", _spec())
    scheduler.enqueue(TaskKind.TRAINING, "same")
    assert scheduler.withdraw_queued("same")
    assert scheduler.queue_depth() == 5


def test_a_model_snapshot_keeps_its_runtime_versions_through_json() -> None:
    model = Model(
        name="m",
        model_data_uri="store://m/model.tar.gz",
        entry_point="serve.py",
        environment={"A": "1"},
        runtime_versions=RuntimeVersions(python="3.11.7", sklearn="1.9.1", numpy="2.4.6"),
    )
    again = model_from_json(model_to_json(model))
    assert again == model
    assert again.runtime_versions.sklearn == "1.9.1"
