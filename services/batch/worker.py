"""The batch worker's loop: lease a shard, score it, upload its output, report; one at a time.

For each leased TRANSFORM task the worker

1. gets the model's handler (`ModelCache`: loaded once per model and process) and decides
   BatchStrategy, MaxPayloadInMB and MaxConcurrentTransforms: the request's values, else what
   the model's `execution_parameters_fn` asks for, else the defaults (contract §4.2; a bad
   answer fails the shard with a reason naming the function);
2. reads its byte range of the input (a Gzip object whole, since a compressed stream cannot
   be entered mid-way): straight from the control's artifact file when this worker sees the
   control's disk (a `--local` control's children; containers sharing the artifact volume)
   and the file has the planned size, else streamed from the control while it is scored
   (`input_stream`; a Gzip object is downloaded into the work folder first), retrying while
   the control restarts;
3. scores it (`scoring.score_shard`) into a local file while a heartbeat thread renews the
   lease and reports records and bytes done; a heartbeat answer may ask it to stop;
4. uploads the output to the task's output URI (atomic on the control; the URI is the same on
   every attempt, so a re-run overwrites) and completes the task with what it scored. In
   per-record error mode the bad records (their lines counted in the input file, each message
   cut to `MAX_RECORD_ERROR_CHARS`) are written as JSON lines to a file uploaded to the task's
   errors URI, beside the output, and the completion carries only their number, so a file
   with many bad records never makes a report too large for one message. (An older control
   names no errors URI and gets them inline, as before.)

A shard that cannot be scored is reported FAILED with a reason naming the input, the line in
the file and the error (`store://in/b.csv: line 7: ModelError: ...`); the line numbers of the
shard are turned into lines of the file by counting the line ends before it, which is only done
when a line must be named. A superseded attempt (its lease was taken back) is abandoned without
a report. On SIGTERM the worker takes no new shard and finishes the one it holds within the
grace period, else abandons it to be re-run elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import grpc

from services.batch.control_link import (
    AttemptSuperseded,
    ControlLink,
    ShardAssignment,
    TaskModelSource,
    shard_from_task,
)
from services.batch.execution_parameters import (
    BatchKnobs,
    ExecutionParameters,
    ExecutionParametersError,
    resolve,
)
from services.batch.input_stream import ReadInterrupted
from services.batch.metrics import BatchMetrics
from services.batch.models import ModelCache, batch_environment
from services.batch.scoring import ShardFailed, ShardScore, ShardSettings, ShardStopped, score_shard
from services.runtime import native_threads
from services.sagemaker.serving.handler import ModelHandler
from services.sagemaker.serving.model_loader import ModelLoadFailed
from services.sagemaker.transform.bad_records import RecordFailure
from services.sagemaker.transform.records import count_newlines

log = logging.getLogger(__name__)

# SageMaker's FailureReason limit.
MAX_REASON_CHARS = 1024
# The longest message of one bad record in an errors file (a traceback can be long).
MAX_RECORD_ERROR_CHARS = 1024


@dataclass
class _Heartbeat:
    """Renews one shard's lease from its own thread and carries the stop and abandon flags."""

    link: ControlLink
    shard: ShardAssignment
    records_done: int = 0
    bytes_done: int = 0
    stop_requested: threading.Event = field(default_factory=threading.Event)
    superseded: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{self.shard.task_id}", daemon=True
        )
        self._thread.start()

    def progress(self, records_done: int, bytes_done: int) -> None:
        self.records_done, self.bytes_done = records_done, bytes_done

    def finish(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self.shard.heartbeat_interval_s):
            try:
                stop = self.link.heartbeat(self.shard, self.records_done, self.bytes_done)
            except AttemptSuperseded as err:
                log.warning("shard %s superseded: %s", self.shard.task_id, err)
                self.superseded.set()
                return
            except grpc.RpcError as err:
                # The control is down or restarting: the next beat tries again.
                log.warning("heartbeat failed (%s); will retry", err.code().name)
                continue
            if stop and not self.stop_requested.is_set():
                log.info("stop requested for shard %s", self.shard.task_id)
                self.stop_requested.set()


class BatchWorker:
    """Pulls transform shards from the control until drained; scores one at a time.

    Args:
        link: The control.
        models: Loaded models, shared by the shards of this process.
        work_dir: Each shard's input and output files live below `work_dir/shards/`.
        metrics: Shard outcomes, records and durations.
        acquire_wait_s: Long-poll time of one AcquireTask call.
        local_inputs: Read inputs from the control's disk when the task names a file that is
            visible here (see the module docstring); False always downloads.
    """

    def __init__(
        self,
        link: ControlLink,
        models: ModelCache,
        work_dir: Path,
        metrics: BatchMetrics,
        *,
        acquire_wait_s: float = 10.0,
        local_inputs: bool = True,
    ) -> None:
        self._link = link
        self._models = models
        self._work_dir = work_dir
        self._metrics = metrics
        self._acquire_wait_s = acquire_wait_s
        self._local_inputs = local_inputs
        self._draining = threading.Event()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batch-loop", daemon=True)

    def start(self) -> None:
        """Starts the work loop."""
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def drain(self) -> None:
        """Takes no new shard; the one being scored goes on (see `join`)."""
        self._draining.set()

    def join(self, timeout_s: float) -> None:
        """Waits up to `timeout_s` for the current shard, then abandons it and stops."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("shard not done after %.1fs; abandoning it to another worker", timeout_s)
            self._abandon.set()
            self._link.interrupt()
            self._thread.join(10.0)

    def _loop(self) -> None:
        while not self._draining.is_set():
            try:
                task = self._link.acquire(self._acquire_wait_s, self._draining)
            except grpc.RpcError as err:
                log.warning("AcquireTask failed (%s: %s)", err.code().name, err.details())
                self._draining.wait(1.0)
                continue
            if task is None:
                continue
            if not task.HasField("transform"):
                log.error("task %s is no transform shard; ignored", task.task_id)
                continue
            self._run(shard_from_task(task))

    def _run(self, shard: ShardAssignment) -> None:
        log.info(
            "scoring %s shard %d (bytes %d-%d) of %s, attempt %d",
            shard.input_uri,
            shard.shard_index,
            shard.start,
            shard.end,
            shard.job_name,
            shard.attempt,
        )
        heartbeat = _Heartbeat(self._link, shard)
        folder = self._work_dir / "shards" / shard.task_id
        started = time.monotonic()
        outcome = "abandoned"
        heartbeat.start()
        try:
            outcome = self._score_and_report(shard, folder, heartbeat)
        except AttemptSuperseded as err:
            log.warning("shard %s superseded while reporting: %s", shard.task_id, err)
        except (grpc.RpcError, TimeoutError, ReadInterrupted) as err:
            # The control stayed unreachable past control_timeout_s, or the worker is shutting
            # down: the lease expires and the shard is re-run elsewhere.
            log.error("shard %s: control unreachable (%s); abandoned", shard.task_id, err)
        finally:
            heartbeat.finish()
            shutil.rmtree(folder, ignore_errors=True)
        self._metrics.shards.labels(outcome=outcome).inc()
        self._metrics.shard_seconds.observe(time.monotonic() - started)
        log.info("shard %s of %s: %s", shard.task_id, shard.job_name, outcome)

    def _score_and_report(self, shard: ShardAssignment, folder: Path, beat: _Heartbeat) -> str:
        """Scores the shard and reports it; returns the outcome for the metrics."""

        def should_stop() -> bool:
            return (
                beat.stop_requested.is_set() or beat.superseded.is_set() or self._abandon.is_set()
            )

        folder.mkdir(parents=True, exist_ok=True)
        # With an errors URI (every current control), bad records stream to a file; an older
        # control wants them listed in the completion instead.
        errors = (
            _ErrorsFile(folder / "errors", lambda: self._lines_before(shard, folder))
            if shard.errors_uri
            else None
        )
        try:
            with contextlib.ExitStack() as stack:
                if errors is not None:
                    stack.enter_context(errors)
                score = self._score(shard, folder, beat, should_stop, errors)
        except ShardStopped:
            if beat.superseded.is_set() or self._abandon.is_set():
                return "abandoned"
            self._link.complete(shard, "stopped", failure_reason="stopped on request")
            return "stopped"
        except ShardFailed as err:
            if beat.superseded.is_set():
                return "abandoned"
            reason = self._failure_reason(shard, err, folder)
            log.warning("shard %s failed: %s", shard.task_id, reason)
            self._link.complete(shard, "failed", failure_reason=reason)
            return "failed"
        if beat.superseded.is_set() or self._abandon.is_set():
            return "abandoned"
        failures: tuple[RecordFailure, ...] = ()
        records_failed = 0
        if errors is not None and errors.count:
            self._link.upload_file(errors.path, shard.errors_uri)
            log.info(
                "shard %s: %d bad record(s) uploaded to %s",
                shard.task_id,
                errors.count,
                shard.errors_uri,
            )
            records_failed = errors.count
        elif score.failures:
            before = 0 if shard.is_first_shard else self._lines_before(shard, folder)
            failures = tuple(_in_file(f, before) for f in score.failures)
        self._link.complete(
            shard,
            "succeeded",
            records_done=score.records_done,
            bytes_done=score.bytes_done,
            records_failed=records_failed,
            failures=failures,
        )
        self._metrics.records.inc(score.records_done)
        return "succeeded"

    def _score(
        self,
        shard: ShardAssignment,
        folder: Path,
        beat: _Heartbeat,
        should_stop: Callable[[], bool],
        errors: _ErrorsFile | None = None,
    ) -> ShardScore:
        environment = batch_environment(
            max_payload_mb=shard.max_payload_mb,
            strategy=shard.strategy,
            max_concurrent=shard.max_concurrent,
            job_environment=shard.environment,
        )
        try:
            handler = self._models.handler(
                shard.model, environment, TaskModelSource(self._link, shard.model)
            )
        except ModelLoadFailed as err:
            raise ShardFailed(f"the model {shard.model.name!r} could not be loaded: {err}") from err
        knobs = self._knobs(shard)
        started = time.monotonic()
        source, size = self._open_input(shard, folder)
        settings = ShardSettings(
            content_type=shard.content_type,
            accept=shard.accept or handler.default_accept,
            split_type=shard.split_type,
            compression=shard.compression,
            strategy=knobs.batch_strategy,
            max_payload_mb=knobs.max_payload_mb,
            max_concurrent=knobs.max_concurrent_transforms,
            assemble_with=shard.assemble_with,
            input_filter=shard.input_filter,
            join_source=shard.join_source,
            output_filter=shard.output_filter,
            skip_header=shard.skip_header and shard.is_first_shard,
            record_errors=shard.record_errors,
            scoring_threads=self._scoring_threads(shard, handler, knobs.batch_strategy),
        )
        log.info(
            "shard %s: MaxConcurrentTransforms=%d, MaxPayloadInMB=%d, BatchStrategy=%s; "
            "%d mini-batch(es) scored at once",
            shard.task_id,
            knobs.max_concurrent_transforms,
            knobs.max_payload_mb,
            knobs.batch_strategy,
            settings.threads,
        )
        output_path = folder / "output"
        read_at = time.monotonic()
        with source, output_path.open("wb") as out:
            score = score_shard(
                source,
                size,
                out,
                settings,
                handler.invoke,
                progress=beat.progress,
                should_stop=should_stop,
                on_failure=None if errors is None else errors.add,
            )
        if should_stop():
            raise ShardStopped
        scored_at = time.monotonic()
        self._link.upload_file(output_path, shard.output_uri)
        in_place = bool(shard.input_path) and getattr(source, "name", "") == shard.input_path
        streamed = not in_place and shard.compression != "Gzip"
        log.info(
            "shard %s: input %s in %.3fs, scored in %.3fs, output uploaded in %.3fs",
            shard.task_id,
            "read in place" if in_place else "streamed" if streamed else "downloaded",
            read_at - started,
            scored_at - read_at,
            time.monotonic() - scored_at,
        )
        return score

    def _scoring_threads(self, shard: ShardAssignment, handler: ModelHandler, strategy: str) -> int:
        """Mini-batches to score at once beyond MaxConcurrentTransforms (`ShardSettings`).

        Every core for MultiRecord mini-batches when no user code runs per request and a
        verified fast path serves the predict step (a scikit-learn tree model: thread-safe,
        its tree walks release the GIL), so decoding and encoding overlap with predicting;
        else 0: MaxConcurrentTransforms alone decides, as the user's code may not expect
        concurrent calls, and one-record calls hold the GIL nearly throughout (threads made
        SingleRecord 2.5x slower).
        """
        if strategy != "MultiRecord" or handler.runs_user_code_per_request:
            return 0
        if not self._models.predict_path(shard.model).is_fast:
            return 0
        return native_threads.available_cpus()

    def _knobs(self, shard: ShardAssignment) -> BatchKnobs:
        """BatchStrategy, MaxPayloadInMB and MaxConcurrentTransforms for the shard.

        The request's values, else the model's `execution_parameters_fn` answer (asked only
        when the request left one unset, once per loaded model), else the defaults.

        Raises:
            ShardFailed: the model's answer is unusable; the reason names the function.
        """
        requested = ExecutionParameters(
            max_concurrent_transforms=shard.max_concurrent,
            batch_strategy=shard.strategy,
            max_payload_mb=shard.max_payload_mb,
        )
        try:
            asked = (
                ExecutionParameters()
                if requested.is_complete
                else self._models.execution_parameters(shard.model)
            )
            return resolve(requested, asked)
        except ExecutionParametersError as err:
            raise ShardFailed(str(err)) from err

    def _open_input(self, shard: ShardAssignment, folder: Path) -> tuple[BinaryIO, int]:
        """The shard's input, positioned at its first byte, and how many bytes belong to it."""
        whole = shard.compression == "Gzip"
        end = shard.end if shard.end >= 0 else shard.input_size
        local = self._open_local_input(shard)
        if local is not None:
            if whole:
                return local, shard.input_size
            local.seek(shard.start)
            return local, end - shard.start
        if not whole:
            # Scoring starts with the first bytes, while the rest stream in.
            size = end - shard.start
            return self._link.open_range(shard.input_uri, shard.start, size), size
        source_path = folder / "input"
        self._link.download_file(shard.input_uri, source_path)
        return source_path.open("rb"), source_path.stat().st_size

    def _open_local_input(self, shard: ShardAssignment) -> BinaryIO | None:
        """The control's file of the input object, opened, if it is visible here and whole."""
        if not (self._local_inputs and shard.input_path):
            return None
        try:
            handle = Path(shard.input_path).open("rb")
        except OSError:
            return None
        # The control replaces objects by renames, so an open file is one whole version; a
        # size other than the planned one means the object changed (or this is another
        # machine's file by that name): download it as any worker would.
        if os.fstat(handle.fileno()).st_size != shard.input_size:
            handle.close()
            return None
        return handle

    def _lines_before(self, shard: ShardAssignment, folder: Path) -> int:
        """How many lines of the input lie before the shard (read only to name a line)."""
        if shard.start == 0:
            return 0
        local = self._open_local_input(shard)
        if local is not None:
            with local:
                return count_newlines(local, 0, shard.start)
        prefix = folder / "prefix"
        self._link.download_range(shard.input_uri, 0, shard.start, prefix)
        with prefix.open("rb") as handle:
            return count_newlines(handle, 0, shard.start)

    def _failure_reason(self, shard: ShardAssignment, err: ShardFailed, folder: Path) -> str:
        """`<input>: line N: <error>`, the line counted in the input file."""
        where = ""
        if err.first_line:
            before = self._lines_before(shard, folder)
            first, last = before + err.first_line, before + err.last_line
            where = f"line {first}: " if first == last else f"lines {first}-{last}: "
        reason = f"{shard.input_uri}: {where}{err.message}"
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        return reason


class _ErrorsFile:
    """A shard's bad records as JSON lines, written as they are found, lines counted in the file.

    The lines before the shard are counted once, at the first bad record, so a shard without
    any never pays for it.
    """

    def __init__(self, path: Path, lines_before: Callable[[], int]) -> None:
        self.path = path
        self.count = 0
        self._lines_before = lines_before
        self._before: int | None = None
        self._out: BinaryIO | None = None

    def __enter__(self) -> _ErrorsFile:
        self._out = self.path.open("wb")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._out is not None:
            self._out.close()

    def add(self, failure: RecordFailure) -> None:
        """Writes one bad record (its line counted from the shard's start)."""
        assert self._out is not None, "use the errors file as a context manager"
        if self._before is None:
            self._before = self._lines_before()
        self._out.write(_in_file(failure, self._before).to_json_line())
        self.count += 1


def _in_file(failure: RecordFailure, lines_before: int) -> RecordFailure:
    """The failure with its line counted in the input file and its message cut to size."""
    message = failure.message
    if len(message) > MAX_RECORD_ERROR_CHARS:
        message = message[: MAX_RECORD_ERROR_CHARS - 1] + "…"
    return RecordFailure(failure.line + lines_before, message)
