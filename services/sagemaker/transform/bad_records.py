"""Finding the records that make a mini-batch fail, for error reports and per-record error mode.

SageMaker fails a whole file when one request fails (contract §4.4) and says little about
which record was at fault. skmaker pins the failure to its records: `find_bad_records` scores
the failing mini-batch again in halves, down to single records, so a worker can

* by default, still fail the file, but name the first bad line in the reason
  (`max_failures=1`); and
* in the opt-in per-record error mode, keep every good record's output, in order, and list
  the bad ones in an errors file beside the output (`RecordFailure.to_json_line`).

Halving finds k bad records among n with about 2·k·log2(n) model calls, instead of n calls one
record at a time, and good halves are scored as one request each, as they would have been.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.runtime.errors import SkmakerError

# A score function: the output bytes for some consecutive records of the mini-batch, e.g.
# `functools.partial(dataprocessing.process_batch, handler_invoke=..., content_type=..., ...)`.
Score = Callable[[list[bytes]], bytes]


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """One record the model (or a filter or join) could not process.

    Attributes:
        line: The record's line number, counted as the mini-batch's `first_line` counts.
        message: Why it failed, as the error said it.
    """

    line: int
    message: str

    def to_json_line(self) -> bytes:
        """Write the failure as one line of an errors file: `{"line": 7, "error": "..."}`."""
        return json.dumps({"line": self.line, "error": self.message}).encode() + b"\n"


def find_bad_records(
    records: Sequence[bytes],
    score: Score,
    *,
    first_line: int = 1,
    max_failures: int | None = None,
) -> tuple[bytes, list[RecordFailure]]:
    """Score a mini-batch that failed as a whole again, in parts, to find its bad records.

    The mini-batch is split in halves, each half is scored; a half that fails is split again,
    down to single records. A single record that fails is a bad record. Outputs of the parts
    that succeed are concatenated in input order, so they are what the mini-batch would have
    produced without its bad records (with AssembleWith `None`, answers are bodies of the
    smaller requests: use AssembleWith `Line` for one output a record).

    A mini-batch whose failure came from no single record (a transient error, or a failure
    only the whole batch triggers) comes back with every output and no failures.

    Args:
        records: The mini-batch that failed.
        score: Scores consecutive records; raises a `SkmakerError` (the handler's
            InvalidArgument or ModelError, a filter's RecordProcessingError, ...) on failure.
        first_line: The line number of `records[0]`.
        max_failures: Stop once this many bad records are found (1 names the first bad line
            of a file that fails anyway); the outputs are then incomplete. None finds all.

    Returns:
        The good records' outputs, in order, and the bad records, in line order.

    Raises:
        Exception: Any error of `score` that is not a `SkmakerError` is a bug, and propagates.
    """
    outputs: list[bytes] = []
    failures: list[RecordFailure] = []
    if not records:
        return b"", failures
    # Parts still to score, as (start, stop) offsets; popped from the end, so pushing the
    # right half before the left keeps outputs in input order without recursion.
    pending = [(0, len(records))]
    if len(records) > 1:
        # The whole mini-batch has failed already; start with its halves.
        middle = len(records) // 2
        pending = [(middle, len(records)), (0, middle)]
    while pending:
        if max_failures is not None and len(failures) >= max_failures:
            break
        start, stop = pending.pop()
        try:
            outputs.append(score(list(records[start:stop])))
        except SkmakerError as err:
            if stop - start == 1:
                failures.append(RecordFailure(first_line + start, str(err)))
                continue
            middle = (start + stop) // 2
            pending.append((middle, stop))
            pending.append((start, middle))
    return b"".join(outputs), failures
