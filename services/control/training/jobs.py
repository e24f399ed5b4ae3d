"""Training jobs: creation, the status state machine, stop, listing and log following.

A job is created `InProgress`/`Starting` and queued as one training task. Its worker reports
`Downloading`, `Training`, `Uploading` in heartbeats and ends it as:

  SUCCEEDED             -> Completed / Completed
  FAILED                -> Failed / Failed (failure_reason, ≤1024 chars)
  STOPPED               -> Stopped / Stopped
  MAX_RUNTIME_EXCEEDED  -> Stopped / MaxRuntimeExceeded

StopTrainingJob stops a queued job at once (Stopped) and asks a running one to stop (Stopping;
the next heartbeat answer carries stop_requested). A worker lost while running puts the job
back to `Pending` for another attempt, or fails it with an `InternalServerError:` reason once
every attempt was lost. A terminal job never changes again.

`TrainingJobs` is also the scheduler's `TaskHandler` for training tasks: its `on_*` methods
run inside the scheduler's transaction. Listeners (the tuning jobs) hear of every metric sample
and every job end inside the same transaction.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from services.control import paging
from services.control.artifacts.base import (
    CHUNK_BYTES,
    SCHEME,
    ArtifactStore,
    code_bundle_key,
    key_of,
)
from services.control.artifacts.key_locks import KeyLocks
from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.tasks import (
    CompletionReport,
    HeartbeatReport,
    LeaseLoss,
    Task,
    TaskKind,
    TaskOutcome,
)
from services.control.metrics import ControlMetrics
from services.control.notifier import Notifier
from services.control.state import ControlStore
from services.control.training.validation import validate_job_name, validate_training_job
from services.control.training.values import (
    WORKER_SECONDARY_STATUSES,
    LogLine,
    MetricValue,
    SecondaryStatus,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
    truncate_reason,
)
from services.runtime.archives import DEFAULT_ARCHIVE_LIMITS, ArchiveLimits
from services.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

LOG_BATCH_LINES = 500
LOG_BATCH_BYTES = 1024 * 1024
"""A log batch stops at about this much text, far below a client's 4 MiB message limit."""
# Log followers re-check the job at least this often even without a notification.
_FOLLOW_POLL_S = 1.0

_ENDINGS: dict[TaskOutcome, tuple[TrainingJobStatus, SecondaryStatus, str]] = {
    TaskOutcome.SUCCEEDED: (
        TrainingJobStatus.COMPLETED,
        SecondaryStatus.COMPLETED,
        "Training job completed",
    ),
    TaskOutcome.FAILED: (
        TrainingJobStatus.FAILED,
        SecondaryStatus.FAILED,
        "Training job failed; see the failure reason",
    ),
    TaskOutcome.STOPPED: (
        TrainingJobStatus.STOPPED,
        SecondaryStatus.STOPPED,
        "Training job stopped",
    ),
    TaskOutcome.MAX_RUNTIME_EXCEEDED: (
        TrainingJobStatus.STOPPED,
        SecondaryStatus.MAX_RUNTIME_EXCEEDED,
        "Training job stopped: it reached its maximum runtime",
    ),
}


@dataclass(frozen=True)
class TrainingTaskPayload:
    """What a trainer needs to run a training task."""

    job_name: str
    spec: TrainingJobSpec
    # The copy of the source bundle kept under spec.source_sha256; "" for older jobs.
    source_bundle_uri: str = ""


@dataclass(frozen=True)
class TrainingJobPage:
    """One page of ListTrainingJobs."""

    jobs: tuple[TrainingJob, ...]
    next_page_token: str


@dataclass(frozen=True)
class LogBatch:
    """Log lines in order, with the job's status when they were read."""

    lines: tuple[LogLine, ...]
    status: TrainingJobStatus


class TrainingJobListener(Protocol):
    """Hears what happens to training jobs; called inside the transaction that records it."""

    def on_training_job_metrics(
        self, job: TrainingJob, attempt: int, samples: Sequence[MetricValue]
    ) -> None:
        """Metric samples a worker reported for `job`'s attempt `attempt`, in log order."""
        ...

    def on_training_job_ended(self, job: TrainingJob) -> None:
        """`job` just reached a terminal status."""
        ...


class TrainingJobs:
    """The training-job state machine over the store and the task queue."""

    def __init__(
        self,
        store: ControlStore,
        scheduler: Scheduler,
        artifacts: ArtifactStore,
        metrics: ControlMetrics,
        clock: Callable[[], float] = time.time,
        archive_limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
        key_locks: KeyLocks | None = None,
        resolve_runtime: Callable[[str], str] | None = None,
    ) -> None:
        """Wires the state machine; register it with the scheduler for TaskKind.TRAINING.

        Source bundles are checked within `archive_limits`; a create holds its bundle key's
        lock in `key_locks` (shared with the artifact API's uploads) while it binds it.
        `resolve_runtime(framework_version)` names the script runtime a job runs on (raising
        InvalidArgument for a version no runtime serves); None leaves it to the trainer.
        """
        self._resolve_runtime = resolve_runtime
        self._key_locks = key_locks or KeyLocks()
        # Bundle keys bound by creates in this process, by key: what an upload ending under the
        # key's lock checks, without the database (a tuning trial's create holds the database
        # while it takes the key's lock; the other order would deadlock).
        self._bound_here: dict[str, str] = {}
        self.archive_limits = archive_limits
        self._store = store
        self._scheduler = scheduler
        self._artifacts = artifacts
        self._metrics = metrics
        self._clock = clock
        self._changed = Notifier()
        self._listeners: list[TrainingJobListener] = []

    def add_listener(self, listener: TrainingJobListener) -> None:
        """Makes `listener` hear of every job's metric samples and end."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Ends every log follower (server shutdown)."""
        self._changed.close()

    # ----------------------------------------------------------------- public API

    def create(self, name: str, spec: TrainingJobSpec, tuning_job_name: str = "") -> TrainingJob:
        """Validates, stores and queues a job; returns it (InProgress/Starting).

        Nothing is stored when validation fails.

        Raises:
            InvalidArgument: a bad name or spec.
            AlreadyExists: the name is taken.
            NotFound: the source bundle or a channel does not exist.
        """
        validate_job_name(name)
        if self._store.training_job_exists(name):
            raise AlreadyExists(f"training job {name!r} already exists")
        # No upload to the bundle's key lands between its check and the job's record.
        with self._key_locks.holding(_key_or_empty(spec.source_uri)):
            return self._create_bound(name, spec, tuning_job_name)

    def _create_bound(self, name: str, spec: TrainingJobSpec, tuning_job_name: str) -> TrainingJob:
        spec = validate_training_job(name, spec, self._artifacts, self.archive_limits)
        source_key = key_of(spec.source_uri)
        output_prefix = f"{key_of(spec.output_uri)}/{name}/output"
        self._keep_bundle(source_key, spec.source_sha256)
        if self._resolve_runtime is not None:
            spec = replace(spec, script_runtime=self._resolve_runtime(spec.framework_version))
        now = self._clock()
        job = TrainingJob(
            name=name,
            spec=spec,
            status=TrainingJobStatus.IN_PROGRESS,
            secondary_status=SecondaryStatus.STARTING,
            creation_time=now,
            tuning_job_name=tuning_job_name,
        )
        with self._store.transaction():
            self._store.insert_training_job(job, source_key=source_key, output_prefix=output_prefix)
            self._store.append_transition(
                name,
                SecondaryStatus.STARTING,
                now,
                "Starting the training job; pending in the queue",
            )
            self._scheduler.enqueue(TaskKind.TRAINING, name)
        self._bound_here[source_key] = name
        self._metrics.training_jobs.labels(status=TrainingJobStatus.IN_PROGRESS).inc()
        log.info("training job %s created", name)
        return self.describe(name)

    def _keep_bundle(self, source_key: str, sha256: str) -> None:
        """Keeps the bundle version with `sha256` under its digest (`code_bundle_key`).

        Raises:
            FailedPrecondition: the bundle at `source_key` was replaced since it was checked.
        """
        kept_key = code_bundle_key(sha256)
        try:
            kept, handle = self._artifacts.open(kept_key)
            handle.close()
            if kept.sha256 == sha256:
                return
        except NotFound:
            pass
        info, handle = self._artifacts.open(source_key)
        with handle:
            if info.sha256 != sha256:
                raise FailedPrecondition(
                    f"source bundle {SCHEME}{source_key} was replaced while the job was being "
                    "created; create it again"
                )
            self._artifacts.write(
                kept_key, lambda out: shutil.copyfileobj(handle, out, CHUNK_BYTES)
            )

    def bound_to(self, key: str) -> str | None:
        """The name of a training job whose source bundle is at `key`, or None."""
        return self._store.training_job_bound_to(key)

    def bound_here(self, key: str) -> str | None:
        """The job a create in this process bound `key` to, from memory (no database)."""
        return self._bound_here.get(key)

    def output_owner(self, key: str) -> str | None:
        """The name of a training job whose archives go at or above `key`, or None."""
        return self._store.training_job_with_output_at(key)

    def describe(self, name: str) -> TrainingJob:
        """The job.

        Raises:
            NotFound: no job has this name.
        """
        job = self._store.get_training_job(name)
        if job is None:
            raise NotFound(f"training job {name!r} not found")
        return job

    def list(
        self,
        *,
        status: TrainingJobStatus | None = None,
        name_prefix: str = "",
        tuning_job_name: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> TrainingJobPage:
        """Jobs newest first, filtered, one page at a time.

        Args:
            status: only jobs in this status.
            name_prefix: only names starting with this.
            tuning_job_name: only jobs launched by this tuning job.
            page_size: 0 means 50; larger than 1000 means 1000.
            page_token: `next_page_token` of the previous page, or empty.

        Raises:
            InvalidArgument: a negative page size or a malformed page token.
        """
        jobs, next_token = paging.read_page(
            lambda before_id, limit: self._store.list_training_jobs(
                status=status,
                name_prefix=name_prefix,
                tuning_job_name=tuning_job_name,
                before_id=before_id,
                limit=limit,
            ),
            page_size,
            page_token,
        )
        return TrainingJobPage(jobs=jobs, next_page_token=next_token)

    def stop(self, name: str) -> TrainingJob:
        """Stops a queued job at once, or asks its worker to stop; idempotent while Stopping.

        Raises:
            NotFound: no job has this name.
            FailedPrecondition: the job already ended.
        """
        with self._store.transaction():
            job = self.describe(name)
            if job.status.is_terminal:
                raise FailedPrecondition(
                    f"training job {name!r} already ended ({job.status.value}); nothing to stop"
                )
            if job.status is TrainingJobStatus.STOPPING:
                return job
            now = self._clock()
            if self._scheduler.withdraw_queued(name):
                self._end(
                    job,
                    TrainingJobStatus.STOPPED,
                    SecondaryStatus.STOPPED,
                    now,
                    "Stopped before a trainer started it",
                )
            else:
                self._transition(
                    replace(job, status=TrainingJobStatus.STOPPING, stop_requested=True),
                    SecondaryStatus.STOPPING,
                    now,
                    "Stop requested; waiting for the trainer to end the script",
                )
        log.info("stop of training job %s requested", name)
        return self.describe(name)

    def follow_logs(
        self,
        name: str,
        from_sequence: int,
        follow: bool,
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[LogBatch]:
        """Batches of the job's log lines from `from_sequence`.

        Without `follow`, ends after the lines stored now. With `follow`, keeps waiting for
        new lines until the job is terminal and every line was sent, the caller goes away
        (`is_active()` False) or the server shuts down.

        Raises:
            NotFound: no job has this name (raised before the first batch).
        """
        self.describe(name)
        sequence = max(from_sequence, 0)
        while True:
            seen = self._changed.generation()
            # Status first: a completion stores its last lines and the terminal status in one
            # transaction, so lines read after a terminal status are all the lines there are.
            status = self.describe(name).status
            lines = _within_bytes(self._store.read_log_lines(name, sequence, LOG_BATCH_LINES))
            if lines:
                sequence = lines[-1].sequence + 1
                yield LogBatch(lines=tuple(lines), status=status)
                continue
            if not follow or status.is_terminal or self._changed.is_closed or not is_active():
                return
            self._changed.wait(seen, _FOLLOW_POLL_S)

    # ----------------------------------------------------------------- TaskHandler

    def payload(self, task: Task) -> TrainingTaskPayload:
        """The job's stored spec and where the bundle it is bound to is kept.

        The worker checks what it downloads against `source_sha256`. Jobs created before
        bundles were kept by digest (no `source_sha256`) read their `source_uri`.
        """
        spec = self.describe(task.job_name).spec
        kept = SCHEME + code_bundle_key(spec.source_sha256) if spec.source_sha256 else ""
        return TrainingTaskPayload(job_name=task.job_name, spec=spec, source_bundle_uri=kept)

    def on_leased(self, task: Task, now: float) -> None:
        """Counts the attempt and stamps the training start time on the first lease."""
        job = self.describe(task.job_name)
        self._store.update_training_job(
            replace(
                job,
                attempts=task.attempt,
                training_start_time=job.training_start_time or now,
            )
        )

    def on_heartbeat(self, task: Task, report: HeartbeatReport, now: float) -> bool:
        """Stores lines and metrics, records a reported secondary status; returns stop_requested.

        Raises:
            InvalidArgument: a secondary status a worker may not report.
        """
        reported = report.secondary_status
        if reported and reported not in WORKER_SECONDARY_STATUSES:
            allowed = ", ".join(sorted(WORKER_SECONDARY_STATUSES))
            raise InvalidArgument(f"secondary_status {reported!r} is not one of {allowed}")
        job = self.describe(task.job_name)
        self._store.append_attempt_log_lines(
            job.name, task.task_id, task.attempt, report.log_offset, report.log_lines
        )
        self._store.record_metrics(job.name, report.metrics)
        self._tell_metrics(job, task.attempt, report.metrics)
        is_new_status = reported and reported != job.secondary_status
        if is_new_status and job.status is TrainingJobStatus.IN_PROGRESS:
            message = _worker_status_message(reported, report.worker_id, job.spec.script_runtime)
            self._transition(job, reported, now, message)
        if report.log_lines:
            # Log followers wake for new lines (a transition wakes them itself); a beat with
            # none would wake every follower of every job for nothing.
            self._changed.notify()
        return job.stop_requested

    def on_completed(self, task: Task, report: CompletionReport, now: float) -> None:
        """Stores the last lines and metrics and ends the job as the worker reported."""
        job = self.describe(task.job_name)
        self._store.append_attempt_log_lines(
            job.name, task.task_id, task.attempt, report.log_offset, report.log_lines
        )
        self._store.record_metrics(job.name, report.metrics)
        self._tell_metrics(job, task.attempt, report.metrics)
        self._changed.notify()
        if job.status.is_terminal:
            log.warning("training job %s already %s; completion ignored", job.name, job.status)
            return
        if report.outcome not in _ENDINGS:
            raise InvalidArgument(f"outcome {report.outcome} does not end a training job")
        status, secondary, message = _ENDINGS[report.outcome]
        reason = ""
        if report.outcome is TaskOutcome.FAILED:
            reason = report.failure_reason or (
                "InternalServerError: the trainer reported a failure without a reason"
            )
        elif report.outcome is not TaskOutcome.SUCCEEDED:
            reason = report.failure_reason
        finished = replace(
            job,
            model_artifact_uri=report.model_artifact_uri,
            output_artifact_uri=report.output_artifact_uri,
            runtime_versions=report.runtime_versions,
            failure_reason=truncate_reason(reason),
        )
        self._end(finished, status, secondary, now, message)

    def on_lease_expired(self, task: Task, loss: LeaseLoss, now: float) -> bool:
        """Sends the job back to Pending for a retry, or ends it; returns True to requeue."""
        job = self.describe(task.job_name)
        lost = f"worker {loss.worker_id} lost (lease expired)"
        if job.status.is_terminal:
            return False
        if job.stop_requested:
            self._end(
                job,
                TrainingJobStatus.STOPPED,
                SecondaryStatus.STOPPED,
                now,
                f"{lost} while stopping; job stopped",
            )
            return False
        if loss.will_retry:
            self._transition(
                job,
                SecondaryStatus.PENDING,
                now,
                f"{lost}; retrying, attempt {loss.attempt + 1} of {loss.max_attempts}",
            )
            return True
        reason = f"InternalServerError: worker lost (lease expired) on all {loss.attempt} attempts"
        self._end(
            replace(job, failure_reason=reason),
            TrainingJobStatus.FAILED,
            SecondaryStatus.FAILED,
            now,
            f"{lost}; no attempts left",
        )
        return False

    # ----------------------------------------------------------------- transitions

    def _tell_metrics(self, job: TrainingJob, attempt: int, samples: Sequence[MetricValue]) -> None:
        if samples:
            for listener in self._listeners:
                listener.on_training_job_metrics(job, attempt, samples)

    def _transition(self, job: TrainingJob, secondary: str, now: float, message: str) -> None:
        self._store.update_training_job(replace(job, secondary_status=secondary))
        self._store.append_transition(job.name, secondary, now, message)
        self._changed.notify()

    def _end(
        self,
        job: TrainingJob,
        status: TrainingJobStatus,
        secondary: SecondaryStatus,
        now: float,
        message: str,
    ) -> None:
        ended = replace(job, status=status, training_end_time=now, stop_requested=False)
        self._transition(ended, secondary, now, message)
        self._store.end_transitions(job.name, now)
        self._metrics.training_jobs.labels(status=status.value).inc()
        log.info("training job %s ended: %s/%s", job.name, status.value, secondary.value)
        for listener in self._listeners:
            listener.on_training_job_ended(ended)


def _key_or_empty(uri: str) -> str:
    """The key of `uri`, or "" for a URI validation will refuse."""
    try:
        return key_of(uri)
    except InvalidArgument:
        return ""


def _worker_status_message(status: str, worker_id: str, runtime: str) -> str:
    messages = {
        SecondaryStatus.PREPARING_TRAINING_STACK: (
            f"building runtime {runtime or 'of the job'} (first use; later jobs reuse it)"
        ),
        SecondaryStatus.DOWNLOADING: "Downloading the source bundle and input data",
        SecondaryStatus.TRAINING: "Training: the entry point is running",
        SecondaryStatus.UPLOADING: "Uploading the model and output artifacts",
    }
    return f"{messages.get(SecondaryStatus(status), status)} (worker {worker_id})"


def _within_bytes(lines: list[LogLine]) -> list[LogLine]:
    """The first of `lines` that fit in LOG_BATCH_BYTES of text (at least one)."""
    used = 0
    for index, line in enumerate(lines):
        used += len(line.text) + 1
        if index and used > LOG_BATCH_BYTES:
            return lines[:index]
    return lines
