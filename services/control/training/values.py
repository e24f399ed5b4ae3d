"""Training-job values as the control stores and serves them (mirrors training_job.proto).

Plain frozen dataclasses with times as Unix seconds; `training.convert` maps them to and from the
wire. Statuses use SageMaker's spelling (`InProgress`, `MaxRuntimeExceeded`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

FAILURE_REASON_MAX_CHARS = 1024
DEFAULT_MAX_RUNTIME_S = 86_400


class TrainingJobStatus(enum.StrEnum):
    """Overall status (SageMaker's TrainingJobStatus)."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"

    @property
    def is_terminal(self) -> bool:
        """True once the job can change no more."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {TrainingJobStatus.COMPLETED, TrainingJobStatus.FAILED, TrainingJobStatus.STOPPED}
)


class SecondaryStatus(enum.StrEnum):
    """Finer-grained status (SageMaker's SecondaryStatus)."""

    STARTING = "Starting"
    PENDING = "Pending"
    # The worker builds the job's script runtime (its first use); SageMaker's name for
    # getting the training environment ready.
    PREPARING_TRAINING_STACK = "PreparingTrainingStack"
    DOWNLOADING = "Downloading"
    TRAINING = "Training"
    UPLOADING = "Uploading"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"


# What a worker may report in a heartbeat; the others are decided by the control.
WORKER_SECONDARY_STATUSES = frozenset(
    {
        SecondaryStatus.PREPARING_TRAINING_STACK,
        SecondaryStatus.DOWNLOADING,
        SecondaryStatus.TRAINING,
        SecondaryStatus.UPLOADING,
    }
)


@dataclass(frozen=True)
class Channel:
    """One input channel: the script sees it as SM_CHANNEL_<NAME>."""

    name: str
    uri: str
    content_type: str = ""


@dataclass(frozen=True)
class MetricDefinition:
    """A regex whose first capture group, found in a log line, is a metric value."""

    name: str
    regex: str


@dataclass(frozen=True)
class TrainingJobSpec:
    """What a user asks to train (see TrainingJobSpec in training_job.proto)."""

    entry_point: str
    source_uri: str
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    channels: tuple[Channel, ...] = ()
    metric_definitions: tuple[MetricDefinition, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    max_runtime_seconds: int = 0
    output_uri: str = ""
    shell_compat: bool = False
    # The source bundle's sha256: asked for by the caller, then the one the job is bound to.
    source_sha256: str = ""
    # What the user asked ("1.2-1"; empty: the newest) and the script runtime the control
    # resolved it to at create (e.g. sklearn-1.2; empty for jobs created before runtimes).
    framework_version: str = ""
    script_runtime: str = ""


@dataclass(frozen=True)
class StatusTransition:
    """One entry of the secondary status history; `end_time` is None for the current one."""

    status: str
    start_time: float
    end_time: float | None
    message: str


@dataclass(frozen=True)
class MetricValue:
    """One metric sample: the latest per name is kept as the job's final metric."""

    name: str
    value: float
    timestamp: float


@dataclass(frozen=True)
class LogLine:
    """A line of a job's log; `sequence` is assigned by the control, from 0, without gaps."""

    sequence: int
    timestamp: float
    stream: str
    text: str


@dataclass(frozen=True)
class RuntimeVersions:
    """Library versions a model was trained with."""

    python: str = ""
    sklearn: str = ""
    numpy: str = ""
    joblib: str = ""


@dataclass(frozen=True)
class TrainingJob:
    """A training job as DescribeTrainingJob shows it."""

    name: str
    spec: TrainingJobSpec
    status: TrainingJobStatus
    secondary_status: str
    creation_time: float
    failure_reason: str = ""
    training_start_time: float | None = None
    training_end_time: float | None = None
    model_artifact_uri: str = ""
    output_artifact_uri: str = ""
    attempts: int = 0
    runtime_versions: RuntimeVersions = field(default_factory=RuntimeVersions)
    tuning_job_name: str = ""
    stop_requested: bool = False
    transitions: tuple[StatusTransition, ...] = ()
    final_metrics: tuple[MetricValue, ...] = ()


def truncate_reason(reason: str) -> str:
    """`reason` cut to SageMaker's 1024-character FailureReason limit (marked with an ellipsis)."""
    if len(reason) <= FAILURE_REASON_MAX_CHARS:
        return reason
    return reason[: FAILURE_REASON_MAX_CHARS - 1] + "…"
