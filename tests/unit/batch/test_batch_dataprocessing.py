"""DataProcessing: the contract's filter and join examples, settings checks, process_batch."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from services.runtime.errors import InvalidArgument
from services.sagemaker.serving.handler import ModelHandler
from services.sagemaker.transform.data_processing import (
    apply_input_filter,
    apply_output_filter,
    check_data_processing,
    join_output,
    process_batch,
    record_format,
    split_outputs,
)
from services.sagemaker.transform.errors import (
    InvalidDataProcessing,
    OutputCountMismatch,
    RecordProcessingError,
)

CSV = "text/csv"
JSON = "application/json"
JSONL = "application/jsonlines"


def _csv_lines(rows: np.ndarray[Any, Any]) -> list[bytes]:
    return [",".join(map(str, row)).encode() for row in rows.tolist()]


def _predict(handler: ModelHandler, rows: np.ndarray[Any, Any]) -> list[int]:
    return [int(v) for v in handler.model.predict(np.asarray(rows, dtype=np.float32))]


class RecordingInvoke:
    """Wraps a handler's invoke and records each request body."""

    def __init__(self, invoke: Callable[[bytes, str, str], tuple[bytes, str]]) -> None:
        self.invoke = invoke
        self.bodies: list[bytes] = []

    def __call__(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        self.bodies.append(body)
        return self.invoke(body, content_type, accept)


def _answer(body: bytes, content_type: str = CSV) -> Callable[[bytes, str, str], tuple[bytes, str]]:
    return lambda _body, _content_type, _accept: (body, content_type)


# --- the contract's examples (§4.3) ----------------------------------------------------------


def test_csv_join_appends_the_prediction_fields() -> None:
    assert join_output(b"1,2,3", b"1", CSV) == b"1,2,3,1"
    assert join_output(b"1,2,3", b"0.1,0.9", CSV) == b"1,2,3,0.1,0.9"


def test_input_filter_drops_an_id_column() -> None:
    assert apply_input_filter(b"id-7,5.1,3.5,1.4,0.2", CSV, "$[1:]") == b"5.1,3.5,1.4,0.2"


def test_output_filter_keeps_id_and_prediction() -> None:
    assert apply_output_filter(b"id-7,5.1,3.5,1.4,0.2,1", CSV, "$[0,-1]") == b"id-7,1"


def test_slices_include_their_end() -> None:
    assert apply_input_filter(b"c0,c1,c2,c3,c4,c5,c6", CSV, "$[1:4]") == b"c1,c2,c3,c4"


def test_csv_text_is_kept_exactly() -> None:
    record = b"007,1.50,1e3,-0,  spaced ,\xc3\xa9t\xc3\xa9"
    assert apply_input_filter(record, CSV, "$[0:5]") == record
    assert apply_input_filter(record, CSV, "$[1]") == b"1.50"


def test_quoted_csv_fields() -> None:
    assert apply_input_filter(b'1,"a,b",3', CSV, "$[1:]") == b'"a,b",3'
    assert apply_input_filter(b'1,"say ""hi""",3', CSV, "$[1]") == b'"say ""hi"""'
    with pytest.raises(RecordProcessingError, match="malformed CSV"):
        apply_input_filter(b'1,"a"b,3', CSV, "$[1]")


def test_json_join_adds_sagemaker_output_to_an_object() -> None:
    joined = join_output(b'{"id": 1, "features": [5.1, 3.5]}', b"2", JSONL)
    assert json.loads(joined) == {"id": 1, "features": [5.1, 3.5], "SageMakerOutput": 2}


def test_json_join_wraps_a_non_object_input() -> None:
    joined = join_output(b"[5.1, 3.5]", b"[0.2, 0.8]", JSON)
    assert json.loads(joined) == {"SageMakerInput": [5.1, 3.5], "SageMakerOutput": [0.2, 0.8]}


def test_json_input_with_sagemaker_output_is_refused() -> None:
    with pytest.raises(RecordProcessingError, match="already has a 'SageMakerOutput'") as caught:
        join_output(b'{"SageMakerOutput": 1}', b"2", JSON)
    assert isinstance(caught.value, ValueError)


def test_json_filters() -> None:
    record = b'{"id": "a", "features": [1, 2], "note": "\xc3\xa9"}'
    assert apply_input_filter(record, JSONL, "$.features") == b"[1, 2]"
    assert json.loads(apply_output_filter(record, JSON, "$['id','note']")) == {
        "id": "a",
        "note": "é",
    }
    with pytest.raises(RecordProcessingError, match="not valid JSON"):
        apply_input_filter(b"{oops", JSON, "$.a")


def test_a_csv_filter_must_select_fields() -> None:
    with pytest.raises(RecordProcessingError, match="a CSV line is an array"):
        apply_input_filter(b"1,2", CSV, "$.a")


def test_record_formats() -> None:
    assert record_format("text/csv; charset=utf-8") == "csv"
    assert [record_format(t) for t in (JSON, JSONL, "application/x-jsonlines")] == ["json"] * 3
    assert record_format("application/x-npy") == "other"


# --- settings checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"join_source": "Input", "assemble_with": "None"}, "SplitType and AssembleWith"),
        ({"join_source": "Input", "accept": JSON}, "Accept of the ContentType's format"),
        ({"join_source": "Input", "accept": ""}, "Accept of the ContentType's format"),
        ({"input_filter": "$[1:]", "split_type": "None"}, "use SplitType 'Line'"),
        ({"input_filter": "$[1:]", "content_type": "application/x-npy"}, "neither"),
        ({"output_filter": "$[0]", "assemble_with": "None"}, "needs AssembleWith 'Line'"),
        ({"input_filter": "$[1:"}, "never closed"),
        ({"split_type": "RecordIO"}, "SplitType"),
        ({"assemble_with": "Lines"}, "AssembleWith"),
        ({"join_source": "Output"}, "JoinSource"),
    ],
)
def test_conflicting_settings_are_refused(settings: dict[str, Any], problem: str) -> None:
    options: dict[str, Any] = {
        "content_type": CSV,
        "accept": CSV,
        "split_type": "Line",
        "assemble_with": "Line",
    } | settings
    with pytest.raises(InvalidDataProcessing, match=problem) as caught:
        check_data_processing(**options)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, InvalidArgument)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"input_filter": "$", "output_filter": "", "join_source": "None"},
        {"input_filter": "$[1:]", "join_source": "Input", "output_filter": "$[0,-1]"},
        {"content_type": JSONL, "accept": JSON, "join_source": "Input"},
        # The whole JSON document as one record, joined with its whole answer.
        {
            "content_type": JSON,
            "accept": JSON,
            "split_type": "None",
            "assemble_with": "None",
            "join_source": "Input",
            "input_filter": "$.rows",
        },
        # An input filter needs no per-record outputs.
        {"input_filter": "$[1:]", "assemble_with": "None"},
    ],
)
def test_working_settings(settings: dict[str, Any]) -> None:
    options: dict[str, Any] = {
        "content_type": CSV,
        "accept": CSV,
        "split_type": "Line",
        "assemble_with": "Line",
    } | settings
    check_data_processing(**options)


# --- splitting answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "count", "expected"),
    [
        (b"0\n1\n2\n", CSV, 3, [b"0", b"1", b"2"]),
        (b"0\n1\n2", CSV, 3, [b"0", b"1", b"2"]),
        (b"0\r\n1\r\n", CSV, 2, [b"0", b"1"]),
        (b"0.1,0.9\n0.8,0.2\n", CSV, 2, [b"0.1,0.9", b"0.8,0.2"]),
        (b"\n", CSV, 1, [b""]),
        (b"[0, 1, 2]", JSON, 3, [b"0", b"1", b"2"]),
        (b'[[0.1, 0.9], {"a": 1}]', JSON, 2, [b"[0.1, 0.9]", b'{"a": 1}']),
        (b"[2]", JSON, 1, [b"2"]),
        (b'{"label": 2}\n', JSON, 1, [b'{"label": 2}']),
        # JSON Lines under the JSON type.
        (b'{"a": 1}\n{"a": 2}\n', JSON, 2, [b'{"a": 1}', b'{"a": 2}']),
        (b'{"a": 1}\n{"a": 2}\n', JSONL, 2, [b'{"a": 1}', b'{"a": 2}']),
        (b"\x93NUMPY...", "application/x-npy", 1, [b"\x93NUMPY..."]),
    ],
)
def test_split_outputs(body: bytes, content_type: str, count: int, expected: list[bytes]) -> None:
    assert split_outputs(body, content_type, count) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "count", "problem"),
    [
        (b"0\n1\n", CSV, 3, "returned 2 lines for a mini-batch of 3 records"),
        (b"", CSV, 1, "returned 0 lines"),
        (b"[0, 1]", JSON, 3, "returned 2 array elements"),
        (b'{"a": 1}', JSON, 2, "returned 1 array elements"),
        (b"{\n", JSON, 3, "returned 1 JSON lines"),
        (b"xx", "application/x-npy", 2, "cannot be split"),
    ],
)
def test_split_outputs_needs_one_output_per_record(
    body: bytes, content_type: str, count: int, problem: str
) -> None:
    with pytest.raises(OutputCountMismatch, match=problem) as caught:
        split_outputs(body, content_type, count)
    if "cannot be split" not in problem:
        assert "must return one output per record" in str(caught.value)


# --- process_batch with a real handler ------------------------------------------------------


def test_csv_in_csv_out_sends_one_body_and_writes_one_line_per_record(
    iris_handler: ModelHandler, iris_rows: np.ndarray[Any, Any]
) -> None:
    records = _csv_lines(iris_rows)
    invoke = RecordingInvoke(iris_handler.invoke)
    expected = "".join(f"{label}\n" for label in _predict(iris_handler, iris_rows)).encode()
    for assemble_with in ("Line", "None"):
        out = process_batch(
            records,
            invoke,
            content_type=CSV,
            accept=CSV,
            split_type="Line",
            assemble_with=assemble_with,  # type: ignore[arg-type]
        )
        assert out == expected
    assert invoke.bodies == [b"\n".join(records)] * 2


def test_json_answers_none_vs_line(
    iris_handler: ModelHandler, iris_rows: np.ndarray[Any, Any]
) -> None:
    rows = iris_rows[:5]
    labels = _predict(iris_handler, rows)
    options: dict[str, Any] = {"content_type": CSV, "accept": JSON, "split_type": "Line"}
    raw = process_batch(_csv_lines(rows), iris_handler.invoke, assemble_with="None", **options)
    # AssembleWith None: SageMaker's raw response body, one JSON array per mini-batch.
    assert json.loads(raw) == labels
    lined = process_batch(_csv_lines(rows), iris_handler.invoke, assemble_with="Line", **options)
    assert lined == "".join(f"{label}\n" for label in labels).encode()


def test_drop_an_id_join_and_keep_id_and_prediction(
    iris_handler: ModelHandler, iris_rows: np.ndarray[Any, Any]
) -> None:
    rows = iris_rows[::30]
    records = [b"row-%d," % i + line for i, line in enumerate(_csv_lines(rows))]
    invoke = RecordingInvoke(iris_handler.invoke)
    options: dict[str, Any] = {
        "content_type": CSV,
        "accept": CSV,
        "split_type": "Line",
        "assemble_with": "Line",
        "input_filter": "$[1:]",
        "join_source": "Input",
    }
    labels = _predict(iris_handler, rows)
    joined = process_batch(records, invoke, **options)
    assert joined == b"".join(
        record + b",%d\n" % label for record, label in zip(records, labels, strict=True)
    )
    assert invoke.bodies == [b"\n".join(_csv_lines(rows))]
    kept = process_batch(records, invoke, **options, output_filter="$[0,-1]")
    assert kept == b"".join(b"row-%d,%d\n" % (i, label) for i, label in enumerate(labels))


def test_json_lines_filter_join_and_keep_members(
    iris_jsonl_handler: ModelHandler, iris_rows: np.ndarray[Any, Any]
) -> None:
    rows = iris_rows[::25]
    records = [
        json.dumps({"id": f"r{i}", "features": row}).encode() for i, row in enumerate(rows.tolist())
    ]
    labels = _predict(iris_jsonl_handler, rows)
    options: dict[str, Any] = {
        "content_type": JSONL,
        "accept": JSONL,
        "split_type": "Line",
        "assemble_with": "Line",
        "input_filter": "$.features",
        "join_source": "Input",
    }
    out = process_batch(records, iris_jsonl_handler.invoke, **options)
    lines = out.decode().splitlines()
    assert out.endswith(b"\n")
    assert [json.loads(line) for line in lines] == [
        {"id": f"r{i}", "features": row, "SageMakerOutput": label}
        for i, (row, label) in enumerate(zip(rows.tolist(), labels, strict=True))
    ]
    kept = process_batch(
        records,
        iris_jsonl_handler.invoke,
        **options,
        output_filter="$['id','SageMakerOutput']",
    )
    assert [json.loads(line) for line in kept.decode().splitlines()] == [
        {"id": f"r{i}", "SageMakerOutput": label} for i, label in enumerate(labels)
    ]


def test_json_join_refuses_a_sagemaker_output_member(iris_jsonl_handler: ModelHandler) -> None:
    record = b'{"features": [5.1, 3.5, 1.4, 0.2], "SageMakerOutput": 0}'
    with pytest.raises(RecordProcessingError, match="SageMakerOutput"):
        process_batch(
            [record],
            iris_jsonl_handler.invoke,
            content_type=JSONL,
            accept=JSONL,
            split_type="Line",
            assemble_with="Line",
            input_filter="$.features",
            join_source="Input",
        )


def test_split_none_scores_the_whole_object(
    iris_handler: ModelHandler, iris_rows: np.ndarray[Any, Any]
) -> None:
    whole = b"\n".join(_csv_lines(iris_rows[:4])) + b"\n"
    expected = "".join(f"{label}\n" for label in _predict(iris_handler, iris_rows[:4])).encode()
    for assemble_with in ("None", "Line"):
        out = process_batch(
            [whole],
            iris_handler.invoke,
            content_type=CSV,
            accept=CSV,
            split_type="None",
            assemble_with=assemble_with,  # type: ignore[arg-type]
        )
        # The answer already ends with its line end; Line adds no second one.
        assert out == expected


def test_split_none_json_join(iris_handler: ModelHandler) -> None:
    document = b'{"rows": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
    out = process_batch(
        [document],
        iris_handler.invoke,
        content_type=JSON,
        accept=JSON,
        split_type="None",
        assemble_with="None",
        input_filter="$.rows",
        join_source="Input",
    )
    assert json.loads(out) == {
        "rows": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
        "SageMakerOutput": [0, 2],
    }
    assert not out.endswith(b"\n")


def test_single_record_mini_batches(
    iris_handler: ModelHandler, iris_rows: np.ndarray[Any, Any]
) -> None:
    # One CSV row is a (1, n) batch on skmaker (contract §8), so SingleRecord works.
    records = _csv_lines(iris_rows[:3])
    out = b"".join(
        process_batch(
            [record],
            iris_handler.invoke,
            content_type=CSV,
            accept=JSON,
            split_type="Line",
            assemble_with="Line",
        )
        for record in records
    )
    assert out == "".join(f"{v}\n" for v in _predict(iris_handler, iris_rows[:3])).encode()


def test_a_blank_line_makes_the_counts_differ(iris_handler: ModelHandler) -> None:
    records = [b"5.1,3.5,1.4,0.2", b"", b"6.7,3.0,5.2,2.3"]
    with pytest.raises(OutputCountMismatch, match="one output per record"):
        process_batch(
            records,
            iris_handler.invoke,
            content_type=CSV,
            accept=CSV,
            split_type="Line",
            assemble_with="Line",
        )


def test_handler_errors_propagate(iris_handler: ModelHandler) -> None:
    with pytest.raises(InvalidArgument, match="cannot read 'abc' as a number"):
        process_batch(
            [b"abc,1,2,3"],
            iris_handler.invoke,
            content_type=CSV,
            accept=CSV,
            split_type="Line",
            assemble_with="Line",
        )


# --- process_batch with canned answers ------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"0\n1\n", b"0\n1\n"),
        # A missing last line end is added, never doubled.
        (b"0\n1", b"0\n1\n"),
        (b"0\r\n1\r\n", b"0\n1\n"),
    ],
)
def test_line_assembly_of_csv_answers(answer: bytes, expected: bytes) -> None:
    out = process_batch(
        [b"a", b"b"],
        _answer(answer),
        content_type=CSV,
        accept=CSV,
        split_type="Line",
        assemble_with="Line",
    )
    assert out == expected


def test_none_assembly_keeps_the_answer_exactly() -> None:
    out = process_batch(
        [b"a", b"b"],
        _answer(b"0\r\n1"),
        content_type=CSV,
        accept=CSV,
        split_type="Line",
        assemble_with="None",
    )
    assert out == b"0\r\n1"


def test_the_answers_content_type_decides_how_it_splits() -> None:
    # The user's output_fn answered JSON although CSV was asked for.
    out = process_batch(
        [b"a", b"b"],
        _answer(b"[3, 4]", JSON),
        content_type=CSV,
        accept=CSV,
        split_type="Line",
        assemble_with="Line",
    )
    assert out == b"3\n4\n"


def test_an_empty_mini_batch_calls_nothing() -> None:
    def fail(body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        raise AssertionError("called")

    assert (
        process_batch(
            [], fail, content_type=CSV, accept=CSV, split_type="Line", assemble_with="Line"
        )
        == b""
    )
