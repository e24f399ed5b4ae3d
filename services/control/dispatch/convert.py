"""Pure conversions between the dispatch wire messages (tasks, heartbeats, completions) and the
control's task values. With `servicer`, the only dispatch module that imports generated protobuf.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.control.dispatch.tasks import (
    CompletionReport,
    HeartbeatAnswer,
    HeartbeatReport,
    Lease,
    TaskKind,
    TaskOutcome,
    TransformShardResult,
    WorkerLogLine,
)
from services.control.timestamps import seconds_or_now, timestamp
from services.control.training import values as tj
from services.control.training.convert import runtime_from_pb, spec_to_pb
from services.control.training.jobs import TrainingTaskPayload
from services.control.transform.convert import transform_task_to_pb
from services.control.transform.jobs import TransformTaskPayload
from services.control.transform.values import RecordError
from services.runtime.errors import InvalidArgument
from skmaker.v1 import (
    dispatch_pb2,
)

_KIND_FROM_PB = {
    dispatch_pb2.TASK_KIND_TRAINING: TaskKind.TRAINING,
    dispatch_pb2.TASK_KIND_TRANSFORM: TaskKind.TRANSFORM,
}
_KIND_TO_PB = {kind: pb for pb, kind in _KIND_FROM_PB.items()}
_OUTCOME_FROM_PB = {
    dispatch_pb2.TASK_OUTCOME_SUCCEEDED: TaskOutcome.SUCCEEDED,
    dispatch_pb2.TASK_OUTCOME_FAILED: TaskOutcome.FAILED,
    dispatch_pb2.TASK_OUTCOME_STOPPED: TaskOutcome.STOPPED,
    dispatch_pb2.TASK_OUTCOME_MAX_RUNTIME_EXCEEDED: TaskOutcome.MAX_RUNTIME_EXCEEDED,
}


def task_kinds_from_pb(
    kinds: Iterable[dispatch_pb2.TaskKind.ValueType],
) -> tuple[TaskKind, ...]:
    """Domain task kinds; UNSPECIFIED or unknown values are refused."""
    try:
        return tuple(_KIND_FROM_PB[kind] for kind in kinds)
    except KeyError as err:
        raise InvalidArgument(f"unknown task kind {err.args[0]}") from None


def lease_to_pb(lease: Lease) -> dispatch_pb2.Task:
    """The wire task of a lease."""
    task = lease.task
    assert task.lease_expires is not None
    message = dispatch_pb2.Task(
        task_id=task.task_id,
        kind=_KIND_TO_PB[task.kind],
        attempt=task.attempt,
        lease_expires=timestamp(task.lease_expires),
        heartbeat_interval_seconds=lease.heartbeat_interval_s,
    )
    if isinstance(lease.payload, TrainingTaskPayload):
        message.training.CopyFrom(
            dispatch_pb2.TrainingTask(
                job_name=lease.payload.job_name,
                spec=spec_to_pb(lease.payload.spec),
                source_bundle_uri=lease.payload.source_bundle_uri,
            )
        )
    elif isinstance(lease.payload, TransformTaskPayload):
        message.transform.CopyFrom(transform_task_to_pb(lease.payload))
    return message


def _log_lines_from_pb(lines: Iterable[dispatch_pb2.WorkerLogLine]) -> tuple[WorkerLogLine, ...]:
    return tuple(
        WorkerLogLine(timestamp=seconds_or_now(line.timestamp), stream=line.stream, text=line.text)
        for line in lines
    )


def _metrics_from_pb(samples: Iterable[dispatch_pb2.MetricSample]) -> tuple[tj.MetricValue, ...]:
    return tuple(
        tj.MetricValue(name=s.name, value=s.value, timestamp=seconds_or_now(s.timestamp))
        for s in samples
    )


def heartbeat_from_pb(request: dispatch_pb2.HeartbeatRequest) -> HeartbeatReport:
    """The domain report of a Heartbeat request."""
    return HeartbeatReport(
        task_id=request.task_id,
        attempt=request.attempt,
        worker_id=request.worker_id,
        log_lines=_log_lines_from_pb(request.log_lines),
        metrics=_metrics_from_pb(request.metrics),
        secondary_status=request.secondary_status,
        records_done=request.records_done,
        bytes_done=request.bytes_done,
        log_offset=request.log_offset if request.HasField("log_offset") else None,
    )


def heartbeat_answer_to_pb(answer: HeartbeatAnswer) -> dispatch_pb2.HeartbeatResponse:
    """The wire answer to a heartbeat."""
    return dispatch_pb2.HeartbeatResponse(
        stop_requested=answer.stop_requested, lease_expires=timestamp(answer.lease_expires)
    )


def completion_from_pb(request: dispatch_pb2.CompleteTaskRequest) -> CompletionReport:
    """The domain report of a CompleteTask request.

    Raises:
        InvalidArgument: the outcome is unset or unknown.
    """
    outcome = _OUTCOME_FROM_PB.get(request.outcome)
    if outcome is None:
        raise InvalidArgument(
            "outcome is unset: report SUCCEEDED, FAILED, STOPPED or MAX_RUNTIME_EXCEEDED"
        )
    versions = request.runtime_versions
    return CompletionReport(
        task_id=request.task_id,
        attempt=request.attempt,
        worker_id=request.worker_id,
        outcome=outcome,
        failure_reason=request.failure_reason,
        model_artifact_uri=request.model_artifact_uri,
        output_artifact_uri=request.output_artifact_uri,
        runtime_versions=runtime_from_pb(versions),
        log_lines=_log_lines_from_pb(request.log_lines),
        metrics=_metrics_from_pb(request.metrics),
        transform_result=(
            _transform_result_from_pb(request.transform_result)
            if request.HasField("transform_result")
            else None
        ),
        log_offset=request.log_offset if request.HasField("log_offset") else None,
    )


def _transform_result_from_pb(result: dispatch_pb2.TransformShardResult) -> TransformShardResult:
    return TransformShardResult(
        records_done=result.records_done,
        bytes_done=result.bytes_done,
        record_errors=tuple(RecordError(e.line, e.message) for e in result.record_errors),
        records_failed=result.records_failed,
    )
