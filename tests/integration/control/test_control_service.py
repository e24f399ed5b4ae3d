"""The control as a real process: artifacts, training API, a test acting as the worker, restarts.

Every test starts `python -m services.control` through the harness and talks to it with the
generated stubs. The test plays the trainer through DispatchService (acquire, heartbeat,
complete), so what is checked is the wire contract a real trainer relies on.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.runtime.call_limits import WORKER_MARKER
from skmaker.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    dispatch_pb2,
    dispatch_pb2_grpc,
    training_job_pb2,
    training_pb2,
    training_pb2_grpc,
)
from tests.harness import REPO_ROOT, ServiceProcess, run_service, source_bundle

pytestmark = pytest.mark.integration

GRPCURL = REPO_ROOT / ".venv" / "bin" / "grpcurl"
SOURCE_URI = "store://jobs/demo/source/sourcedir.tar.gz"
DATA_URI = "store://data/train"
FAST = ["--lease-s", "1", "--heartbeat-interval-s", "0.2", "--retry-backoff-s", "0.1"]
IN_PROGRESS = training_job_pb2.TRAINING_JOB_STATUS_IN_PROGRESS
COMPLETED = training_job_pb2.TRAINING_JOB_STATUS_COMPLETED
STOPPING = training_job_pb2.TRAINING_JOB_STATUS_STOPPING
STOPPED = training_job_pb2.TRAINING_JOB_STATUS_STOPPED
FAILED = training_job_pb2.TRAINING_JOB_STATUS_FAILED


# ----------------------------------------------------------------- helpers


def _start(tmp_path: Path, *extra: str, label: str = "control") -> ServiceProcess:
    return run_service(
        "control", tmp_path, ["--data-dir", str(tmp_path / "data"), *FAST, *extra], label=label
    )


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ServiceProcess]:
    service = _start(tmp_path)
    try:
        yield service
    finally:
        service.stop()


class Clients:
    """The three stubs over one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        self.training = training_pb2_grpc.TrainingServiceStub(channel)
        self.dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)


def _clients(service: ServiceProcess) -> Clients:
    return Clients(service.channel())


def _upload_messages(
    uri: str, data: bytes, *, size: int | None = None, sha256: str | None = None
) -> Iterator[artifacts_pb2.UploadArtifactRequest]:
    yield artifacts_pb2.UploadArtifactRequest(
        header=artifacts_pb2.UploadHeader(
            uri=uri,
            size=len(data) if size is None else size,
            sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        )
    )
    for start in range(0, len(data), 4096):
        yield artifacts_pb2.UploadArtifactRequest(chunk=data[start : start + 4096])


def _upload(
    clients: Clients, uri: str, data: bytes, as_worker: bool = False
) -> artifacts_pb2.ArtifactInfo:
    # Workers mark their calls; only they may write below a training job's output.
    metadata = [WORKER_MARKER] if as_worker else []
    messages = _upload_messages(uri, data)
    return clients.artifacts.UploadArtifact(messages, metadata=metadata, timeout=10).artifact


def _seed_inputs(clients: Clients) -> None:
    _upload(clients, SOURCE_URI, source_bundle({"train.py": b"print('hi')\n", "lib/util.py": b""}))
    _upload(clients, f"{DATA_URI}/iris.csv", b"5.1,3.5,1.4,0.2,0\n")


def _spec(**changes: Any) -> training_job_pb2.TrainingJobSpec:
    fields: dict[str, Any] = {
        "entry_point": "train.py",
        "source_uri": SOURCE_URI,
        "hyperparameters": {"max_leaf_nodes": "30"},
        "channels": [training_job_pb2.Channel(name="train", uri=DATA_URI)],
        "metric_definitions": [training_job_pb2.MetricDefinition(name="acc", regex="acc=(\\S+)")],
    }
    fields.update(changes)
    return training_job_pb2.TrainingJobSpec(**fields)


def _create(clients: Clients, name: str, **changes: Any) -> training_job_pb2.TrainingJob:
    request = training_pb2.CreateTrainingJobRequest(name=name, spec=_spec(**changes))
    return clients.training.CreateTrainingJob(request, timeout=10).training_job


def _describe(clients: Clients, name: str) -> training_job_pb2.TrainingJob:
    request = training_pb2.DescribeTrainingJobRequest(name=name)
    return clients.training.DescribeTrainingJob(request, timeout=10).training_job


def _acquire(clients: Clients, worker: str = "worker-1", wait_s: float = 5.0) -> dispatch_pb2.Task:
    response = clients.dispatch.AcquireTask(
        dispatch_pb2.AcquireTaskRequest(
            worker_id=worker, kinds=[dispatch_pb2.TASK_KIND_TRAINING], wait_seconds=wait_s
        ),
        timeout=wait_s + 5,
    )
    assert response.HasField("task"), "no task was handed out"
    return response.task


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _heartbeat(
    clients: Clients,
    task: dispatch_pb2.Task,
    *lines: str,
    status: str = "",
    worker: str = "worker-1",
) -> dispatch_pb2.HeartbeatResponse:
    return clients.dispatch.Heartbeat(
        dispatch_pb2.HeartbeatRequest(
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=worker,
            log_lines=[
                dispatch_pb2.WorkerLogLine(timestamp=_now(), stream="stdout", text=line)
                for line in lines
            ],
            secondary_status=status,
        ),
        timeout=10,
    )


def _complete(
    clients: Clients, task: dispatch_pb2.Task, outcome: int, **fields: Any
) -> dispatch_pb2.CompleteTaskResponse:
    request = dispatch_pb2.CompleteTaskRequest(
        task_id=task.task_id, attempt=task.attempt, worker_id="worker-1", outcome=outcome, **fields
    )
    return clients.dispatch.CompleteTask(request, timeout=10)


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()  # type: ignore[no-any-return]


def _stored_files(tmp_path: Path) -> list[str]:
    objects = tmp_path / "data" / "artifacts" / "objects"
    return sorted(p.relative_to(objects).as_posix() for p in objects.rglob("*") if p.is_file())


# ----------------------------------------------------------------- process basics


def test_grpcurl_sees_every_service_and_health(control: ServiceProcess) -> None:
    listed = subprocess.run(
        [str(GRPCURL), "-plaintext", control.address, "list"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout.split()
    for service in (
        "skmaker.v1.TrainingService",
        "skmaker.v1.ArtifactService",
        "skmaker.v1.DispatchService",
        "grpc.health.v1.Health",
    ):
        assert service in listed
    health = subprocess.run(
        [str(GRPCURL), "-plaintext", control.address, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert '"status": "SERVING"' in health


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=20
    )


@pytest.mark.parametrize(
    ("symbol", "shown"),
    [
        ("skmaker.v1.InferenceService.Predict", "rpc Predict ( .skmaker.v1.PredictRequest )"),
        ("skmaker.v1.TrainingService.CreateTrainingJob", "rpc CreateTrainingJob ("),
        ("grpc.health.v1.Health.Check", "rpc Check ( .grpc.health.v1.HealthCheckRequest )"),
    ],
)
def test_grpcurl_describes_a_method(control: ServiceProcess, symbol: str, shown: str) -> None:
    described = _grpcurl(control.address, "describe", symbol)
    assert described.returncode == 0, described.stderr
    assert f"{symbol} is a method:" in described.stdout
    assert shown in described.stdout


def test_predict_sent_to_the_control_says_where_it_is_served(control: ServiceProcess) -> None:
    sent = _grpcurl(
        "-d",
        '{"endpoint_name": "iris", "content_type": "text/csv", "text": "1,2"}',
        control.address,
        "skmaker.v1.InferenceService/Predict",
    )
    assert "Code: Unimplemented" in sent.stdout + sent.stderr
    assert "served by each endpoint's replicas and by the gateway" in sent.stderr
    assert "there is no endpoint 'iris'" in sent.stderr
    with grpc.insecure_channel(control.address) as channel:
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
        with pytest.raises(grpc.RpcError) as refused:
            ready(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "DescribeEndpoint gives an endpoint's address" in str(refused.value.details())


def test_metrics_are_exported(control: ServiceProcess) -> None:
    clients = _clients(control)
    _seed_inputs(clients)
    _create(clients, "counted")
    url = f"http://127.0.0.1:{control.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert 'skmaker_control_training_jobs_total{status="InProgress"} 1.0' in text
    assert "skmaker_control_queue_depth 1.0" in text
    assert "skmaker_control_lease_expirations_total 0.0" in text


def test_sigterm_during_a_long_poll_exits_zero_promptly(tmp_path: Path) -> None:
    service = _start(tmp_path)
    clients = _clients(service)
    outcome: list[object] = []

    def poll() -> None:
        try:
            outcome.append(
                clients.dispatch.AcquireTask(
                    dispatch_pb2.AcquireTaskRequest(
                        worker_id="w", kinds=[dispatch_pb2.TASK_KIND_TRAINING], wait_seconds=30
                    ),
                    timeout=40,
                )
            )
        except grpc.RpcError as err:
            outcome.append(err.code())

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)  # not a readiness wait: lets the poll reach the server before SIGTERM
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 5
    poller.join(timeout=10)
    assert outcome


# ----------------------------------------------------------------- artifacts


def test_artifacts_upload_download_list(control: ServiceProcess) -> None:
    clients = _clients(control)
    data = bytes(range(256)) * 5000  # 1.28 MB: two download chunks
    info = _upload(clients, "store://data/a/big.bin", data)
    assert (info.uri, info.size, info.sha256) == (
        "store://data/a/big.bin",
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    _upload(clients, "data/a/sub/x.csv", b"x")
    _upload(clients, "data/ab.csv", b"y")

    messages = list(
        clients.artifacts.DownloadArtifact(
            artifacts_pb2.DownloadArtifactRequest(uri="store://data/a/big.bin"), timeout=10
        )
    )
    assert messages[0].info == info
    assert [len(m.chunk) for m in messages[1:]] == [1024 * 1024, len(data) - 1024 * 1024]
    assert b"".join(m.chunk for m in messages[1:]) == data

    def listed(prefix: str) -> list[str]:
        request = artifacts_pb2.ListArtifactsRequest(uri_prefix=prefix)
        return [a.uri for a in clients.artifacts.ListArtifacts(request, timeout=10).artifacts]

    assert listed("store://data/a") == ["store://data/a/big.bin", "store://data/a/sub/x.csv"]
    assert listed("store://data/a/big.bin") == ["store://data/a/big.bin"]
    assert listed("store://data/a/b") == []
    missing = artifacts_pb2.DownloadArtifactRequest(uri="store://data/none")
    assert _code(lambda: list(clients.artifacts.DownloadArtifact(missing, timeout=10))) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_bad_uploads_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    service = _start(tmp_path, "--max-upload-bytes", "100000")
    try:
        clients = _clients(service)
        upload = clients.artifacts.UploadArtifact
        data = b"z" * 5000

        def no_header() -> Iterator[artifacts_pb2.UploadArtifactRequest]:
            yield artifacts_pb2.UploadArtifactRequest(chunk=b"abc")

        cases = {
            "oversize": (
                _upload_messages("store://up/big", b"", size=100001),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ),
            "no header": (no_header(), grpc.StatusCode.INVALID_ARGUMENT),
            "digest mismatch": (
                _upload_messages("store://up/k", data, sha256="0" * 64),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "too many bytes": (
                _upload_messages("store://up/k", data, size=4000),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "too few bytes": (
                _upload_messages("store://up/k", data, size=6000),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "bad key": (_upload_messages("store://../etc", data), grpc.StatusCode.INVALID_ARGUMENT),
        }
        for name, (messages, code) in cases.items():
            assert _code(lambda m=messages: upload(m, timeout=10)) == code, name  # type: ignore[misc]
        assert _stored_files(tmp_path) == []
        listed = clients.artifacts.ListArtifacts(
            artifacts_pb2.ListArtifactsRequest(uri_prefix="store://"), timeout=10
        )
        assert list(listed.artifacts) == []
    finally:
        service.stop()


# ----------------------------------------------------------------- training API


def test_create_validation_codes(control: ServiceProcess) -> None:
    clients = _clients(control)
    _seed_inputs(clients)
    _create(clients, "taken")
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases: list[tuple[str, dict[str, Any], grpc.StatusCode]] = [
        ("bad_name", {}, invalid),
        ("taken", {}, grpc.StatusCode.ALREADY_EXISTS),
        ("no-entry", {"entry_point": ""}, invalid),
        ("no-source", {"source_uri": "store://nothing.tar.gz"}, not_found),
        ("not-in-bundle", {"entry_point": "missing.py"}, invalid),
        (
            "bad-channel",
            {"channels": [training_job_pb2.Channel(name="a b", uri=DATA_URI)]},
            invalid,
        ),
        (
            "no-data",
            {"channels": [training_job_pb2.Channel(name="t", uri="store://none")]},
            not_found,
        ),
        (
            "no-file",
            {"channels": [training_job_pb2.Channel(name="t", uri="file:///no/x")]},
            not_found,
        ),
        ("s3", {"channels": [training_job_pb2.Channel(name="t", uri="s3://b/k")]}, invalid),
        (
            "bad-regex",
            {"metric_definitions": [training_job_pb2.MetricDefinition(name="m", regex="(")]},
            invalid,
        ),
        ("bad-env", {"environment": {"1A": "x"}}, invalid),
        ("long-run", {"max_runtime_seconds": 29 * 86400}, invalid),
    ]
    for name, changes, code in cases:
        assert _code(lambda: _create(clients, name, **changes)) == code, name  # noqa: B023
    with pytest.raises(grpc.RpcError) as caught:
        _create(clients, "not-in-bundle", entry_point="missing.py")
    assert "missing.py" in caught.value.details() and "train.py" in caught.value.details()
    listed = clients.training.ListTrainingJobs(training_pb2.ListTrainingJobsRequest(), timeout=10)
    assert [job.name for job in listed.training_jobs] == ["taken"]
    assert _code(lambda: _describe(clients, "nope")) == grpc.StatusCode.NOT_FOUND


def test_worker_flow_with_followed_logs(control: ServiceProcess) -> None:
    clients = _clients(control)
    _seed_inputs(clients)
    created = _create(clients, "flow")
    assert (created.status, created.secondary_status) == (IN_PROGRESS, "Starting")

    followed: list[tuple[int, str]] = []
    statuses: list[int] = []

    def follow() -> None:
        request = training_pb2.GetTrainingJobLogsRequest(name="flow", follow=True)
        for batch in clients.training.GetTrainingJobLogs(request, timeout=30):
            followed.extend((line.sequence, line.text) for line in batch.lines)
            statuses.append(batch.status)

    follower = threading.Thread(target=follow)
    follower.start()

    task = _acquire(clients)
    assert (task.kind, task.attempt) == (dispatch_pb2.TASK_KIND_TRAINING, 1)
    assert task.training.job_name == "flow"
    assert task.training.spec.output_uri == "store://jobs"
    assert task.heartbeat_interval_seconds == pytest.approx(0.2)
    _heartbeat(clients, task, status="Downloading")
    answer = clients.dispatch.Heartbeat(
        dispatch_pb2.HeartbeatRequest(
            task_id=task.task_id,
            attempt=1,
            worker_id="worker-1",
            secondary_status="Training",
            log_lines=[
                dispatch_pb2.WorkerLogLine(timestamp=_now(), stream="stdout", text="acc=0.9")
            ],
            metrics=[dispatch_pb2.MetricSample(name="acc", value=0.9, timestamp=_now())],
        ),
        timeout=10,
    )
    assert not answer.stop_requested
    _wait_until(lambda: (0, "acc=0.9") in followed)  # streamed while still running
    assert follower.is_alive()

    _heartbeat(clients, task, "saving", status="Uploading")
    model_uri = "store://jobs/flow/output/model.tar.gz"
    # A user may not put a model there; the job's trainer may.
    with pytest.raises(grpc.RpcError) as refused:
        _upload(clients, model_uri, b"not the model")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    _upload(clients, model_uri, b"model", as_worker=True)
    completion = {
        "model_artifact_uri": model_uri,
        "runtime_versions": training_job_pb2.RuntimeVersions(
            python="3.11.7", sklearn="1.9", numpy="2.4"
        ),
        "log_lines": [dispatch_pb2.WorkerLogLine(timestamp=_now(), stream="stderr", text="bye")],
    }
    _complete(clients, task, dispatch_pb2.TASK_OUTCOME_SUCCEEDED, **completion)
    _complete(clients, task, dispatch_pb2.TASK_OUTCOME_SUCCEEDED, **completion)  # repeat: ignored
    follower.join(timeout=10)
    assert not follower.is_alive(), "log follow did not end at completion"
    assert followed == [(0, "acc=0.9"), (1, "saving"), (2, "bye")]
    assert statuses[-1] == COMPLETED

    job = _describe(clients, "flow")
    assert (job.status, job.secondary_status, job.attempts) == (COMPLETED, "Completed", 1)
    assert [t.status for t in job.secondary_status_transitions] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert all(t.HasField("end_time") for t in job.secondary_status_transitions)
    assert job.model_artifact_uri == model_uri
    assert job.runtime_versions.sklearn == "1.9"
    assert [(m.name, m.value) for m in job.final_metrics] == [("acc", 0.9)]
    assert job.HasField("training_start_time") and job.HasField("training_end_time")
    assert (
        _code(
            lambda: clients.training.StopTrainingJob(
                training_pb2.StopTrainingJobRequest(name="flow"), timeout=10
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )


def test_stop_flows(control: ServiceProcess) -> None:
    clients = _clients(control)
    _seed_inputs(clients)
    _create(clients, "running")
    task = _acquire(clients)
    _create(clients, "queued")

    def stop(name: str) -> training_job_pb2.TrainingJob:
        request = training_pb2.StopTrainingJobRequest(name=name)
        return clients.training.StopTrainingJob(request, timeout=10).training_job

    assert stop("queued").status == STOPPED
    assert stop("running").status == STOPPING
    assert _heartbeat(clients, task).stop_requested
    _complete(clients, task, dispatch_pb2.TASK_OUTCOME_STOPPED)
    assert _describe(clients, "running").status == STOPPED
    empty = clients.dispatch.AcquireTask(
        dispatch_pb2.AcquireTaskRequest(worker_id="w", kinds=[dispatch_pb2.TASK_KIND_TRAINING]),
        timeout=10,
    )
    assert not empty.HasField("task")


def test_lost_worker_is_retried_and_fenced_off(control: ServiceProcess) -> None:
    clients = _clients(control)
    _seed_inputs(clients)
    _create(clients, "lossy")
    first = _acquire(clients, "worker-1")
    # The worker goes silent; with --lease-s 1 the reaper takes the task back.
    second = _acquire(clients, "worker-2", wait_s=10)
    assert (second.task_id, second.attempt) == (first.task_id, 2)
    code = _code(lambda: _heartbeat(clients, first))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    job = _describe(clients, "lossy")
    assert job.attempts == 2
    messages = [t.message for t in job.secondary_status_transitions]
    assert "worker worker-1 lost (lease expired); retrying, attempt 2 of 3" in messages
    _heartbeat(clients, second, worker="worker-2")


def test_job_fails_after_every_attempt_is_lost(control: ServiceProcess) -> None:
    clients = _clients(control)
    _seed_inputs(clients)
    _create(clients, "doomed")
    for _ in range(3):
        _acquire(clients, wait_s=10)
    _wait_until(lambda: _describe(clients, "doomed").status == FAILED)
    assert _describe(clients, "doomed").failure_reason == (
        "InternalServerError: worker lost (lease expired) on all 3 attempts"
    )


def test_kill_9_and_restart_keeps_jobs_and_leases(tmp_path: Path) -> None:
    # A longer lease here: the surviving worker must get back in before it expires, and a
    # control restart on a busy machine (module imports alone) has taken more than 3 s.
    service = _start(tmp_path, "--lease-s", "8")
    clients = _clients(service)
    _seed_inputs(clients)
    _create(clients, "survivor")
    _create(clients, "orphan")
    survivor = _acquire(clients, "worker-1")
    orphan = _acquire(clients, "worker-2")
    assert (survivor.training.job_name, orphan.training.job_name) == ("survivor", "orphan")
    _heartbeat(clients, survivor, "before the crash", status="Training")
    service.kill()

    restarted = _start(tmp_path, "--lease-s", "8", label="control-restarted")
    try:
        clients = _clients(restarted)
        assert _describe(clients, "survivor").secondary_status == "Training"
        _heartbeat(clients, survivor, "after the crash")  # the lease stood
        # worker-2 never comes back: its task is retried with the next attempt.
        retried = _acquire(clients, "worker-3", wait_s=30)
        assert (retried.training.job_name, retried.attempt) == ("orphan", 2)
        _complete(clients, survivor, dispatch_pb2.TASK_OUTCOME_SUCCEEDED)
        job = _describe(clients, "survivor")
        assert job.status == COMPLETED
        logs = clients.training.GetTrainingJobLogs(
            training_pb2.GetTrainingJobLogsRequest(name="survivor"), timeout=10
        )
        assert [line.text for batch in logs for line in batch.lines] == [
            "before the crash",
            "after the crash",
        ]
    finally:
        restarted.stop()
