"""Adaptive micro-batching: concurrent predict calls on one replica stacked into one call.

`MicroBatcher(predict, ...)` wraps a predict function (the handler's predict core). A call that
finds a predict slot free (one per core, `max_running`) runs its own at once, so a lone caller
waits for nothing. Calls that arrive while every slot is taken queue up; when a predict
finishes, the queued calls (up to `max_rows` rows and `max_bytes` bytes) are stacked into one
array and predicted together by one of the queued callers' own threads, then each caller gets
its own slice of the answer. No timer: a batch is whatever queued while the previous predict
ran, so the busier the replica, the larger the
batches, and an idle one never waits.

Only plain 2-D numeric arrays of one width and dtype are stacked; anything else runs alone. When
a stacked call raises, or answers something that cannot be split by rows, its members are run
again one by one, so each caller gets exactly its own answer or its own error (one bad row fails
only the call that sent it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

MICRO_BATCH_VARIABLE = "SKMAKER_MICRO_BATCH"
DEFAULT_MAX_ROWS = 1024
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


def wanted(environ: Mapping[str, str], *, default_handlers: bool) -> bool:
    """Whether to batch: on for the default predict step, opt-in (`SKMAKER_MICRO_BATCH=1`) for
    a user's predict_fn; `SKMAKER_MICRO_BATCH=0` turns it off for both."""
    value = environ.get(MICRO_BATCH_VARIABLE, "").strip().lower()
    if value in {"0", "false", "off", "no"}:
        return False
    if value in {"1", "true", "on", "yes"}:
        return True
    return default_handlers


class _Call:
    __slots__ = ("batch", "data", "done", "error", "result")

    def __init__(self, data: np.ndarray[Any, Any]) -> None:
        self.data = data
        self.done = threading.Event()
        self.batch: list[_Call] | None = None  # set when this caller is to run a batch
        self.result: Any = None
        self.error: BaseException | None = None


class MicroBatcher:
    """A predict function that stacks concurrent calls (see the module docstring).

    Args:
        predict: The function wrapped, `predict(rows) -> answers` with one answer per row.
        max_rows: Most rows stacked into one call; a larger call runs alone.
        max_bytes: Most input bytes stacked into one call.
        on_stacked: Called with the number of calls each time a stacked predict answered them.
        max_running: Predicts that may run at once (the replica's cores: compiled and native
            predict code releases the GIL, so each core can run one); calls queue beyond.
    """

    def __init__(
        self,
        predict: Callable[[Any], Any],
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_stacked: Callable[[int], None] | None = None,
        max_running: int = 1,
    ) -> None:
        self._predict = predict
        self._max_running = max(1, max_running)
        self._on_stacked = on_stacked
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._running = 0
        # Cleared for good once the model answers something that cannot be split by rows (a
        # list, a scalar): its calls then run alone instead of twice.
        self._stackable = True
        self._queue: deque[_Call] = deque()
        self.batches = 0  # stacked calls made (more than one caller), for tests and metrics
        self.batched_calls = 0

    @property
    def queued(self) -> int:
        """Calls waiting for the predict running now to finish."""
        return len(self._queue)

    def __call__(self, data: Any) -> Any:
        """Predicts `data`, stacked with concurrent calls when it can be."""
        if (
            not self._stackable
            or type(data) is not np.ndarray
            or data.ndim != 2
            or data.dtype.kind not in "fiub"
            or len(data) > self._max_rows
            or data.nbytes > self._max_bytes
        ):
            return self._predict(data)
        with self._lock:
            if self._running >= self._max_running:
                call = _Call(data)
                self._queue.append(call)
            else:
                self._running += 1
                call = None
        if call is None:
            try:
                return self._predict(data)
            finally:
                self._next_turn()
        call.done.wait()
        if call.batch is not None:
            try:
                self._run(call.batch)
            finally:
                self._next_turn()
        if call.error is not None:
            raise call.error
        return call.result

    def _next_turn(self) -> None:
        """Hands the next predict to a queued caller, with what queued; or goes idle."""
        with self._lock:
            if not self._queue:
                self._running -= 1
                return
            first = self._queue.popleft()
            batch = [first]
            rows, size = len(first.data), first.data.nbytes
            kind = (first.data.shape[1], first.data.dtype)
            while self._queue:
                candidate = self._queue[0]
                data = candidate.data
                if (
                    (data.shape[1], data.dtype) != kind
                    or rows + len(data) > self._max_rows
                    or size + data.nbytes > self._max_bytes
                ):
                    break
                batch.append(self._queue.popleft())
                rows += len(data)
                size += data.nbytes
        first.batch = batch
        first.done.set()

    def _run(self, batch: list[_Call]) -> None:
        if len(batch) > 1 and self._run_stacked(batch):
            return
        for call in batch:
            try:
                call.result = self._predict(call.data)
            except BaseException as err:
                call.error = err
            if call.batch is None:
                call.done.set()

    def _run_stacked(self, batch: list[_Call]) -> bool:
        """Predicts the batch as one array; False when it must be run call by call."""
        try:
            answers = self._predict(np.concatenate([call.data for call in batch]))
        except Exception:
            return False  # one call's bad rows; each call runs alone to get its own error
        total = sum(len(call.data) for call in batch)
        if not isinstance(answers, np.ndarray) or answers.ndim == 0 or len(answers) != total:
            self._stackable = False
            return False
        self.batches += 1
        self.batched_calls += len(batch)
        if self._on_stacked is not None:
            self._on_stacked(len(batch))
        start = 0
        for call in batch:
            end = start + len(call.data)
            call.result = answers[start:end]
            start = end
            if call.batch is None:
                call.done.set()
        return True
