"""The trainer's gRPC link to the control: leases, heartbeats, completion and artifacts.

Every call carries a deadline. A control that restarts (even after kill -9) must not cost a
job: AcquireTask and CompleteTask are retried on UNAVAILABLE until `control_timeout_s`, and a
heartbeat that fails keeps its log lines for the next one. FAILED_PRECONDITION or NOT_FOUND on a
report means this attempt was superseded: the worker abandons it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2

from services.runtime.auth import token_metadata
from services.trainer.job import ChannelSpec, JobOutcome, TrainingAssignment
from skmaker import transfer
from skmaker.v1 import artifacts_pb2_grpc, dispatch_pb2, dispatch_pb2_grpc, training_job_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

_RPC_TIMEOUT_S = 30.0
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_SUPERSEDED = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}

_OUTCOMES = {
    "succeeded": dispatch_pb2.TASK_OUTCOME_SUCCEEDED,
    "failed": dispatch_pb2.TASK_OUTCOME_FAILED,
    "stopped": dispatch_pb2.TASK_OUTCOME_STOPPED,
    "max_runtime_exceeded": dispatch_pb2.TASK_OUTCOME_MAX_RUNTIME_EXCEEDED,
}


class AttemptSuperseded(Exception):
    """The control no longer recognises this attempt (its lease expired and it was re-queued)."""


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def assignment_from_task(task: dispatch_pb2.Task) -> TrainingAssignment:
    """The domain view of a training task."""
    spec = task.training.spec
    return TrainingAssignment(
        job_name=task.training.job_name,
        attempt=task.attempt,
        entry_point=spec.entry_point,
        source_uri=spec.source_uri,
        hyperparameters=dict(spec.hyperparameters),
        channels=[ChannelSpec(c.name, c.uri, c.content_type) for c in spec.channels],
        metric_definitions=[(m.name, m.regex) for m in spec.metric_definitions],
        environment=dict(spec.environment),
        max_runtime_s=float(spec.max_runtime_seconds),
        output_uri=spec.output_uri,
        shell_compat=spec.shell_compat,
    )


class ControlLink:
    """Calls to the control's DispatchService and ArtifactService for one worker."""

    def __init__(
        self, address: str, worker_id: str, *, token: str = "", control_timeout_s: float = 120.0
    ) -> None:
        self._channel = grpc.insecure_channel(
            address,
            options=[
                # Reconnect quickly after a control restart: a job is waiting on us.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self._dispatch = dispatch_pb2_grpc.DispatchServiceStub(self._channel)
        self._artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self._channel)
        self._metadata = token_metadata(token)
        self.worker_id = worker_id
        self._control_timeout_s = control_timeout_s

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def _retrying(self, call: Callable[[], T], what: str, cancel: threading.Event | None) -> T:
        deadline = time.monotonic() + self._control_timeout_s
        delay = 0.1
        while True:
            try:
                return call()
            except grpc.RpcError as err:
                if err.code() not in _RETRYABLE or time.monotonic() + delay > deadline:
                    raise
                log.warning("%s: control unreachable (%s); retrying", what, err.code().name)
            if cancel is not None and cancel.wait(delay):
                raise TimeoutError(f"{what}: cancelled while the control was unreachable")
            if cancel is None:
                time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def acquire(self, wait_s: float, cancel: threading.Event) -> dispatch_pb2.Task | None:
        """Long-polls for a training task; None when there was none (or on cancel)."""
        request = dispatch_pb2.AcquireTaskRequest(
            worker_id=self.worker_id,
            kinds=[dispatch_pb2.TASK_KIND_TRAINING],
            wait_seconds=wait_s,
        )

        def long_poll() -> dispatch_pb2.AcquireTaskResponse:
            call = self._dispatch.AcquireTask.future(
                request, timeout=wait_s + _RPC_TIMEOUT_S, metadata=self._metadata
            )
            # A draining worker must not sit out a long poll: SIGTERM ends the wait at once.
            while not call.done():
                if cancel.wait(0.05):
                    call.cancel()
                    raise TimeoutError("AcquireTask: cancelled by drain")
            return call.result()  # type: ignore[no-any-return]

        try:
            response = self._retrying(long_poll, "AcquireTask", cancel)
        except TimeoutError:
            return None
        return response.task if response.HasField("task") else None

    def heartbeat(
        self,
        task: dispatch_pb2.Task,
        log_lines: Sequence[tuple[str, str, float]],
        metrics: Sequence[tuple[str, float, float]],
        secondary_status: str,
        log_offset: int,
    ) -> bool:
        """Renews the lease and delivers progress; returns whether a stop was requested.

        Raises:
            AttemptSuperseded: the control gave the task to another attempt.
            grpc.RpcError: the control is unreachable (the caller keeps the progress).
        """
        request = dispatch_pb2.HeartbeatRequest(
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=self.worker_id,
            log_lines=[
                dispatch_pb2.WorkerLogLine(timestamp=_timestamp(ts), stream=stream, text=text)
                for stream, text, ts in log_lines
            ],
            metrics=[
                dispatch_pb2.MetricSample(name=name, value=value, timestamp=_timestamp(ts))
                for name, value, ts in metrics
            ],
            secondary_status=secondary_status,
            log_offset=log_offset,
        )
        try:
            response = self._dispatch.Heartbeat(
                request, timeout=_RPC_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.RpcError as err:
            if err.code() in _SUPERSEDED:
                raise AttemptSuperseded(err.details()) from err
            raise
        return bool(response.stop_requested)

    def complete(
        self,
        task: dispatch_pb2.Task,
        outcome: JobOutcome,
        log_lines: Sequence[tuple[str, str, float]],
        metrics: Sequence[tuple[str, float, float]],
        log_offset: int,
    ) -> None:
        """Reports how the attempt ended, retrying while the control is unreachable.

        Raises:
            AttemptSuperseded: the control gave the task to another attempt meanwhile.
        """
        versions = outcome.versions
        request = dispatch_pb2.CompleteTaskRequest(
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=self.worker_id,
            outcome=_OUTCOMES[outcome.outcome],
            failure_reason=outcome.failure_reason,
            model_artifact_uri=outcome.model_artifact_uri,
            output_artifact_uri=outcome.output_artifact_uri,
            runtime_versions=training_job_pb2.RuntimeVersions(
                python=versions.python, sklearn=versions.sklearn, numpy=versions.numpy
            )
            if versions
            else None,
            log_lines=[
                dispatch_pb2.WorkerLogLine(timestamp=_timestamp(ts), stream=stream, text=text)
                for stream, text, ts in log_lines
            ],
            metrics=[
                dispatch_pb2.MetricSample(name=name, value=value, timestamp=_timestamp(ts))
                for name, value, ts in metrics
            ],
            log_offset=log_offset,
        )
        try:
            self._retrying(
                lambda: self._dispatch.CompleteTask(
                    request, timeout=_RPC_TIMEOUT_S, metadata=self._metadata
                ),
                "CompleteTask",
                None,
            )
        except grpc.RpcError as err:
            if err.code() in _SUPERSEDED:
                raise AttemptSuperseded(err.details()) from err
            raise

    # ArtifactAccess, for the job.
    def download_file(self, uri: str, dest: Path) -> None:
        """Downloads one object (retried while the control is unreachable)."""
        self._retrying(
            lambda: transfer.download_file(self._artifacts, uri, dest, metadata=self._metadata),
            f"download {uri}",
            None,
        )

    def download_prefix(self, uri: str, dest_dir: Path) -> list[Path]:
        """Downloads everything at or below `uri` into `dest_dir`."""
        return self._retrying(
            lambda: transfer.download_prefix(
                self._artifacts, uri, dest_dir, metadata=self._metadata
            ),
            f"download {uri}",
            None,
        )

    def upload_file(self, path: Path, uri: str) -> str:
        """Uploads a file (retried while the control is unreachable); returns its URI."""
        info = self._retrying(
            lambda: transfer.upload_file(self._artifacts, path, uri, metadata=self._metadata),
            f"upload {uri}",
            None,
        )
        return info.uri
