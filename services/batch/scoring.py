"""Scoring one shard: its records, packed into mini-batches, through the model, into its output.

`score_shard` chains the domain modules as SageMaker's batch platform chains requests (contract
§4.1-4.4): `records.iter_batches` cuts the shard into mini-batches, `dataprocessing.process_batch`
filters, calls the model once per mini-batch, joins and filters, and the answers are written
in input order. With MaxConcurrentTransforms above 1, that many mini-batches are scored at once
on a small thread pool (scikit-learn releases the GIL in its numeric kernels), and their
outputs are still written in input order.

A mini-batch the model refuses is scored again in halves (`bad_records.find_bad_records`) to
pin the failure to its records:

* by default (SageMaker's semantics) the shard fails with `ShardFailed`, naming the first bad
  line, so its file gets no `.out`;
* in per-record error mode, the good records' outputs are kept, in order, and the bad records
  are returned for the errors file.

Line numbers count from 1 at the shard's first byte; the caller adds the lines before the
shard to name lines of the file. Knows nothing of grpc: the model is a plain `invoke` function.
"""

from __future__ import annotations

import functools
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from services.runtime import native_threads
from services.runtime.errors import SkmakerError
from services.sagemaker.transform.bad_records import RecordFailure, find_bad_records
from services.sagemaker.transform.data_processing import (
    AssembleWith,
    HandlerInvoke,
    JoinSource,
    process_batch,
)
from services.sagemaker.transform.errors import RecordTooLarge
from services.sagemaker.transform.records import (
    BatchStrategy,
    Compression,
    MiniBatch,
    SplitType,
    iter_batches,
    payload_limit_bytes,
)


@dataclass(frozen=True)
class ShardSettings:
    """The transform settings a shard is scored with (a TransformJobSpec, defaults filled in).

    Attributes:
        content_type: ContentType sent with every mini-batch.
        accept: The output type asked for; give the model's default when the job left it
            empty, since filters and joins need to know it.
        split_type: `"None"` or `"Line"`.
        compression: `"None"` or `"Gzip"` (the shard is then the whole object).
        strategy: `"MultiRecord"` or `"SingleRecord"`.
        max_payload_mb: MaxPayloadInMB, 1-100.
        max_concurrent: MaxConcurrentTransforms, at least 1.
        assemble_with: `"None"` or `"Line"`.
        input_filter: InputFilter; empty means `$`.
        join_source: `"None"` or `"Input"`.
        output_filter: OutputFilter; empty means `$`.
        skip_header: Drop the shard's first line (only for the shard at byte 0).
        record_errors: Keep scoring past bad records and return them.
        scoring_threads: Mini-batches that may be scored at once when MaxConcurrentTransforms
            asks for fewer: the worker's cores when no user code runs per request and the
            model's predict is a verified tree model's (thread-safe; its tree walks release
            the GIL), so one mini-batch decodes and encodes while others predict; 0 otherwise.
    """

    content_type: str
    accept: str
    split_type: SplitType = "Line"
    compression: Compression = "None"
    strategy: BatchStrategy = "MultiRecord"
    max_payload_mb: int = 6
    max_concurrent: int = 1
    assemble_with: AssembleWith = "None"
    input_filter: str = ""
    join_source: JoinSource = "None"
    output_filter: str = ""
    skip_header: bool = False
    record_errors: bool = False
    scoring_threads: int = 0

    @property
    def threads(self) -> int:
        """How many mini-batches are scored at once: MaxConcurrentTransforms or
        `scoring_threads`, whichever is more."""
        return max(1, self.max_concurrent, self.scoring_threads)


@dataclass(frozen=True)
class ShardScore:
    """What scoring a shard produced.

    Attributes:
        records_done: Records scored (bad records not included).
        bytes_done: Input bytes read: the shard's size once it was read to its end.
        failures: Bad records (per-record error mode), lines counted from the shard's start;
            empty when they went to an `on_failure` callback instead.
        records_failed: How many bad records there were, wherever they went.
    """

    records_done: int
    bytes_done: int
    failures: tuple[RecordFailure, ...] = ()
    records_failed: int = 0


class ShardFailed(Exception):
    """The shard cannot be scored: SageMaker fails its file (contract §4.4).

    Args:
        message: What went wrong, without the line.
        first_line: The first line concerned, counted from the shard's start; 0 when the
            failure concerns no line (the input cannot be read).
        last_line: The last line concerned (equal to `first_line` for one record).
    """

    def __init__(self, message: str, first_line: int = 0, last_line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.first_line = first_line
        self.last_line = max(last_line, first_line)


class ShardStopped(Exception):
    """Scoring stopped between two mini-batches because `should_stop()` said so."""


Progress = Callable[[int, int], None]

# Bytes of mini-batches read and waiting for a scoring thread may reach this (at least one
# mini-batch waits, two of the default 6 MB): a queue of large payloads would hold too much.
_QUEUED_AHEAD_BYTES = 16 * 1024 * 1024


def score_shard(
    source: BinaryIO,
    size: int,
    out: BinaryIO,
    settings: ShardSettings,
    invoke: HandlerInvoke,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_failure: Callable[[RecordFailure], None] | None = None,
) -> ShardScore:
    """Score every record of a shard and write the outputs, in input order, to `out`.

    Args:
        source: The shard's bytes from its first one (or, for Gzip, the whole object).
        size: How many bytes of `source` belong to the shard.
        out: Where the shard's output goes.
        settings: The transform's settings.
        invoke: `ModelHandler.invoke(body, content_type, accept) -> (body, content_type)`.
        progress: Called after each mini-batch with the records and bytes done so far.
        should_stop: Checked between mini-batches; True ends scoring with `ShardStopped`.
        on_failure: Given each bad record as it is found (per-record error mode), in input
            order, instead of collecting them: a shard of millions of bad records then takes
            no more memory than one mini-batch's.

    Returns:
        Records and bytes done and, in per-record error mode, the bad records.

    Raises:
        ShardFailed: A record cannot be scored (default mode), a record exceeds the payload
            limit, the model's answer does not fit, or the input cannot be read.
        ShardStopped: `should_stop()` returned True.
    """
    score = functools.partial(
        process_batch,
        handler_invoke=invoke,
        content_type=settings.content_type,
        accept=settings.accept,
        split_type=settings.split_type,
        assemble_with=settings.assemble_with,
        input_filter=settings.input_filter or None,
        join_source=settings.join_source,
        output_filter=settings.output_filter or None,
    )
    batches = _batches(source, size, settings)
    records = 0
    read = 0
    failures: list[RecordFailure] = []
    failed = 0
    for batch, output, bad in _scored(batches, score, settings, should_stop):
        out.write(output)
        if on_failure is None:
            failures += bad
        else:
            for failure in bad:
                on_failure(failure)
        failed += len(bad)
        records += batch.count - len(bad)
        # Every record had a line end in the input (one byte for LF; CRLF is undercounted
        # here and made exact at the end).
        read = min(size, read + len(batch.body) + batch.count)
        if progress is not None:
            progress(records, read)
    return ShardScore(
        records_done=records, bytes_done=size, failures=tuple(failures), records_failed=failed
    )


def _batches(source: BinaryIO, size: int, settings: ShardSettings) -> Iterator[MiniBatch]:
    """The shard's mini-batches; reading errors become `ShardFailed`."""
    batches = iter_batches(
        source,
        settings.split_type,
        0,
        size,
        settings.compression,
        strategy=settings.strategy,
        max_payload_bytes=payload_limit_bytes(settings.max_payload_mb),
        skip_header=settings.skip_header,
    )
    while True:
        try:
            batch = next(batches, None)
        except RecordTooLarge as err:
            raise ShardFailed(_without_line(str(err)), err.line, err.line) from err
        except (OSError, EOFError, zlib.error) as err:
            # A truncated or corrupt gzip stream, for instance.
            raise ShardFailed(f"cannot read the input: {type(err).__name__}: {err}") from err
        if batch is None:
            return
        yield batch


def _scored(
    batches: Iterator[MiniBatch],
    score: Callable[[MiniBatch | list[bytes]], bytes],
    settings: ShardSettings,
    should_stop: Callable[[], bool],
) -> Iterator[tuple[MiniBatch, bytes, list[RecordFailure]]]:
    """(mini-batch, output, bad records) in input order, scored `settings.threads` at once."""
    # Each scoring thread gets its share of the cores for the model's native pools (OpenMP's
    # size is per thread), so concurrent mini-batches do not oversubscribe them; the fast path
    # splits a large predict of a tree model over the same share.
    concurrency = settings.threads
    share = native_threads.threads_per_call(concurrency)
    if concurrency <= 1:
        before = native_threads.call_threads()
        native_threads.set_call_threads(share)
        try:
            for batch in batches:
                if should_stop():
                    raise ShardStopped
                yield (batch, *_score_one(batch, score, settings.record_errors))
        finally:
            native_threads.set_call_threads(before)
        return
    yield from _scored_at_once(batches, score, settings, should_stop, share)


def _scored_at_once(
    batches: Iterator[MiniBatch],
    score: Callable[[MiniBatch | list[bytes]], bytes],
    settings: ShardSettings,
    should_stop: Callable[[], bool],
    share: int,
) -> Iterator[tuple[MiniBatch, bytes, list[RecordFailure]]]:
    """`_scored` on a pool of `settings.threads` threads; answers collected in input order.

    Mini-batches beyond those being scored are queued (two of 6 MB, one above 8 MB:
    `_QUEUED_AHEAD_BYTES`), so a thread that finishes takes the next at once, even while the
    caller waits for the oldest answer or reads the next mini-batch (a streamed input takes
    ~10 ms per 6 MB). The shard's last mini-batch may use
    every core (a tree model's predict is split over them) instead of leaving them idle at the
    shard's end.
    A reading error (a record over the payload limit) is raised only once the mini-batches
    before it are scored, so an earlier bad record is still the one named.
    """
    concurrency = settings.threads
    every_core = native_threads.available_cpus()
    payload = payload_limit_bytes(settings.max_payload_mb)
    ahead = max(1, _QUEUED_AHEAD_BYTES // payload)
    with ThreadPoolExecutor(
        concurrency,
        thread_name_prefix="score",
        initializer=_size_scoring_thread,
        initargs=(share,),
    ) as pool:
        pending: deque[tuple[MiniBatch, Future[bytes]]] = deque()
        reading_error: ShardFailed | None = None
        flagged = _with_last_flag(batches)
        try:
            while True:
                try:
                    item = next(flagged, None)
                except ShardFailed as err:
                    reading_error = err
                    break
                if item is None:
                    break
                if should_stop():
                    raise ShardStopped
                batch, last = item
                budget = max(share, every_core) if last else share
                pending.append((batch, pool.submit(_score_with_budget, score, batch, budget)))
                if len(pending) > concurrency + ahead:
                    yield _collect(*pending.popleft(), score, settings.record_errors)
            while pending:
                if should_stop():
                    raise ShardStopped
                yield _collect(*pending.popleft(), score, settings.record_errors)
        finally:
            for _batch, future in pending:
                future.cancel()
    if reading_error is not None:
        raise reading_error


def _with_last_flag(batches: Iterator[MiniBatch]) -> Iterator[tuple[MiniBatch, bool]]:
    """(mini-batch, whether it is the shard's last), reading one ahead; an error reading the
    next one is raised after the current one is handed out."""
    current = next(batches, None)
    while current is not None:
        try:
            following = next(batches, None)
        except ShardFailed:
            yield current, False
            raise
        yield current, following is None
        current = following


def _score_with_budget(
    score: Callable[[MiniBatch | list[bytes]], bytes], batch: MiniBatch, budget: int
) -> bytes:
    share = native_threads.call_threads()
    native_threads.set_call_threads(budget)
    try:
        return score(batch)
    finally:
        native_threads.set_call_threads(share)


def _size_scoring_thread(share: int) -> None:
    native_threads.limit_current_thread(share)
    native_threads.set_call_threads(share)


def _collect(
    batch: MiniBatch,
    future: Future[bytes],
    score: Callable[[MiniBatch | list[bytes]], bytes],
    record_errors: bool,
) -> tuple[MiniBatch, bytes, list[RecordFailure]]:
    try:
        return batch, future.result(), []
    except SkmakerError:
        return (batch, *_pin_down(batch, score, record_errors))


def _score_one(
    batch: MiniBatch, score: Callable[[MiniBatch | list[bytes]], bytes], record_errors: bool
) -> tuple[bytes, list[RecordFailure]]:
    try:
        return score(batch), []
    except SkmakerError:
        return _pin_down(batch, score, record_errors)


def _pin_down(
    batch: MiniBatch, score: Callable[[MiniBatch | list[bytes]], bytes], record_errors: bool
) -> tuple[bytes, list[RecordFailure]]:
    """Score a failed mini-batch again in parts; fail the shard unless bad records are kept."""
    try:
        output, failures = find_bad_records(
            batch.records,
            score,
            first_line=batch.first_line,
            max_failures=None if record_errors else 1,
        )
    except SkmakerError as err:  # cannot happen for parts; kept for a misbehaving model
        raise ShardFailed(str(err), batch.first_line, batch.first_line + batch.count - 1) from err
    if failures and not record_errors:
        first = failures[0]
        raise ShardFailed(first.message, first.line, first.line)
    return output, failures


def _without_line(message: str) -> str:
    """`line 3: the record is ...` without its shard-relative `line N: ` prefix."""
    head, separator, rest = message.partition(": ")
    return rest if separator and head.startswith("line ") else message
