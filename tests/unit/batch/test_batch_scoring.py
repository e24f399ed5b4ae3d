"""`score_shard`: a shard's records through a real ModelHandler, in order, with failures pinned
to their lines, concurrency that keeps the order, and a stop between mini-batches."""

from __future__ import annotations

import gzip
import io
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from services.batch.scoring import ShardFailed, ShardSettings, ShardStopped, score_shard
from services.runtime import native_threads
from services.sagemaker.serving.handler import ModelHandler


@pytest.fixture(scope="module")
def rows(iris_rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.tile(iris_rows, (4, 1))


@pytest.fixture(scope="module")
def csv_bytes(rows: np.ndarray[Any, Any]) -> bytes:
    return "".join(",".join(map(str, row)) + "\n" for row in rows.tolist()).encode()


def _expected(handler: ModelHandler, rows: np.ndarray[Any, Any]) -> bytes:
    return "".join(f"{int(p)}\n" for p in handler.model.predict(rows)).encode()


def _score(data: bytes, handler: ModelHandler, **settings: Any) -> tuple[bytes, Any]:
    values: dict[str, Any] = {
        "content_type": "text/csv",
        "accept": "text/csv",
        "split_type": "Line",
        "assemble_with": "Line",
    }
    values.update(settings)
    out = io.BytesIO()
    score = score_shard(io.BytesIO(data), len(data), out, ShardSettings(**values), handler.invoke)
    return out.getvalue(), score


@pytest.mark.parametrize("strategy", ["MultiRecord", "SingleRecord"])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_outputs_follow_the_input_order(
    iris_handler: ModelHandler,
    rows: np.ndarray[Any, Any],
    csv_bytes: bytes,
    strategy: str,
    concurrency: int,
) -> None:
    # A tiny payload limit makes many mini-batches, so the order across threads matters.
    output, score = _score(
        csv_bytes, iris_handler, strategy=strategy, max_concurrent=concurrency, max_payload_mb=1
    )
    assert output == _expected(iris_handler, rows)
    assert (score.records_done, score.bytes_done, score.failures) == (
        len(rows),
        len(csv_bytes),
        (),
    )


def test_gzip_input_and_progress(
    iris_handler: ModelHandler, rows: np.ndarray[Any, Any], csv_bytes: bytes
) -> None:
    packed = gzip.compress(csv_bytes)
    seen: list[tuple[int, int]] = []
    out = io.BytesIO()
    score_shard(
        io.BytesIO(packed),
        len(packed),
        out,
        ShardSettings("text/csv", "text/csv", "Line", "Gzip", "SingleRecord", assemble_with="Line"),
        iris_handler.invoke,
        progress=lambda records, done: seen.append((records, done)),
    )
    assert out.getvalue() == _expected(iris_handler, rows)
    assert seen[-1][0] == len(rows)
    assert [records for records, _ in seen] == sorted(records for records, _ in seen)


def _with_bad_lines(csv_bytes: bytes, bad: dict[int, bytes]) -> bytes:
    lines = csv_bytes.split(b"\n")
    for line, text in bad.items():
        lines[line - 1] = text
    return b"\n".join(lines)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_bad_record_fails_the_shard_naming_its_line(
    iris_handler: ModelHandler, csv_bytes: bytes, concurrency: int
) -> None:
    data = _with_bad_lines(csv_bytes, {250: b"5.1,oops,1.4,0.2", 400: b"x,y,z,w"})
    with pytest.raises(ShardFailed) as caught:
        _score(data, iris_handler, max_concurrent=concurrency)
    assert (caught.value.first_line, caught.value.last_line) == (250, 250)
    assert "could not convert" in caught.value.message or "oops" in caught.value.message


def test_record_errors_keep_every_good_row(
    iris_handler: ModelHandler, rows: np.ndarray[Any, Any], csv_bytes: bytes
) -> None:
    data = _with_bad_lines(csv_bytes, {1: b"header,a,b,c", 300: b"1,2,3"})
    output, score = _score(data, iris_handler, record_errors=True, max_payload_mb=1)
    good = np.delete(rows, [0, 299], axis=0)
    assert output == _expected(iris_handler, good)
    assert [failure.line for failure in score.failures] == [1, 300]
    assert score.records_done == len(rows) - 2


def test_bad_records_can_stream_to_a_callback_instead_of_being_kept(
    iris_handler: ModelHandler, rows: np.ndarray[Any, Any], csv_bytes: bytes
) -> None:
    data = _with_bad_lines(csv_bytes, {1: b"header,a,b,c", 300: b"1,2,3"})
    seen: list[int] = []
    out = io.BytesIO()
    settings = ShardSettings(
        content_type="text/csv",
        accept="text/csv",
        split_type="Line",
        assemble_with="Line",
        record_errors=True,
        max_payload_mb=1,
    )
    score = score_shard(
        io.BytesIO(data),
        len(data),
        out,
        settings,
        iris_handler.invoke,
        on_failure=lambda failure: seen.append(failure.line),
    )
    assert seen == [1, 300]
    assert (score.failures, score.records_failed) == ((), 2)
    assert out.getvalue() == _expected(iris_handler, np.delete(rows, [0, 299], axis=0))


def test_a_record_over_the_payload_limit_fails_with_its_line(iris_handler: ModelHandler) -> None:
    data = b"1,2,3,4\n" + b"1," * 600_000 + b"1\n"
    with pytest.raises(ShardFailed) as caught:
        _score(data, iris_handler, max_payload_mb=1)
    assert caught.value.first_line == 2
    assert caught.value.message.startswith("the record is at least")


def test_a_stop_ends_scoring_between_mini_batches(
    iris_handler: ModelHandler, csv_bytes: bytes
) -> None:
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(ShardStopped):
        score_shard(
            io.BytesIO(csv_bytes),
            len(csv_bytes),
            io.BytesIO(),
            ShardSettings("text/csv", "text/csv", "Line", strategy="SingleRecord"),
            iris_handler.invoke,
            should_stop=should_stop,
        )


def test_concurrent_scoring_threads_share_the_cores(csv_bytes: bytes) -> None:
    # The OpenMP pool's size is per thread: each scoring thread reports its own.
    import threadpoolctl
    from sklearn.ensemble import HistGradientBoostingClassifier  # loads OpenMP

    assert HistGradientBoostingClassifier  # imported for its native library
    sizes: set[int] = set()

    def invoke(body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        sizes.update(
            pool["num_threads"]
            for pool in threadpoolctl.threadpool_info()
            if pool["user_api"] == "openmp"
        )
        return b"0\n" * len(body.splitlines()), "text/csv"

    _score(csv_bytes, type("H", (), {"invoke": staticmethod(invoke)})(), max_concurrent=2)
    assert sizes == {native_threads.threads_per_call(2)}


@pytest.mark.parametrize("concurrency", [1, 2])
def test_each_scored_mini_batch_may_use_its_share_of_the_cores(concurrency: int) -> None:
    # The fast path splits a large predict over this budget: one mini-batch at a time gets
    # every core; concurrent ones their share, but the shard's last one every core again, as
    # no other mini-batch comes to use them. The thread's own budget is back to 1 afterwards.
    budgets: dict[bytes, int] = {}

    def invoke(body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        budgets[body] = native_threads.call_threads()
        return b"0\n" * len(body.splitlines()), "text/csv"

    handler = type("H", (), {"invoke": staticmethod(invoke)})()
    data = b"".join(b"%d,1,1,1\n" % line for line in range(60))  # each record told apart
    _score(data, handler, max_concurrent=concurrency, strategy="SingleRecord")
    lines = data.splitlines()
    assert [budgets[line] for line in lines[:-1]] == [
        native_threads.threads_per_call(concurrency)
    ] * (len(lines) - 1)
    assert budgets[lines[-1]] == native_threads.available_cpus()
    assert native_threads.call_threads() == 1


def _recording_invoke(
    handler: ModelHandler, threads: set[str]
) -> Callable[[bytes, str, str], tuple[bytes, str]]:
    def invoke(body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        threads.add(threading.current_thread().name)
        return handler.invoke(body, content_type, accept)

    return invoke


@pytest.mark.parametrize("strategy", ["MultiRecord", "SingleRecord"])
def test_scoring_threads_score_mini_batches_at_once_in_input_order(
    iris_handler: ModelHandler, rows: np.ndarray[Any, Any], csv_bytes: bytes, strategy: str
) -> None:
    threads: set[str] = set()
    values: dict[str, Any] = {"content_type": "text/csv", "accept": "text/csv"}
    settings = ShardSettings(
        **values,
        assemble_with="Line",
        strategy=strategy,  # type: ignore[arg-type]
        max_payload_mb=1,
        scoring_threads=2,
    )
    assert settings.threads == 2
    out = io.BytesIO()
    seen: list[tuple[int, int]] = []
    score = score_shard(
        io.BytesIO(csv_bytes),
        len(csv_bytes),
        out,
        settings,
        _recording_invoke(iris_handler, threads),
        progress=lambda records, done: seen.append((records, done)),
    )
    assert out.getvalue() == _expected(iris_handler, rows)
    assert (score.records_done, score.bytes_done) == (len(rows), len(csv_bytes))
    assert seen[-1] == (len(rows), len(csv_bytes))
    assert [records for records, _ in seen] == sorted(records for records, _ in seen)
    # Scored on the pool's threads, not the caller's.
    assert threads and all(name.startswith("score") for name in threads)


@pytest.mark.parametrize(
    "knobs", [{}, {"max_concurrent": 2}, {"scoring_threads": 2}, {"scoring_threads": 3}]
)
def test_bad_records_are_named_alike_however_many_threads_score(
    iris_handler: ModelHandler, rows: np.ndarray[Any, Any], csv_bytes: bytes, knobs: dict[str, int]
) -> None:
    data = _with_bad_lines(csv_bytes, {1: b"header,a,b,c", 300: b"1,2,3", 599: b"x,y,z,w"})
    output, score = _score(data, iris_handler, record_errors=True, strategy="SingleRecord", **knobs)
    assert output == _expected(iris_handler, np.delete(rows, [0, 299, 598], axis=0))
    assert [failure.line for failure in score.failures] == [1, 300, 599]
    with pytest.raises(ShardFailed) as caught:
        _score(data, iris_handler, strategy="SingleRecord", **knobs)
    assert (caught.value.first_line, caught.value.last_line) == (1, 1)


@pytest.mark.parametrize("knobs", [{}, {"max_concurrent": 2}, {"scoring_threads": 2}])
def test_a_record_over_the_limit_is_named_after_an_earlier_bad_record(
    iris_handler: ModelHandler, knobs: dict[str, int]
) -> None:
    # Reading runs ahead of scoring on threads; the record too large to read is still only
    # named once every mini-batch before it was scored, so the earlier bad record fails first.
    good = b"5.1,3.5,1.4,0.2\n" * 2000
    data = good + b"5.1,oops,1.4,0.2\n" + good + b"1," * 600_000 + b"1\n"
    with pytest.raises(ShardFailed) as caught:
        _score(data, iris_handler, max_payload_mb=1, **knobs)
    assert caught.value.first_line == 2001
    assert "oops" in caught.value.message or "could not convert" in caught.value.message
    with pytest.raises(ShardFailed) as caught:
        _score(data.replace(b"oops", b"3.5"), iris_handler, max_payload_mb=1, **knobs)
    assert caught.value.first_line == 4002
    assert caught.value.message.startswith("the record is at least")
