"""Transform jobs: creation, shard tasks, per-file outcomes, assembly of `.out` files, stop.

CreateTransformJob lists the objects under the input URI, cuts them into shards
(`shards.plan_shards`: whole files, and large Line-split files into byte ranges
on line boundaries, so several workers share one file) and, in one transaction, stores the job
(`InProgress`), its files and shards and queues one TRANSFORM task per shard. Batch workers
lease shards, report progress in heartbeats, upload each shard's output to its staging key
(`<output>/.skmaker-shards/<input>.out.<index>`, the same key on every attempt, so a re-run
overwrites and never duplicates) and complete the task with the records and bytes scored. In
per-record error mode a worker uploads the shard's bad records beside its output
(`<staged output>.errors`, JSON lines, lines counted in the input file) and reports only how
many there are, so neither a report nor the database grows with them (an older worker's
inline list is still stored as rows).

* All shards of a file done: the file is `Assembling`; the assembler thread concatenates the
  staged outputs in shard order into `<output>/<input key>.out` (atomic write), writes
  `<input key>.out.errors` (JSON lines: each shard's inline rows and staged errors object, in
  shard order) when bad records were reported, marks the file `Completed` and deletes the
  staged parts. Assembly runs outside any transaction, so a large file never holds the
  database; after a restart, files still `Assembling` are picked up again.
* A shard fails (the worker reports FAILED, or its worker was lost on every attempt): its file
  is `Failed` with the worker's reason (which names the line and the error), the file gets no
  `.out`, its other shards are cancelled (queued ones withdrawn, running ones told to stop),
  and the other files go on (contract §4.4).
* Every file terminal and no shard still held by a worker: the job is `Completed` when every
  file is, else `Failed` with a reason naming the failed files (≤1024 chars). The staging
  folder is removed.
* StopTransformJob: `Stopping`; queued shards are withdrawn, running ones are told to stop in
  their next heartbeat answer; once none runs and nothing is being assembled, the job is
  `Stopped` (finished files keep their `.out`, unfinished ones become `Stopped`).
* A lost worker's shard is re-queued by the scheduler's lease expiry (with backoff, up to its
  attempt limit); its progress restarts from zero.

`TransformJobs` is the scheduler's `TaskHandler` for TRANSFORM tasks: its `on_*` methods run
inside the scheduler's transaction, so a shard, its file, its job and its task change together.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

from services.control import paging
from services.control.artifacts.store import SCHEME, ArtifactStore, key_of
from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.tasks import (
    CompletionReport,
    HeartbeatReport,
    LeaseLoss,
    Task,
    TaskKind,
    TaskOutcome,
)
from services.control.hosting.model_registry import ModelRegistry
from services.control.hosting.model_values import Model
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.control.training.values import truncate_reason
from services.control.transform.layout import (
    list_input_files,
    output_prefix_key,
    plan_job_shards,
    staged_errors_key,
    staged_key,
)
from services.control.transform.shards import SHARD_OUTPUT_FOLDER, errors_key, output_key
from services.control.transform.store import TransformStore
from services.control.transform.validation import (
    validate_transform_job,
    validate_transform_job_name,
)
from services.control.transform.values import (
    FileStatus,
    RecordError,
    ShardStatus,
    TransformFile,
    TransformJob,
    TransformJobSpec,
    TransformJobStatus,
    TransformShard,
)
from services.runtime.components import StepLoop
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SkmakerError,
)
from services.sagemaker.transform.bad_records import RecordFailure

log = logging.getLogger(__name__)

# A large Line-split file is cut into byte ranges of about this size, so workers share it.
DEFAULT_TARGET_SHARD_BYTES = 16 * 1024 * 1024
# The assembler looks for files to assemble at least this often, even without a wake-up.
_ASSEMBLER_POLL_S = 1.0
# How many failed files a job's failure reason names before it just counts the rest.
_FAILED_FILES_NAMED = 3
# The longest error message of a bad record an older worker reports inline (newer workers cut
# theirs to the same length before uploading them).
MAX_RECORD_ERROR_CHARS = 1024


@dataclass(frozen=True)
class TransformTaskPayload:
    """What a batch worker needs to score one shard (the dispatch API's TransformTask)."""

    job_name: str
    spec: TransformJobSpec
    model: Model
    input_uri: str
    shard_index: int
    start: int
    end: int
    output_uri: str
    is_first_shard: bool
    input_size: int = 0
    input_path: str = ""  # the object's file, for workers on the same disk; "" if none
    errors_uri: str = ""  # where the shard's bad records are staged (per-record error mode)


@dataclass(frozen=True)
class TransformJobPage:
    """One page of ListTransformJobs."""

    jobs: tuple[TransformJob, ...]
    next_page_token: str


class TransformJobs:
    """The transform-job state machine over the store, the task queue and the artifact store."""

    def __init__(
        self,
        store: ControlStore,
        scheduler: Scheduler,
        artifacts: ArtifactStore,
        models: ModelRegistry,
        metrics: ControlMetrics,
        *,
        target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES,
        clock: Callable[[], float] = time.time,
        resolve_runtime: Callable[[str], str] | None = None,
    ) -> None:
        """Wires the state machine; register it with the scheduler for TaskKind.TRANSFORM.

        Args:
            store: The control's database.
            scheduler: Queues one task per shard.
            artifacts: Holds inputs, staged shard outputs and the assembled outputs.
            models: Where CreateTransformJob looks up the model.
            metrics: `transform_jobs{status}` is counted here.
            target_shard_bytes: Size a Line-split file's shards should have.
            clock: Wall-clock time in Unix seconds.
            resolve_runtime: The script runtime a spec's framework_version selects (raising
                InvalidArgument); None ignores framework_version.
        """
        if target_shard_bytes < 1:
            raise ValueError(f"target_shard_bytes must be positive, got {target_shard_bytes}")
        self._resolve_runtime = resolve_runtime
        self._store = store
        self._transforms = TransformStore(store)
        self._scheduler = scheduler
        self._artifacts = artifacts
        self._models = models
        self._metrics = metrics
        self._target_shard_bytes = target_shard_bytes
        self._clock = clock
        self._assembly_lock = threading.Lock()
        # The assembler, a component the control's lifecycle starts and stops; it first picks
        # up files a restart left Assembling. Draining ends it after the file under way.
        self.assembler = StepLoop("transform-assembler", self.step, _ASSEMBLER_POLL_S)

    # ----------------------------------------------------------------- public API

    def create(self, name: str, spec: TransformJobSpec) -> TransformJob:
        """Validates, plans shards, stores the job and queues its shards; returns it InProgress.

        Nothing is stored when a check fails.

        Raises:
            InvalidArgument: a bad name or setting.
            AlreadyExists: the name is taken.
            NotFound: the model does not exist, or nothing is stored at the input URI.
        """
        validate_transform_job_name(name)
        if self._transforms.job_exists(name):
            raise AlreadyExists(f"transform job {name!r} already exists")
        if not spec.model_name:
            raise InvalidArgument("model_name is empty: name the model to score with")
        model = self._models.describe(spec.model_name)
        spec = validate_transform_job(name, spec, model.environment)
        if spec.framework_version and self._resolve_runtime is not None:
            # Scored on the runtime asked for instead of the model's; the job's copy says so.
            model = replace(model, script_runtime=self._resolve_runtime(spec.framework_version))
        files = list_input_files(self._artifacts, spec)
        shards = plan_job_shards(self._artifacts, spec, files, self._target_shard_bytes)
        now = self._clock()
        job = TransformJob(
            name=name,
            spec=spec,
            model=model,
            status=TransformJobStatus.IN_PROGRESS,
            creation_time=now,
        )
        with self._store.transaction():
            stored_shards = [
                TransformShard(
                    job_name=name,
                    file_position=position,
                    index=shard.index,
                    start=shard.start,
                    end=shard.end,
                    task_id=self._scheduler.enqueue(
                        TaskKind.TRANSFORM,
                        name,
                        max_leased=spec.instance_count,
                        script_runtime=model.script_runtime,
                    ).task_id,
                )
                for position, shard in shards
            ]
            self._transforms.insert_job(job, files, stored_shards)
        self._metrics.transform_jobs.labels(status=TransformJobStatus.IN_PROGRESS.value).inc()
        log.info("transform job %s created: %d file(s), %d shard(s)", name, len(files), len(shards))
        return self.describe(name)

    def describe(self, name: str) -> TransformJob:
        """The job with per-file progress.

        Raises:
            NotFound: no transform job has this name.
        """
        job = self._transforms.get_job(name)
        if job is None:
            raise NotFound(f"transform job {name!r} not found")
        return job

    def list(
        self,
        *,
        status: TransformJobStatus | None = None,
        name_prefix: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> TransformJobPage:
        """Jobs newest first (without their files), filtered, one page at a time.

        Raises:
            InvalidArgument: a negative page size or a malformed page token.
        """
        jobs, next_token = paging.read_page(
            lambda before_id, limit: self._transforms.list_jobs(
                status=status,
                name_prefix=name_prefix,
                before_id=before_id,
                limit=limit,
            ),
            page_size,
            page_token,
        )
        return TransformJobPage(jobs=jobs, next_page_token=next_token)

    def stop(self, name: str) -> TransformJob:
        """Withdraws queued shards and asks running ones to stop; idempotent while Stopping.

        Raises:
            NotFound: no transform job has this name.
            FailedPrecondition: the job already ended.
        """
        with self._store.transaction():
            job = self._job(name)
            if job.status.is_terminal:
                raise FailedPrecondition(
                    f"transform job {name!r} already ended ({job.status.value}); nothing to stop"
                )
            if job.status is TransformJobStatus.STOPPING:
                return self.describe(name)
            job = replace(job, status=TransformJobStatus.STOPPING)
            self._transforms.update_job(job)
            pending = [
                shard
                for shard in self._transforms.shards_of_job(name)
                if shard.status is ShardStatus.PENDING
            ]
            self._cancel(pending)
            self._finish_if_done(job, self._clock())
        log.info("stop of transform job %s requested", name)
        return self.describe(name)

    def wanted_workers(self) -> dict[str, int]:
        """Batch workers the running jobs ask for, per script runtime (their models'; empty
        for the default): the largest instance count; empty when idle."""
        wanted: dict[str, int] = {}
        for job in self._transforms.active_jobs():
            runtime = job.model.script_runtime
            wanted[runtime] = max(wanted.get(runtime, 0), job.spec.instance_count)
        return wanted

    # ----------------------------------------------------------------- TaskHandler

    def payload(self, task: Task) -> TransformTaskPayload:
        """The shard's byte range, staging URI and the job's spec and model."""
        shard = self._shard(task)
        job = self._job(task.job_name)
        file = self._transforms.get_file(job.name, shard.file_position)
        return TransformTaskPayload(
            job_name=job.name,
            spec=job.spec,
            model=job.model,
            input_uri=file.input_uri,
            shard_index=shard.index,
            start=shard.start,
            end=shard.end,
            output_uri=SCHEME + staged_key(job.spec, file.key, shard),
            is_first_shard=shard.start == 0,
            input_size=file.size,
            input_path=self._artifacts.local_path(key_of(file.input_uri)),
            errors_uri=SCHEME + staged_errors_key(job.spec, file.key, shard),
        )

    def on_leased(self, task: Task, now: float) -> None:
        """Marks the shard running, its file InProgress and stamps the job's start time."""
        shard = self._shard(task)
        if shard.status is ShardStatus.PENDING:
            self._transforms.update_shard(
                replace(shard, status=ShardStatus.RUNNING, records_done=0, bytes_done=0)
            )
        file = self._transforms.get_file(shard.job_name, shard.file_position)
        if file.status is FileStatus.PENDING:
            self._transforms.update_file(
                shard.job_name, replace(file, status=FileStatus.IN_PROGRESS)
            )
        job = self._job(task.job_name)
        if job.start_time is None:
            self._transforms.update_job(replace(job, start_time=now))

    def on_heartbeat(self, task: Task, report: HeartbeatReport, now: float) -> bool:
        """Records the shard's progress; True (stop) once its file failed or the job stops."""
        shard = self._shard(task)
        if shard.status is ShardStatus.RUNNING:
            self._transforms.update_shard(
                replace(shard, records_done=report.records_done, bytes_done=report.bytes_done)
            )
            job = self._job(task.job_name)
            return job.status is not TransformJobStatus.IN_PROGRESS
        return True

    def on_completed(self, task: Task, report: CompletionReport, now: float) -> None:
        """Ends the shard as the worker reports; may queue its file's assembly or fail it."""
        shard = self._shard(task)
        job = self._job(task.job_name)
        if shard.status is ShardStatus.RUNNING:
            if report.outcome is TaskOutcome.SUCCEEDED:
                self._shard_succeeded(job, shard, report)
            elif report.outcome is TaskOutcome.STOPPED and job.status is not (
                TransformJobStatus.IN_PROGRESS
            ):
                self._transforms.update_shard(replace(shard, status=ShardStatus.CANCELLED))
            else:
                reason = report.failure_reason or (
                    f"InternalServerError: the batch worker ended the shard as {report.outcome}"
                    " without a reason"
                )
                self._shard_failed(job, shard, reason)
        else:
            log.info(
                "transform job %s: completion of %s shard %d ignored",
                job.name,
                shard.status.value,
                shard.index,
            )
        self._finish_if_done(self._job(job.name), now, excluding=task.task_id)

    def on_lease_expired(self, task: Task, loss: LeaseLoss, now: float) -> bool:
        """Re-queues a lost worker's shard, or fails its file once no attempt is left."""
        shard = self._shard(task)
        job = self._job(task.job_name)
        requeue = False
        if shard.status is ShardStatus.RUNNING:
            if job.status is not TransformJobStatus.IN_PROGRESS:
                self._transforms.update_shard(replace(shard, status=ShardStatus.CANCELLED))
            elif loss.will_retry:
                self._transforms.update_shard(
                    replace(shard, status=ShardStatus.PENDING, records_done=0, bytes_done=0)
                )
                requeue = True
            else:
                reason = (
                    f"InternalServerError: batch worker lost (lease expired) on all "
                    f"{loss.attempt} attempts of shard {shard.index} (bytes {shard.start}-"
                    f"{shard.end})"
                )
                self._shard_failed(job, shard, reason)
        if not requeue:
            self._finish_if_done(self._job(job.name), now, excluding=task.task_id)
        return requeue

    # ----------------------------------------------------------------- assembly

    def step(self) -> int:
        """One assembler pass: assembles every file whose shards are all done; returns how
        many were handled.

        The assembler thread runs it when a shard completes and every second; tests call it
        directly.
        """
        handled = 0
        with self._assembly_lock:
            for job_name, position in self._transforms.files_in_status(FileStatus.ASSEMBLING):
                if self.assembler.is_stopping:
                    break
                self._assemble_file(job_name, position)
                handled += 1
        return handled

    def _assemble_file(self, job_name: str, position: int) -> None:
        job = self._job(job_name)
        file = self._transforms.get_file(job_name, position)
        shards = self._transforms.shards_of_file(job_name, position)
        prefix = output_prefix_key(job.spec)
        out_key = f"{prefix}/{output_key(file.key)}"
        parts = [staged_key(job.spec, file.key, shard) for shard in shards]
        error_parts = [staged_errors_key(job.spec, file.key, shard) for shard in shards]
        # Per shard, in shard order: the bad records an older worker reported inline, and
        # how many a newer one staged (its object is only read when it reported some).
        errors = [
            (self._transforms.record_errors_of_shard(shard), part if shard.records_failed else "")
            for shard, part in zip(shards, error_parts, strict=True)
        ]
        errors_uri = ""
        try:
            # The shards' outputs, concatenated in shard order (see `shards.assemble`); an
            # object store may copy them itself, without the bytes passing through here.
            self._artifacts.concatenate(out_key, parts)
            if any(rows or staged for rows, staged in errors):
                errors_path = f"{prefix}/{errors_key(file.key)}"
                self._artifacts.write(errors_path, lambda out: self._write_errors(errors, out))
                errors_uri = SCHEME + errors_path
        except (SkmakerError, OSError) as err:
            reason = f"InternalServerError: assembling {SCHEME}{out_key} failed: {err}"
            log.error("transform job %s: %s", job_name, reason)
            with self._store.transaction():
                self._fail_file(self._job(job_name), file, reason)
                self._finish_if_done(self._job(job_name), self._clock())
            return
        with self._store.transaction():
            self._transforms.update_file(
                job_name,
                replace(
                    file,
                    status=FileStatus.COMPLETED,
                    output_uri=SCHEME + out_key,
                    errors_uri=errors_uri,
                ),
            )
            self._finish_if_done(self._job(job_name), self._clock())
        # After the commit: a crash before this line leaves parts that the job's end removes.
        for part in parts + error_parts:
            self._artifacts.delete(part)
        log.info("transform job %s: assembled %s%s", job_name, SCHEME, out_key)

    def _write_errors(
        self, errors: Sequence[tuple[Sequence[RecordError], str]], out: BinaryIO
    ) -> None:
        """A file's errors: one JSON object a line, `{"line": 7, "error": "..."}`, in line order.

        Args:
            errors: Per shard, in shard order: its inline bad records, and the key of its
                staged errors object ("" when it staged none), copied as it is.
            out: The errors file being written.
        """
        for rows, staged in errors:
            for error in rows:
                out.write(RecordFailure(error.line, error.message).to_json_line())
            if staged:
                _info, handle = self._artifacts.open(staged)
                with handle:
                    shutil.copyfileobj(handle, out, 1024 * 1024)

    # ----------------------------------------------------------------- transitions

    def _shard_succeeded(
        self, job: TransformJob, shard: TransformShard, report: CompletionReport
    ) -> None:
        result = report.transform_result
        done = replace(shard, status=ShardStatus.DONE)
        if result is not None:
            done = replace(
                done,
                records_done=result.records_done,
                bytes_done=result.bytes_done,
                records_failed=max(0, result.records_failed),
            )
            self._transforms.replace_record_errors(
                shard,
                (
                    replace(error, message=_cut(error.message, MAX_RECORD_ERROR_CHARS))
                    for error in result.record_errors
                ),
            )
        self._transforms.update_shard(done)
        siblings = self._transforms.shards_of_file(job.name, shard.file_position)
        if all(sibling.status is ShardStatus.DONE for sibling in siblings):
            file = self._transforms.get_file(job.name, shard.file_position)
            if not file.status.is_terminal:
                self._transforms.update_file(job.name, replace(file, status=FileStatus.ASSEMBLING))
                self.assembler.wake()

    def _shard_failed(self, job: TransformJob, shard: TransformShard, reason: str) -> None:
        self._transforms.update_shard(
            replace(shard, status=ShardStatus.FAILED, failure_reason=truncate_reason(reason))
        )
        file = self._transforms.get_file(job.name, shard.file_position)
        if not file.status.is_terminal:
            self._fail_file(job, file, reason)

    def _fail_file(self, job: TransformJob, file: TransformFile, reason: str) -> None:
        """Fails a file (no `.out`) and cancels its shards that are still to run or running."""
        self._transforms.update_file(
            job.name,
            replace(file, status=FileStatus.FAILED, failure_reason=truncate_reason(reason)),
        )
        siblings = self._transforms.shards_of_file(job.name, file.position)
        self._cancel([shard for shard in siblings if shard.status.is_active])
        log.warning("transform job %s: %s failed: %s", job.name, file.input_uri, reason)

    def _cancel(self, shards: Sequence[TransformShard]) -> None:
        """Cancels shards: queued ones leave the queue, running ones hear `stop` next beat."""
        for shard in shards:
            self._transforms.update_shard(replace(shard, status=ShardStatus.CANCELLED))
        self._scheduler.withdraw([s.task_id for s in shards if s.status is ShardStatus.PENDING])

    def _finish_if_done(self, job: TransformJob, now: float, *, excluding: str = "") -> None:
        """Ends the job once every file is terminal (or it stops) and no worker holds a shard."""
        if job.status.is_terminal:
            return
        files = self._transforms.files_of_job(job.name)
        if self._transforms.leased_task_count(job.name, excluding=excluding):
            return
        if job.status is TransformJobStatus.STOPPING:
            if any(file.status is FileStatus.ASSEMBLING for file in files):
                return
            for file in files:
                if not file.status.is_terminal:
                    self._transforms.update_file(job.name, replace(file, status=FileStatus.STOPPED))
            self._end(job, TransformJobStatus.STOPPED, "", now)
            return
        if not all(file.status.is_terminal for file in files):
            return
        failed = [file for file in files if file.status is FileStatus.FAILED]
        if not failed:
            self._end(job, TransformJobStatus.COMPLETED, "", now)
            return
        self._end(job, TransformJobStatus.FAILED, _job_failure_reason(failed, len(files)), now)

    def _end(self, job: TransformJob, status: TransformJobStatus, reason: str, now: float) -> None:
        self._transforms.update_job(
            replace(job, status=status, failure_reason=truncate_reason(reason), end_time=now)
        )
        self._artifacts.delete_tree(f"{output_prefix_key(job.spec)}/{SHARD_OUTPUT_FOLDER}")
        self._metrics.transform_jobs.labels(status=status.value).inc()
        log.info("transform job %s ended: %s", job.name, status.value)

    # ----------------------------------------------------------------- helpers

    def _job(self, name: str) -> TransformJob:
        job = self._transforms.get_job(name, with_files=False)
        if job is None:
            raise NotFound(f"transform job {name!r} not found")
        return job

    def _shard(self, task: Task) -> TransformShard:
        shard = self._transforms.shard_of_task(task.task_id)
        if shard is None:
            raise NotFound(f"task {task.task_id} is no shard of transform job {task.job_name!r}")
        return shard


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _job_failure_reason(failed: Sequence[TransformFile], total: int) -> str:
    named = "; ".join(
        f"{file.input_uri}: {file.failure_reason}" for file in failed[:_FAILED_FILES_NAMED]
    )
    more = len(failed) - _FAILED_FILES_NAMED
    tail = f"; and {more} more" if more > 0 else ""
    return f"{len(failed)} of {total} input files failed: {named}{tail}"
