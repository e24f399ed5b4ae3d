"""Pure conversions between the tuning-job wire messages and the control's domain values.

With `servicer`, the only tuning module that imports the generated protobuf modules.
"""

from __future__ import annotations

from typing import TypeVar

from services.control.timestamps import timestamp
from services.control.training.convert import spec_from_pb, spec_to_pb, status_to_pb
from services.control.tuning.config import EarlyStoppingType, ObjectiveType, TuningConfig
from services.control.tuning.space import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    ParameterRange,
    ScalingType,
    TuningStrategy,
)
from services.control.tuning.values import Trial, TuningJob, TuningJobSpec, TuningJobStatus
from services.runtime.errors import InvalidArgument
from skmaker.v1 import (
    tuning_job_pb2,
)

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
        training_job_status=status_to_pb(trial.training_job_status),
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
