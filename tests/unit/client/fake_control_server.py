"""An in-process fake of control's TrainingService and ArtifactService for client unit tests.

It runs on a real `grpc.server` bound to 127.0.0.1:0, so the client's serialization, metadata,
deadlines, retries and error mapping are exercised without the real control service.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import timestamp_pb2

from skmaker import Session
from skmaker.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    training_job_pb2,
    training_pb2,
    training_pb2_grpc,
)

COMPLETED = training_job_pb2.TRAINING_JOB_STATUS_COMPLETED


def timestamp(seconds: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp `seconds` after the epoch."""
    return timestamp_pb2.Timestamp(seconds=seconds)


@dataclass
class FakeControl:
    """State of the fake server, inspected and arranged by tests."""

    jobs: dict[str, training_job_pb2.TrainingJob] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    metadata_seen: list[dict[str, str]] = field(default_factory=list)
    unavailable_describes: int = 0
    """How many DescribeTrainingJob calls answer UNAVAILABLE before one succeeds."""
    describe_calls: int = 0
    create_requests: list[training_pb2.CreateTrainingJobRequest] = field(default_factory=list)
    log_batches_before_unavailable: int | None = None
    """When set, a log stream fails UNAVAILABLE after sending this many lines (once)."""
    next_status: int = COMPLETED
    """Status of the next created job (it is created already ended, for speed)."""
    next_failure_reason: str = ""
    address: str = ""


class _Training(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, state: FakeControl) -> None:
        self.state = state

    def _job(self, name: str, context: grpc.ServicerContext) -> training_job_pb2.TrainingJob:
        self.state.metadata_seen.append(dict(context.invocation_metadata()))
        if name not in self.state.jobs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"training job {name!r} not found")
        return self.state.jobs[name]

    def CreateTrainingJob(self, request, context):
        self.state.metadata_seen.append(dict(context.invocation_metadata()))
        if request.name in self.state.jobs:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"training job {request.name} exists")
        self.state.create_requests.append(request)
        job = training_job_pb2.TrainingJob(
            name=request.name,
            spec=request.spec,
            status=self.state.next_status,
            secondary_status="Completed",
            failure_reason=self.state.next_failure_reason,
            creation_time=timestamp(100),
            training_start_time=timestamp(101),
            training_end_time=timestamp(104),
            model_artifact_uri=f"store://{request.name}/output/model.tar.gz",
            attempts=1,
        )
        self.state.jobs[request.name] = job
        self.state.logs.setdefault(request.name, ["hello from the script", "done"])
        return training_pb2.CreateTrainingJobResponse(training_job=job)

    def DescribeTrainingJob(self, request, context):
        self.state.describe_calls += 1
        if self.state.unavailable_describes > 0:
            self.state.unavailable_describes -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return training_pb2.DescribeTrainingJobResponse(
            training_job=self._job(request.name, context)
        )

    def ListTrainingJobs(self, request, context):
        jobs = [
            job
            for job in sorted(self.state.jobs.values(), key=lambda j: j.name, reverse=True)
            if job.name.startswith(request.name_prefix)
            and (not request.status or job.status == request.status)
        ]
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = jobs[start : start + size]
        token = str(start + size) if start + size < len(jobs) else ""
        return training_pb2.ListTrainingJobsResponse(training_jobs=page, next_page_token=token)

    def StopTrainingJob(self, request, context):
        job = self._job(request.name, context)
        if job.status == COMPLETED:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.name} already ended")
        job.status = training_job_pb2.TRAINING_JOB_STATUS_STOPPING
        return training_pb2.StopTrainingJobResponse(training_job=job)

    def GetTrainingJobLogs(self, request, context):
        job = self._job(request.name, context)
        lines = self.state.logs.get(request.name, [])
        for sequence in range(request.from_sequence, len(lines)):
            if self.state.log_batches_before_unavailable == sequence:
                self.state.log_batches_before_unavailable = None
                context.abort(grpc.StatusCode.UNAVAILABLE, "control restarting")
            line = training_pb2.LogLine(
                sequence=sequence,
                timestamp=timestamp(200 + sequence),
                stream="stdout",
                text=lines[sequence],
            )
            yield training_pb2.GetTrainingJobLogsResponse(lines=[line], status=job.status)


class _Artifacts(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, state: FakeControl) -> None:
        self.state = state

    @staticmethod
    def _key(uri: str) -> str:
        return uri.removeprefix("store://").strip("/")

    def UploadArtifact(self, request_iterator, context):
        self.state.metadata_seen.append(dict(context.invocation_metadata()))
        header = next(request_iterator).header
        data = b"".join(message.chunk for message in request_iterator)
        if len(data) != header.size or hashlib.sha256(data).hexdigest() != header.sha256:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "digest mismatch")
        key = self._key(header.uri)
        self.state.objects[key] = data
        return artifacts_pb2.UploadArtifactResponse(artifact=self._info(key))

    def _info(self, key: str) -> artifacts_pb2.ArtifactInfo:
        data = self.state.objects[key]
        return artifacts_pb2.ArtifactInfo(
            uri=f"store://{key}", size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )

    def DownloadArtifact(self, request, context):
        key = self._key(request.uri)
        if key not in self.state.objects:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no artifact {request.uri}")
        yield artifacts_pb2.DownloadArtifactResponse(info=self._info(key))
        yield artifacts_pb2.DownloadArtifactResponse(chunk=self.state.objects[key])

    def ListArtifacts(self, request, context):
        prefix = self._key(request.uri_prefix)
        keys = sorted(k for k in self.state.objects if k == prefix or k.startswith(prefix + "/"))
        return artifacts_pb2.ListArtifactsResponse(artifacts=[self._info(k) for k in keys])


@pytest.fixture
def fake_control() -> Iterator[FakeControl]:
    """A running fake control server; `.address` is where to reach it."""
    state = FakeControl()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    training_pb2_grpc.add_TrainingServiceServicer_to_server(_Training(state), server)
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(_Artifacts(state), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    state.address = f"127.0.0.1:{port}"
    yield state
    server.stop(grace=None)


@pytest.fixture
def session(fake_control: FakeControl, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    """A client session to the fake control, with no token from the environment."""
    monkeypatch.delenv("SKMAKER_TOKEN", raising=False)
    monkeypatch.delenv("SKMAKER_TLS_CA", raising=False)
    with Session(fake_control.address, timeout_s=10) as client:
        yield client
