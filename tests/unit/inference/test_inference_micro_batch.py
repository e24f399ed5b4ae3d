"""Concurrent predict calls are stacked into one, and each caller gets its own answer or error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from services.inference.micro_batch import MicroBatcher, wanted


class GatedModel:
    """predict doubles each row's first value; a negative value fails the whole call.

    The first call waits at the gate, so the test decides when it finishes.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: list[int] = []  # rows per predict call, in order

    def predict(self, rows: Any) -> Any:
        if not self.calls:
            self.calls.append(len(rows))
            assert self.gate.wait(30)
        else:
            self.calls.append(len(rows))
        if (rows[:, 0] < 0).any():
            raise ValueError("negative value")
        return rows[:, 0] * 2


def _wait_for(condition: Any, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_calls_arriving_while_one_runs_are_stacked_and_each_gets_its_rows() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model.predict)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher, np.array([[1.0, 0.0]]))
        _wait_for(lambda: model.calls == [1])
        # Seven callers with 1..7 rows each, all distinct values.
        inputs = [np.arange(10 * i, 10 * i + i, dtype=float)[:, None] * [1, 0] for i in range(1, 8)]
        waiting = [pool.submit(batcher, rows) for rows in inputs]
        _wait_for(lambda: batcher.queued == 7)
        model.gate.set()
        assert first.result(10).tolist() == [2.0]
        for rows, answer in zip(inputs, waiting, strict=True):
            assert answer.result(10).tolist() == (rows[:, 0] * 2).tolist()
    # One stacked call for the seven, not seven calls.
    assert model.calls == [1, sum(range(1, 8))]
    assert batcher.batches == 1


def test_a_bad_row_fails_only_the_call_that_sent_it() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model.predict)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher, np.array([[1.0]]))
        _wait_for(lambda: model.calls == [1])
        good: list[Future[Any]] = [pool.submit(batcher, np.array([[float(i)]])) for i in (2, 3)]
        _wait_for(lambda: batcher.queued == 2)
        bad = pool.submit(batcher, np.array([[4.0], [-1.0]]))
        _wait_for(lambda: batcher.queued == 3)
        more = pool.submit(batcher, np.array([[5.0]]))
        _wait_for(lambda: batcher.queued == 4)
        model.gate.set()
        assert first.result(10).tolist() == [2.0]
        assert [f.result(10).tolist() for f in good] == [[4.0], [6.0]]
        with pytest.raises(ValueError, match="negative value"):
            bad.result(10)
        assert more.result(10).tolist() == [10.0]
    # The stacked call failed, then each of the four ran alone.
    assert model.calls == [1, 5, 1, 1, 2, 1]


def test_a_lone_caller_runs_at_once_in_its_own_thread() -> None:
    seen: list[str] = []

    def predict(rows: Any) -> Any:
        seen.append(threading.current_thread().name)
        return rows[:, 0]

    batcher = MicroBatcher(predict)
    for _ in range(3):
        assert batcher(np.ones((2, 3))).tolist() == [1.0, 1.0]
    assert seen == [threading.current_thread().name] * 3
    assert batcher.batches == 0


def test_caps_in_rows_and_different_widths_make_separate_calls() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model.predict, max_rows=4)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher, np.ones((1, 2)))
        _wait_for(lambda: model.calls == [1])
        sent = [np.full((3, 2), 1.0), np.full((1, 2), 2.0), np.full((1, 2), 3.0)]
        sent.append(np.full((2, 5), 4.0))  # another width: never stacked with the others
        answers = []
        for n, rows in enumerate(sent, start=1):
            answers.append(pool.submit(batcher, rows))
            _wait_for(lambda n=n: batcher.queued == n)
        model.gate.set()
        first.result(10)
        for rows, answer in zip(sent, answers, strict=True):
            assert answer.result(10).tolist() == (rows[:, 0] * 2).tolist()
    # 3 + 1 rows fill the cap of 4; the next row and the wider call go on their own.
    assert model.calls == [1, 4, 1, 2]


def test_on_for_default_handlers_opt_in_for_users() -> None:
    assert wanted({}, default_handlers=True)
    assert not wanted({}, default_handlers=False)
    assert wanted({"SKMAKER_MICRO_BATCH": "1"}, default_handlers=False)
    assert not wanted({"SKMAKER_MICRO_BATCH": "0"}, default_handlers=True)


def test_one_predict_per_core_runs_at_once() -> None:
    both_inside = threading.Barrier(2, timeout=10)

    def predict(rows: Any) -> Any:
        both_inside.wait()  # breaks (and raises) unless the two calls run at the same time
        return rows[:, 0]

    batcher = MicroBatcher(predict, max_running=2)
    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(batcher, np.full((1, 2), float(i))) for i in (1, 2)]
        assert [answer.result(20).tolist() for answer in answers] == [[1.0], [2.0]]


def test_a_model_answering_lists_is_stacked_once_then_left_alone() -> None:
    model = GatedModel()

    def predict(rows: Any) -> Any:
        return model.predict(rows).tolist()  # a list cannot be split by rows safely

    batcher = MicroBatcher(predict)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher, np.array([[1.0]]))
        _wait_for(lambda: model.calls == [1])
        queued = [pool.submit(batcher, np.array([[float(i)]])) for i in (2, 3)]
        _wait_for(lambda: batcher.queued == 2)
        model.gate.set()
        assert first.result(10) == [2.0]
        assert [answer.result(10) for answer in queued] == [[4.0], [6.0]]
    assert model.calls == [1, 2, 1, 1]  # tried stacked once, then each alone
    assert batcher(np.array([[5.0], [6.0]])) == [10.0, 12.0]
    assert model.calls[-1] == 2
