"""The trainer's gRPC link to the control: training leases, heartbeats with logs and metrics,
completion, and artifacts (`services.runtime.dispatch_link` has the retry and fencing rules).

A heartbeat that fails keeps its log lines for the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from google.protobuf import timestamp_pb2

from services.runtime.dispatch_link import AttemptSuperseded, DispatchLink
from services.runtime.tls import ClientTls
from services.trainer.job import ChannelSpec, JobOutcome, TrainingAssignment
from skmaker.v1 import dispatch_pb2, training_job_pb2, transfer

__all__ = ["AttemptSuperseded", "ControlLink", "assignment_from_task"]

_OUTCOMES = {
    "succeeded": dispatch_pb2.TASK_OUTCOME_SUCCEEDED,
    "failed": dispatch_pb2.TASK_OUTCOME_FAILED,
    "stopped": dispatch_pb2.TASK_OUTCOME_STOPPED,
    "max_runtime_exceeded": dispatch_pb2.TASK_OUTCOME_MAX_RUNTIME_EXCEEDED,
}


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
        source_sha256=spec.source_sha256,
        source_bundle_uri=task.training.source_bundle_uri,
        script_runtime=spec.script_runtime,
    )


class ControlLink(DispatchLink):
    """Calls to the control's DispatchService and ArtifactService for one trainer."""

    def __init__(
        self,
        address: str,
        worker_id: str,
        *,
        token: str = "",
        control_timeout_s: float = 120.0,
        tls: ClientTls | None = None,
    ) -> None:
        super().__init__(
            address,
            worker_id,
            dispatch_pb2.TASK_KIND_TRAINING,
            token=token,
            control_timeout_s=control_timeout_s,
            tls=tls,
        )

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
        return self._send_heartbeat(request)

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
                python=versions.python,
                sklearn=versions.sklearn,
                numpy=versions.numpy,
                joblib=versions.joblib,
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
        self._send_completion(request)

    # ArtifactAccess, for the job (download_file and upload_file come from DispatchLink).
    def download_prefix(self, uri: str, dest_dir: Path) -> list[Path]:
        """Downloads everything at or below `uri` into `dest_dir`."""
        return self._retrying(
            lambda: transfer.download_prefix(
                self._artifacts, uri, dest_dir, metadata=self._metadata
            ),
            f"download {uri}",
            None,
        )
