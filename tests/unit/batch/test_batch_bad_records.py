"""Per-record error mode: pinning a failing mini-batch's errors to its records."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pytest

from services.runtime.errors import InvalidArgument, ModelError
from services.sagemaker.serving.handler import ModelHandler
from services.sagemaker.transform.bad_records import RecordFailure, find_bad_records
from services.sagemaker.transform.data_processing import process_batch


class CountingScore:
    """Scores records as `<record>!\\n`; a record named in `bad` fails any batch holding it."""

    def __init__(self, bad: set[bytes]) -> None:
        self.bad = bad
        self.calls: list[list[bytes]] = []

    def __call__(self, records: list[bytes]) -> bytes:
        self.calls.append(records)
        for record in records:
            if record in self.bad:
                raise ModelError(f"cannot score {record.decode()}")
        return b"".join(record + b"!\n" for record in records)


def _records(count: int) -> list[bytes]:
    return [b"r%d" % i for i in range(count)]


def test_good_outputs_in_order_and_bad_lines() -> None:
    records = _records(10)
    score = CountingScore({b"r3", b"r7"})
    output, failures = find_bad_records(records, score, first_line=5)
    assert output == b"".join(r + b"!\n" for r in records if r not in {b"r3", b"r7"})
    assert failures == [
        RecordFailure(8, "cannot score r3"),
        RecordFailure(12, "cannot score r7"),
    ]


def test_halving_needs_few_calls() -> None:
    records = _records(1024)
    score = CountingScore({b"r500"})
    output, failures = find_bad_records(records, score)
    assert [f.line for f in failures] == [501]
    assert output.count(b"\n") == 1023
    # Two parts per level of a 10-level halving, not 1024 single calls.
    assert len(score.calls) == 20


def test_max_failures_stops_at_the_first_bad_record() -> None:
    score = CountingScore({b"r2", b"r6"})
    _, failures = find_bad_records(_records(8), score, max_failures=1)
    assert failures == [RecordFailure(3, "cannot score r2")]


def test_a_failure_no_single_record_causes_keeps_everything() -> None:
    calls: list[int] = []

    def flaky(records: list[bytes]) -> bytes:
        calls.append(len(records))
        return b"".join(records)

    output, failures = find_bad_records(_records(4), flaky)
    assert (output, failures) == (b"r0r1r2r3", [])
    assert calls == [2, 2]


def test_a_single_record_is_scored_again() -> None:
    assert find_bad_records([b"r0"], CountingScore({b"r0"})) == (
        b"",
        [RecordFailure(1, "cannot score r0")],
    )
    assert find_bad_records([], CountingScore(set())) == (b"", [])


def test_bugs_are_not_record_errors() -> None:
    def broken(records: list[bytes]) -> bytes:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        find_bad_records(_records(3), broken)


def test_errors_file_line() -> None:
    line = RecordFailure(7, 'bad "value"').to_json_line()
    assert line.endswith(b"\n")
    assert json.loads(line) == {"line": 7, "error": 'bad "value"'}


def test_with_the_real_handler(iris_handler: ModelHandler, iris_rows: np.ndarray[Any, Any]) -> None:
    rows = iris_rows[:6]
    records = [",".join(map(str, row)).encode() for row in rows.tolist()]
    records[2] = b"5.0,abc,1.4,0.2"
    records[4] = b"1,2,3"  # three features for a four-feature model
    score = functools.partial(
        process_batch,
        handler_invoke=iris_handler.invoke,
        content_type="text/csv",
        accept="text/csv",
        split_type="Line",
        assemble_with="Line",
    )
    with pytest.raises(InvalidArgument):
        score(records)
    output, failures = find_bad_records(records, score, first_line=2)
    good = np.delete(rows, [2, 4], axis=0)
    labels = iris_handler.model.predict(good.astype(np.float32))
    assert output == "".join(f"{label}\n" for label in labels).encode()
    assert [f.line for f in failures] == [4, 6]
    assert "cannot read 'abc' as a number" in failures[0].message
    assert "features" in failures[1].message
