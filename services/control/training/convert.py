"""Pure conversions between the training-job wire messages and the control's domain values.

With `servicer`, the only training module that imports the generated protobuf modules.
"""

from __future__ import annotations

from services.control.artifacts.store import store_uri_of
from services.control.timestamps import timestamp
from services.control.training import values as tj
from services.control.training.jobs import LogBatch
from services.runtime.errors import InvalidArgument
from skmaker.v1 import (
    training_job_pb2,
    training_pb2,
)


def runtime_to_pb(versions: tj.RuntimeVersions) -> training_job_pb2.RuntimeVersions:
    """The wire form of a runtime (empty strings where unknown)."""
    return training_job_pb2.RuntimeVersions(
        python=versions.python,
        sklearn=versions.sklearn,
        numpy=versions.numpy,
        joblib=versions.joblib,
    )


def runtime_from_pb(message: training_job_pb2.RuntimeVersions) -> tj.RuntimeVersions:
    """The domain form of a reported runtime."""
    return tj.RuntimeVersions(message.python, message.sklearn, message.numpy, message.joblib)


_STATUS_TO_PB = {
    tj.TrainingJobStatus.IN_PROGRESS: training_job_pb2.TRAINING_JOB_STATUS_IN_PROGRESS,
    tj.TrainingJobStatus.COMPLETED: training_job_pb2.TRAINING_JOB_STATUS_COMPLETED,
    tj.TrainingJobStatus.FAILED: training_job_pb2.TRAINING_JOB_STATUS_FAILED,
    tj.TrainingJobStatus.STOPPING: training_job_pb2.TRAINING_JOB_STATUS_STOPPING,
    tj.TrainingJobStatus.STOPPED: training_job_pb2.TRAINING_JOB_STATUS_STOPPED,
}
_STATUS_FROM_PB = {pb: status for status, pb in _STATUS_TO_PB.items()}


def spec_from_pb(spec: training_job_pb2.TrainingJobSpec) -> tj.TrainingJobSpec:
    """The domain spec of a wire spec."""
    return tj.TrainingJobSpec(
        entry_point=spec.entry_point,
        source_uri=store_uri_of(spec.source_uri),
        hyperparameters=dict(spec.hyperparameters),
        channels=tuple(
            tj.Channel(c.name, store_uri_of(c.uri), c.content_type) for c in spec.channels
        ),
        metric_definitions=tuple(
            tj.MetricDefinition(m.name, m.regex) for m in spec.metric_definitions
        ),
        environment=dict(spec.environment),
        max_runtime_seconds=spec.max_runtime_seconds,
        output_uri=store_uri_of(spec.output_uri),
        shell_compat=spec.shell_compat,
        source_sha256=spec.source_sha256.strip().lower(),
        framework_version=spec.framework_version,
        # script_runtime is the control's to set.
    )


def spec_to_pb(spec: tj.TrainingJobSpec) -> training_job_pb2.TrainingJobSpec:
    """The wire spec of a domain spec."""
    return training_job_pb2.TrainingJobSpec(
        entry_point=spec.entry_point,
        source_uri=spec.source_uri,
        hyperparameters=dict(spec.hyperparameters),
        channels=[
            training_job_pb2.Channel(name=c.name, uri=c.uri, content_type=c.content_type)
            for c in spec.channels
        ],
        metric_definitions=[
            training_job_pb2.MetricDefinition(name=m.name, regex=m.regex)
            for m in spec.metric_definitions
        ],
        environment=dict(spec.environment),
        max_runtime_seconds=spec.max_runtime_seconds,
        output_uri=spec.output_uri,
        shell_compat=spec.shell_compat,
        source_sha256=spec.source_sha256,
        framework_version=spec.framework_version,
        script_runtime=spec.script_runtime,
    )


def status_from_pb(
    status: training_job_pb2.TrainingJobStatus.ValueType,
) -> tj.TrainingJobStatus | None:
    """The domain status of a wire status; None for UNSPECIFIED (no filter)."""
    if status == training_job_pb2.TRAINING_JOB_STATUS_UNSPECIFIED:
        return None
    try:
        return _STATUS_FROM_PB[status]
    except KeyError:
        raise InvalidArgument(f"unknown training job status {status}") from None


def training_job_to_pb(job: tj.TrainingJob) -> training_job_pb2.TrainingJob:
    """The wire form of a job."""
    message = training_job_pb2.TrainingJob(
        name=job.name,
        spec=spec_to_pb(job.spec),
        status=_STATUS_TO_PB[job.status],
        secondary_status=job.secondary_status,
        failure_reason=job.failure_reason,
        creation_time=timestamp(job.creation_time),
        model_artifact_uri=job.model_artifact_uri,
        output_artifact_uri=job.output_artifact_uri,
        attempts=job.attempts,
        runtime_versions=runtime_to_pb(job.runtime_versions),
        tuning_job_name=job.tuning_job_name,
    )
    if job.training_start_time is not None:
        message.training_start_time.CopyFrom(timestamp(job.training_start_time))
    if job.training_end_time is not None:
        message.training_end_time.CopyFrom(timestamp(job.training_end_time))
    for transition in job.transitions:
        entry = message.secondary_status_transitions.add(
            status=transition.status,
            start_time=timestamp(transition.start_time),
            message=transition.message,
        )
        if transition.end_time is not None:
            entry.end_time.CopyFrom(timestamp(transition.end_time))
    for metric in job.final_metrics:
        message.final_metrics.add(
            name=metric.name, value=metric.value, timestamp=timestamp(metric.timestamp)
        )
    return message


def log_batch_to_pb(batch: LogBatch) -> training_pb2.GetTrainingJobLogsResponse:
    """A batch of log lines on the wire."""
    return training_pb2.GetTrainingJobLogsResponse(
        lines=[
            training_pb2.LogLine(
                sequence=line.sequence,
                timestamp=timestamp(line.timestamp),
                stream=line.stream,
                text=line.text,
            )
            for line in batch.lines
        ],
        status=_STATUS_TO_PB[batch.status],
    )


def status_to_pb(status: tj.TrainingJobStatus) -> training_job_pb2.TrainingJobStatus.ValueType:
    """The wire status of a domain status."""
    return _STATUS_TO_PB[status]
