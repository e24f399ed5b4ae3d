"""Tuning-job values as the control stores and serves them (mirrors tuning_job.proto).

A tuning job is a spec (the training-job template, the objective, the ranges and the search
config), a status, and trials. A trial is an ordinary training job launched by the tuning job
plus what the tuner made of it: the tuned hyperparameters it ran with, how the tuner was told
it ended, its final objective and whether early stopping ended it. The rules that make a
trial's training job from the spec (its name and hyperparameters) live here too. Times are Unix
seconds; statuses use SageMaker's spelling (`InProgress`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.control.names import Resource, require_resource_name
from services.control.training.values import TrainingJobSpec, TrainingJobStatus
from services.control.tuning.config import TuningConfig
from services.control.tuning.space import ParameterRange
from services.control.tuning.tuner import TrialState

# SageMaker's rule for HyperParameterTuningJobName: the job-name rule, at most 32 chars.
MAX_WARM_START_PARENTS = 5
# Hyperparameters the control adds to every trial (contract §1.5, "Tuning jobs").
OBJECTIVE_METRIC_KEY = "_tuning_objective_metric"
ESTIMATOR_CLASS_KEY = "sagemaker_estimator_class_name"
ESTIMATOR_MODULE_KEY = "sagemaker_estimator_module"
# What the SageMaker SDK writes for its SKLearn estimator, JSON-encoded like every Framework
# hyperparameter; a template that carries its own values keeps them.
SKLEARN_ESTIMATOR_CLASS = '"SKLearn"'
SKLEARN_ESTIMATOR_MODULE = '"sagemaker.sklearn.estimator"'


class TuningJobStatus(enum.StrEnum):
    """Overall status (SageMaker's HyperParameterTuningJobStatus)."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"

    @property
    def is_terminal(self) -> bool:
        """True once the job can change no more."""
        return self in {TuningJobStatus.COMPLETED, TuningJobStatus.FAILED, TuningJobStatus.STOPPED}


class WarmStartType(enum.StrEnum):
    """How parent tuning jobs seed a new one (SageMaker's HyperParameterTuningJobWarmStartType)."""

    IDENTICAL_DATA_AND_ALGORITHM = "IdenticalDataAndAlgorithm"
    TRANSFER_LEARNING = "TransferLearning"


class ObjectiveStatus(enum.StrEnum):
    """Whether a trial produced the objective (SageMaker's ObjectiveStatus)."""

    SUCCEEDED = "Succeeded"
    PENDING = "Pending"
    FAILED = "Failed"


@dataclass(frozen=True)
class TuningJobSpec:
    """What a user asks to tune (TuningJobSpec in tuning_job.proto, decoded).

    Attributes:
        template: The training job every trial starts from; its hyperparameters are the static
            ones, its metric definitions name the objective.
        objective_metric_name: One of the template's metric definitions.
        ranges: The tuned hyperparameters.
        config: Strategy, objective type, budget, early stopping, seed, Hyperband resources.
        warm_start_parent_names: Earlier tuning jobs whose completed trials seed this one.
        warm_start_type: IdenticalDataAndAlgorithm or TransferLearning; empty without parents.
    """

    template: TrainingJobSpec
    objective_metric_name: str
    ranges: tuple[ParameterRange, ...]
    config: TuningConfig = field(default_factory=TuningConfig)
    warm_start_parent_names: tuple[str, ...] = ()
    warm_start_type: str = ""


@dataclass(frozen=True)
class TrialCounters:
    """Trials by the status of their training job (SageMaker's TrainingJobStatusCounters).

    Retries happen inside a training job (a lost worker's task is leased again), so a trial
    never waits in RetryableError: `retryable_error` stays 0 and failures are non-retryable.
    """

    completed: int = 0
    in_progress: int = 0
    retryable_error: int = 0
    non_retryable_error: int = 0
    stopped: int = 0


@dataclass(frozen=True)
class Trial:
    """One trial: its training job and what the tuner made of it.

    Attributes:
        number: 1, 2, ... in launch order (the NNN of the training job's name).
        training_job_name: The training job that runs it.
        tuned_hyperparameters: The tuned values, encoded as the job received them.
        state: How the tuner was told the trial ended; InProgress until then.
        objective_value: The final objective of a Completed trial that produced one.
        stopped_early: Early stopping (or Hyperband) asked its training job to stop.
        training_job_status: The training job's status.
        creation_time: When the training job was created.
        training_start_time: When a trainer first took it.
        training_end_time: When it ended.
        failure_reason: Why the training job failed, or why it has no objective.
    """

    number: int
    training_job_name: str
    tuned_hyperparameters: Mapping[str, str]
    state: TrialState
    objective_value: float | None
    stopped_early: bool
    training_job_status: TrainingJobStatus
    creation_time: float
    training_start_time: float | None = None
    training_end_time: float | None = None
    failure_reason: str = ""

    @property
    def objective_status(self) -> ObjectiveStatus:
        """Succeeded with an objective value, Pending while running, else Failed."""
        if self.objective_value is not None and self.state is TrialState.COMPLETED:
            return ObjectiveStatus.SUCCEEDED
        if self.state is TrialState.IN_PROGRESS:
            return ObjectiveStatus.PENDING
        return ObjectiveStatus.FAILED


@dataclass(frozen=True)
class TuningJob:
    """A tuning job as DescribeTuningJob shows it (`trials` empty in listings)."""

    name: str
    spec: TuningJobSpec
    status: TuningJobStatus
    creation_time: float
    failure_reason: str = ""
    end_time: float | None = None
    counters: TrialCounters = field(default_factory=TrialCounters)
    best_trial: Trial | None = None
    trials: tuple[Trial, ...] = ()


def trial_hyperparameters(spec: TuningJobSpec, tuned: Mapping[str, str]) -> dict[str, str]:
    """The encoded hyperparameters of a trial's training job (contract §1.5, "Tuning jobs").

    The template's static ones, overridden by the tuned ones (a tuned name never keeps its
    static value), plus `_tuning_objective_metric` and, unless the template carries them,
    the SKLearn estimator class and module, all JSON-encoded as the SDK writes them.
    """
    hyperparameters = {**spec.template.hyperparameters, **tuned}
    hyperparameters[OBJECTIVE_METRIC_KEY] = json.dumps(spec.objective_metric_name)
    hyperparameters.setdefault(ESTIMATOR_CLASS_KEY, SKLEARN_ESTIMATOR_CLASS)
    hyperparameters.setdefault(ESTIMATOR_MODULE_KEY, SKLEARN_ESTIMATOR_MODULE)
    return hyperparameters


def validate_tuning_job_name(name: str) -> None:
    """Raises InvalidArgument unless `name` follows SageMaker's tuning-job name rule."""
    require_resource_name(Resource.TUNING_JOB, name)


def trial_job_name(tuning_job_name: str, number: int, suffix: str) -> str:
    """`<tuning-job>-<NNN>-<suffix>`: SageMaker's name for a tuning job's training jobs.

    With a tuning job name of at most 32 chars and an 8-char suffix, the name has at most 45
    chars, within the 63 of a training job.
    """
    return f"{tuning_job_name}-{number:03d}-{suffix}"


def counters_of(trials: tuple[Trial, ...]) -> TrialCounters:
    """The counters of `trials` by their training jobs' statuses."""
    statuses = [trial.training_job_status for trial in trials]
    return TrialCounters(
        completed=statuses.count(TrainingJobStatus.COMPLETED),
        in_progress=statuses.count(TrainingJobStatus.IN_PROGRESS)
        + statuses.count(TrainingJobStatus.STOPPING),
        non_retryable_error=statuses.count(TrainingJobStatus.FAILED),
        stopped=statuses.count(TrainingJobStatus.STOPPED),
    )


def best_of(trials: tuple[Trial, ...], maximize: bool) -> Trial | None:
    """The trial with the best objective (the earliest on a tie), as `Tuner.best` ranks them."""
    scored = [t for t in trials if t.objective_status is ObjectiveStatus.SUCCEEDED]
    if not scored:
        return None
    sign = 1.0 if maximize else -1.0
    return max(scored, key=lambda t: (sign * (t.objective_value or 0.0), -t.number))
