"""Pure conversions between the wire messages (skmaker.v1) and the control's domain values.

With `servicer` modules, the only place that imports the generated protobuf modules. Times are
Unix seconds (float) in the domain and `google.protobuf.Timestamp` on the wire; an unset
timestamp from a worker means "now".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from services.control import training_job as tj
from services.control.artifact_store import ArtifactInfo, key_of
from services.control.backends import ReplicaInfo, ReplicaState
from services.control.endpoint import (
    EndpointStatus,
    EndpointView,
    ScalingMetric,
    ScalingPolicy,
)
from services.control.model import Model
from services.control.task import (
    CompletionReport,
    HeartbeatAnswer,
    HeartbeatReport,
    Lease,
    TaskKind,
    TaskOutcome,
    TransformShardResult,
    WorkerLogLine,
)
from services.control.training import LogBatch, TrainingTaskPayload
from services.control.transform import TransformTaskPayload
from services.control.transform_job import DataProcessing, RecordError, TransformJobSpec
from services.control.tuning_config import EarlyStoppingType, ObjectiveType, TuningConfig
from services.control.tuning_job import Trial, TuningJob, TuningJobSpec, TuningJobStatus
from services.control.tuning_space import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    ParameterRange,
    ScalingType,
    TuningStrategy,
)
from services.runtime.errors import InvalidArgument
from skmaker.v1 import (
    artifacts_pb2,
    dispatch_pb2,
    model_pb2,
    training_job_pb2,
    training_pb2,
    transform_job_pb2,
    tuning_job_pb2,
)

_STATUS_TO_PB = {
    tj.TrainingJobStatus.IN_PROGRESS: training_job_pb2.TRAINING_JOB_STATUS_IN_PROGRESS,
    tj.TrainingJobStatus.COMPLETED: training_job_pb2.TRAINING_JOB_STATUS_COMPLETED,
    tj.TrainingJobStatus.FAILED: training_job_pb2.TRAINING_JOB_STATUS_FAILED,
    tj.TrainingJobStatus.STOPPING: training_job_pb2.TRAINING_JOB_STATUS_STOPPING,
    tj.TrainingJobStatus.STOPPED: training_job_pb2.TRAINING_JOB_STATUS_STOPPED,
}
_STATUS_FROM_PB = {pb: status for status, pb in _STATUS_TO_PB.items()}
_KIND_FROM_PB = {
    dispatch_pb2.TASK_KIND_TRAINING: TaskKind.TRAINING,
    dispatch_pb2.TASK_KIND_TRANSFORM: TaskKind.TRANSFORM,
}
_KIND_TO_PB = {kind: pb for pb, kind in _KIND_FROM_PB.items()}
_ENDPOINT_STATUS_TO_PB = {
    EndpointStatus.CREATING: model_pb2.ENDPOINT_STATUS_CREATING,
    EndpointStatus.IN_SERVICE: model_pb2.ENDPOINT_STATUS_IN_SERVICE,
    EndpointStatus.UPDATING: model_pb2.ENDPOINT_STATUS_UPDATING,
    EndpointStatus.SYSTEM_UPDATING: model_pb2.ENDPOINT_STATUS_SYSTEM_UPDATING,
    EndpointStatus.DELETING: model_pb2.ENDPOINT_STATUS_DELETING,
    EndpointStatus.FAILED: model_pb2.ENDPOINT_STATUS_FAILED,
}
_REPLICA_STATE_TO_PB = {
    ReplicaState.STARTING: model_pb2.REPLICA_STATE_STARTING,
    ReplicaState.SERVING: model_pb2.REPLICA_STATE_SERVING,
    ReplicaState.DRAINING: model_pb2.REPLICA_STATE_DRAINING,
    ReplicaState.FAILED: model_pb2.REPLICA_STATE_FAILED,
}
_METRIC_FROM_PB = {
    model_pb2.SCALING_METRIC_UNSPECIFIED: ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA,
    model_pb2.SCALING_METRIC_CONCURRENT_REQUESTS_PER_REPLICA: (
        ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA
    ),
    model_pb2.SCALING_METRIC_INVOCATIONS_PER_REPLICA_PER_MINUTE: (
        ScalingMetric.INVOCATIONS_PER_REPLICA_PER_MINUTE
    ),
}
_METRIC_TO_PB = {
    ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA: (
        model_pb2.SCALING_METRIC_CONCURRENT_REQUESTS_PER_REPLICA
    ),
    ScalingMetric.INVOCATIONS_PER_REPLICA_PER_MINUTE: (
        model_pb2.SCALING_METRIC_INVOCATIONS_PER_REPLICA_PER_MINUTE
    ),
}
_OUTCOME_FROM_PB = {
    dispatch_pb2.TASK_OUTCOME_SUCCEEDED: TaskOutcome.SUCCEEDED,
    dispatch_pb2.TASK_OUTCOME_FAILED: TaskOutcome.FAILED,
    dispatch_pb2.TASK_OUTCOME_STOPPED: TaskOutcome.STOPPED,
    dispatch_pb2.TASK_OUTCOME_MAX_RUNTIME_EXCEEDED: TaskOutcome.MAX_RUNTIME_EXCEEDED,
}


# ----------------------------------------------------------------- time


def timestamp(seconds: float) -> Timestamp:
    """Unix seconds as a Timestamp."""
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def seconds_or_now(stamp: Timestamp) -> float:
    """A Timestamp as Unix seconds; the current time when it is unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return time.time()
    return stamp.seconds + stamp.nanos / 1e9


# ----------------------------------------------------------------- training jobs


def spec_from_pb(spec: training_job_pb2.TrainingJobSpec) -> tj.TrainingJobSpec:
    """The domain spec of a wire spec."""
    return tj.TrainingJobSpec(
        entry_point=spec.entry_point,
        source_uri=spec.source_uri,
        hyperparameters=dict(spec.hyperparameters),
        channels=tuple(tj.Channel(c.name, c.uri, c.content_type) for c in spec.channels),
        metric_definitions=tuple(
            tj.MetricDefinition(m.name, m.regex) for m in spec.metric_definitions
        ),
        environment=dict(spec.environment),
        max_runtime_seconds=spec.max_runtime_seconds,
        output_uri=spec.output_uri,
        shell_compat=spec.shell_compat,
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


# ----------------------------------------------------------------- dispatch


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
                job_name=lease.payload.job_name, spec=spec_to_pb(lease.payload.spec)
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


def transform_spec_to_pb(spec: TransformJobSpec) -> transform_job_pb2.TransformJobSpec:
    """The wire form of a transform job's spec."""
    processing: DataProcessing = spec.data_processing
    return transform_job_pb2.TransformJobSpec(
        model_name=spec.model_name,
        input_uri=spec.input_uri,
        output_uri=spec.output_uri,
        content_type=spec.content_type,
        accept=spec.accept,
        split_type=spec.split_type,
        batch_strategy=spec.batch_strategy,
        max_payload_mb=spec.max_payload_mb,
        max_concurrent_transforms=spec.max_concurrent_transforms,
        assemble_with=spec.assemble_with,
        compression_type=spec.compression_type,
        data_processing=transform_job_pb2.DataProcessing(
            input_filter=processing.input_filter,
            join_source=processing.join_source,
            output_filter=processing.output_filter,
        ),
        instance_count=spec.instance_count,
        environment=dict(spec.environment),
        record_errors=spec.record_errors,
        skip_header=spec.skip_header,
    )


def transform_task_to_pb(payload: TransformTaskPayload) -> dispatch_pb2.TransformTask:
    """The wire form of one transform shard handed to a batch worker."""
    return dispatch_pb2.TransformTask(
        job_name=payload.job_name,
        spec=transform_spec_to_pb(payload.spec),
        model=model_to_pb(payload.model),
        input_uri=payload.input_uri,
        shard_index=payload.shard_index,
        start_offset=payload.start,
        end_offset=payload.end,
        output_uri=payload.output_uri,
        is_first_shard=payload.is_first_shard,
        input_path=payload.input_path,
        input_size=payload.input_size,
        errors_uri=payload.errors_uri,
    )


# ----------------------------------------------------------------- artifacts


def artifact_info_to_pb(info: ArtifactInfo) -> artifacts_pb2.ArtifactInfo:
    """The wire form of an object's metadata."""
    return artifacts_pb2.ArtifactInfo(uri=info.uri, size=info.size, sha256=info.sha256)


def upload_from_pb(
    requests: Iterator[artifacts_pb2.UploadArtifactRequest],
) -> tuple[str, int, str, Iterator[bytes]]:
    """Splits an upload stream into (key, size, sha256, chunks).

    Raises:
        InvalidArgument: the first message is not a header, the key is bad, or (while the
            chunks are read) a second header arrives.
    """
    first = next(requests, None)
    if first is None or not first.HasField("header"):
        raise InvalidArgument("the first UploadArtifact message must carry the header")
    header = first.header

    def chunks() -> Iterator[bytes]:
        for message in requests:
            if message.HasField("header"):
                raise InvalidArgument("a second header arrived in the same upload")
            yield message.chunk

    return key_of(header.uri), header.size, header.sha256, chunks()


def list_prefix_from_pb(uri_prefix: str) -> str:
    """The key prefix of a ListArtifacts request; empty (or `store://`) lists everything."""
    if uri_prefix.rstrip("/") in {"", "store:"}:
        return ""
    return key_of(uri_prefix)


# ----------------------------------------------------------------- models and endpoints


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


def model_from_pb(model: model_pb2.Model) -> Model:
    """The domain model of a CreateModel request's model (times are set by the control)."""
    return Model(
        name=model.name,
        model_data_uri=model.model_data_uri,
        entry_point=model.entry_point,
        source_uri=model.source_uri,
        environment=dict(model.environment),
        training_job_name=model.training_job_name,
    )


def model_to_pb(model: Model) -> model_pb2.Model:
    """The wire form of a model."""
    return model_pb2.Model(
        name=model.name,
        model_data_uri=model.model_data_uri,
        entry_point=model.entry_point,
        source_uri=model.source_uri,
        environment=dict(model.environment),
        creation_time=timestamp(model.creation_time),
        training_job_name=model.training_job_name,
        runtime_versions=(
            runtime_to_pb(model.runtime_versions)
            if model.runtime_versions != tj.RuntimeVersions()
            else None
        ),
    )


def scaling_policy_from_pb(message: model_pb2.ScalingPolicy, is_set: bool) -> ScalingPolicy | None:
    """The domain policy; None when the request left the field unset.

    Raises:
        InvalidArgument: an unknown metric.
    """
    if not is_set:
        return None
    try:
        metric = _METRIC_FROM_PB[message.metric]
    except KeyError:
        raise InvalidArgument(f"unknown scaling metric {message.metric}") from None
    return ScalingPolicy(
        min_replicas=message.min_replicas,
        max_replicas=message.max_replicas,
        metric=metric,
        target_value=message.target_value,
        scale_out_window_seconds=message.scale_out_window_seconds,
        scale_in_window_seconds=message.scale_in_window_seconds,
        disable_scale_in=message.disable_scale_in,
    )


def _replica_to_pb(replica: ReplicaInfo) -> model_pb2.Replica:
    return model_pb2.Replica(
        id=replica.id,
        address=replica.address,
        state=_REPLICA_STATE_TO_PB[replica.state],
        metrics_address=replica.metrics_address,
        model_name=replica.model_name,
    )


def endpoint_to_pb(view: EndpointView) -> model_pb2.Endpoint:
    """The wire form of an endpoint with its replicas and events."""
    endpoint = view.endpoint
    message = model_pb2.Endpoint(
        name=endpoint.name,
        model_name=endpoint.model_name,
        status=_ENDPOINT_STATUS_TO_PB[endpoint.status],
        failure_reason=endpoint.failure_reason,
        address=endpoint.address,
        replicas=[_replica_to_pb(replica) for replica in view.replicas],
        desired_replicas=endpoint.desired_replicas,
        creation_time=timestamp(endpoint.creation_time),
        last_modified_time=timestamp(endpoint.last_modified_time),
        events=[
            model_pb2.EndpointEvent(timestamp=timestamp(event.timestamp), message=event.message)
            for event in view.events
        ],
    )
    policy = endpoint.scaling_policy
    if policy is not None:
        message.scaling_policy.CopyFrom(
            model_pb2.ScalingPolicy(
                min_replicas=policy.min_replicas,
                max_replicas=policy.max_replicas,
                metric=_METRIC_TO_PB[policy.metric],
                target_value=policy.target_value,
                scale_out_window_seconds=policy.scale_out_window_seconds,
                scale_in_window_seconds=policy.scale_in_window_seconds,
                disable_scale_in=policy.disable_scale_in,
            )
        )
    return message


# ----------------------------------------------------------------- tuning jobs

_TUNING_STATUS_TO_PB = {
    TuningJobStatus.IN_PROGRESS: tuning_job_pb2.TUNING_JOB_STATUS_IN_PROGRESS,
    TuningJobStatus.COMPLETED: tuning_job_pb2.TUNING_JOB_STATUS_COMPLETED,
    TuningJobStatus.FAILED: tuning_job_pb2.TUNING_JOB_STATUS_FAILED,
    TuningJobStatus.STOPPING: tuning_job_pb2.TUNING_JOB_STATUS_STOPPING,
    TuningJobStatus.STOPPED: tuning_job_pb2.TUNING_JOB_STATUS_STOPPED,
}
_TUNING_STATUS_FROM_PB = {pb: status for status, pb in _TUNING_STATUS_TO_PB.items()}


def tuning_spec_from_pb(spec: tuning_job_pb2.TuningJobSpec) -> TuningJobSpec:
    """The domain spec of a wire spec; empty strings and zeros take SageMaker's defaults.

    Raises:
        InvalidArgument: a strategy, objective type, early-stopping or scaling type that is
            not one of SageMaker's names. Other rules are `TuningJobs.create`'s.
    """
    ranges = spec.parameter_ranges
    parameters: list[ParameterRange] = [
        IntegerRange(r.name, r.min_value, r.max_value, _scaling(r.name, r.scaling_type))
        for r in ranges.integer_parameter_ranges
    ]
    parameters += [
        ContinuousRange(r.name, r.min_value, r.max_value, _scaling(r.name, r.scaling_type))
        for r in ranges.continuous_parameter_ranges
    ]
    parameters += [
        CategoricalRange(r.name, tuple(r.values)) for r in ranges.categorical_parameter_ranges
    ]
    config = TuningConfig(
        strategy=_choice(TuningStrategy, spec.strategy, TuningStrategy.BAYESIAN, "strategy"),
        objective_type=_choice(
            ObjectiveType, spec.objective_type, ObjectiveType.MAXIMIZE, "objective_type"
        ),
        max_jobs=spec.max_jobs or None,
        max_parallel_jobs=spec.max_parallel_jobs or 1,
        early_stopping=_choice(
            EarlyStoppingType,
            spec.early_stopping_type,
            EarlyStoppingType.OFF,
            "early_stopping_type",
        ),
        random_seed=spec.random_seed if spec.HasField("random_seed") else None,
        hyperband_min_resource=spec.hyperband_min_resource or 1,
        hyperband_max_resource=spec.hyperband_max_resource or None,
    )
    return TuningJobSpec(
        template=spec_from_pb(spec.training_job_template),
        objective_metric_name=spec.objective_metric_name,
        ranges=tuple(parameters),
        config=config,
        warm_start_parent_names=tuple(spec.warm_start_parent_names),
        warm_start_type=spec.warm_start_type,
    )


_Choice = TypeVar("_Choice", TuningStrategy, ObjectiveType, EarlyStoppingType, ScalingType)


def _choice(kind: type[_Choice], value: str, default: _Choice, field: str) -> _Choice:
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidArgument(f"{field} must be one of {allowed}, got {value!r}") from None


def _scaling(name: str, value: str) -> ScalingType:
    return _choice(ScalingType, value, ScalingType.AUTO, f"the scaling type of {name!r}")


def tuning_spec_to_pb(spec: TuningJobSpec) -> tuning_job_pb2.TuningJobSpec:
    """The wire spec of a stored spec; max_jobs is the resolved count (Grid: its size)."""
    config = spec.config
    message = tuning_job_pb2.TuningJobSpec(
        training_job_template=spec_to_pb(spec.template),
        objective_metric_name=spec.objective_metric_name,
        objective_type=str(config.objective_type),
        strategy=str(config.strategy),
        max_jobs=config.resolved_max_jobs(spec.ranges),
        max_parallel_jobs=config.max_parallel_jobs,
        early_stopping_type=str(config.early_stopping),
        warm_start_parent_names=list(spec.warm_start_parent_names),
        warm_start_type=spec.warm_start_type,
        hyperband_min_resource=config.hyperband_min_resource,
        hyperband_max_resource=config.hyperband_max_resource or 0,
    )
    if config.random_seed is not None:
        message.random_seed = config.random_seed
    ranges = message.parameter_ranges
    for parameter in spec.ranges:
        if isinstance(parameter, CategoricalRange):
            ranges.categorical_parameter_ranges.add(name=parameter.name, values=parameter.values)
        elif isinstance(parameter, IntegerRange):
            ranges.integer_parameter_ranges.add(
                name=parameter.name,
                min_value=parameter.min,
                max_value=parameter.max,
                scaling_type=str(parameter.scaling),
            )
        else:
            ranges.continuous_parameter_ranges.add(
                name=parameter.name,
                min_value=parameter.min,
                max_value=parameter.max,
                scaling_type=str(parameter.scaling),
            )
    return message


def tuning_status_from_pb(
    status: tuning_job_pb2.TuningJobStatus.ValueType,
) -> TuningJobStatus | None:
    """The domain status of a wire status; None for UNSPECIFIED (no filter)."""
    if status == tuning_job_pb2.TUNING_JOB_STATUS_UNSPECIFIED:
        return None
    try:
        return _TUNING_STATUS_FROM_PB[status]
    except KeyError:
        raise InvalidArgument(f"unknown tuning job status {status}") from None


def trial_to_pb(trial: Trial) -> tuning_job_pb2.Trial:
    """The wire form of a trial."""
    message = tuning_job_pb2.Trial(
        number=trial.number,
        training_job_name=trial.training_job_name,
        tuned_hyperparameters=dict(trial.tuned_hyperparameters),
        training_job_status=_STATUS_TO_PB[trial.training_job_status],
        final_objective_value=trial.objective_value or 0.0,
        objective_status=trial.objective_status.value,
        stopped_early=trial.stopped_early,
        creation_time=timestamp(trial.creation_time),
        failure_reason=trial.failure_reason,
    )
    if trial.training_start_time is not None:
        message.training_start_time.CopyFrom(timestamp(trial.training_start_time))
    if trial.training_end_time is not None:
        message.training_end_time.CopyFrom(timestamp(trial.training_end_time))
    return message


def tuning_job_to_pb(job: TuningJob) -> tuning_job_pb2.TuningJob:
    """The wire form of a tuning job (with the trials it holds)."""
    counters = job.counters
    message = tuning_job_pb2.TuningJob(
        name=job.name,
        spec=tuning_spec_to_pb(job.spec),
        status=_TUNING_STATUS_TO_PB[job.status],
        failure_reason=job.failure_reason,
        counters=tuning_job_pb2.TrialCounters(
            completed=counters.completed,
            in_progress=counters.in_progress,
            retryable_error=counters.retryable_error,
            non_retryable_error=counters.non_retryable_error,
            stopped=counters.stopped,
        ),
        trials=[trial_to_pb(trial) for trial in job.trials],
        creation_time=timestamp(job.creation_time),
    )
    if job.best_trial is not None:
        message.best_trial.CopyFrom(trial_to_pb(job.best_trial))
    if job.end_time is not None:
        message.end_time.CopyFrom(timestamp(job.end_time))
    return message
