"""Task values: a unit of leased work and what workers report about it (mirrors dispatch.proto).

A task belongs to a job: a training job, or one shard of a transform job. It is `queued` until a
worker leases it, `leased` while a worker heartbeats it, and `done` once completed, stopped or
given up. Every lease increments `attempt`; reports carry the attempt, which fences off a worker
whose lease was taken away.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from services.control.training.values import MetricValue, RuntimeVersions
from services.control.transform.values import RecordError


class TaskKind(enum.StrEnum):
    """Kinds of work a worker can take."""

    TRAINING = "training"
    TRANSFORM = "transform"


class TaskState(enum.StrEnum):
    """Where a task is in the queue."""

    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"


class TaskOutcome(enum.StrEnum):
    """How a task ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    MAX_RUNTIME_EXCEEDED = "max_runtime_exceeded"
    # Given up by the control: the worker was lost on every attempt, or the job was stopped.
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class Task:
    """One row of the task queue. Times are Unix seconds."""

    task_id: str
    kind: TaskKind
    job_name: str
    state: TaskState
    attempt: int = 0
    worker_id: str = ""
    lease_expires: float | None = None
    not_before: float = 0.0
    outcome: TaskOutcome | None = None
    # At most this many tasks of the job (and kind) are leased at once; 0 means no cap.
    max_leased: int = 0
    # The script runtime a worker must run user code on in-process to take it (a transform
    # task: its model's); empty means any worker.
    script_runtime: str = ""


@dataclass(frozen=True)
class WorkerLogLine:
    """A log line as a worker saw it; the control assigns its sequence number."""

    timestamp: float
    stream: str
    text: str


@dataclass(frozen=True)
class HeartbeatReport:
    """A heartbeat: renews the lease and delivers what happened since the last one."""

    task_id: str
    attempt: int
    worker_id: str
    log_lines: tuple[WorkerLogLine, ...] = ()
    metrics: tuple[MetricValue, ...] = ()
    secondary_status: str = ""
    # Transform shards: records and input bytes scored so far in this shard.
    records_done: int = 0
    bytes_done: int = 0
    # Lines of this attempt delivered before log_lines[0]; None when the worker does not count.
    log_offset: int | None = None


@dataclass(frozen=True)
class HeartbeatAnswer:
    """What the worker is told: stop or carry on, and until when its lease runs."""

    stop_requested: bool
    lease_expires: float


@dataclass(frozen=True)
class TransformShardResult:
    """What a transform shard produced: records and bytes scored, and its bad records.

    A worker uploads its bad records to the shard's staged errors object and reports their
    number in `records_failed`; an older worker lists them in `record_errors` instead.
    """

    records_done: int = 0
    bytes_done: int = 0
    record_errors: tuple[RecordError, ...] = ()
    records_failed: int = 0


@dataclass(frozen=True)
class CompletionReport:
    """The end of a task as its worker reports it."""

    task_id: str
    attempt: int
    worker_id: str
    outcome: TaskOutcome
    failure_reason: str = ""
    model_artifact_uri: str = ""
    output_artifact_uri: str = ""
    runtime_versions: RuntimeVersions = field(default_factory=RuntimeVersions)
    log_lines: tuple[WorkerLogLine, ...] = ()
    metrics: tuple[MetricValue, ...] = ()
    # For transform shards; None for other tasks.
    transform_result: TransformShardResult | None = None
    # Lines of this attempt delivered before log_lines[0]; None when the worker does not count.
    log_offset: int | None = None


@dataclass(frozen=True)
class LeaseLoss:
    """A lease that expired: whose it was and whether the task gets another attempt."""

    worker_id: str
    attempt: int
    max_attempts: int
    retry_at: float | None

    @property
    def will_retry(self) -> bool:
        """True when the task goes back to the queue."""
        return self.retry_at is not None


@dataclass(frozen=True)
class Lease:
    """A task handed to a worker, with the job-specific payload it needs to run it."""

    task: Task
    heartbeat_interval_s: float
    payload: object
