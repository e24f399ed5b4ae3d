"""Default decode / encode (contract §2.3 with skmaker's §8 decisions), tested directly."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from services.runtime.errors import InvalidArgument, ModelError
from services.sagemaker.serving import codecs
from services.sagemaker.serving.codecs import (
    decode,
    encode,
    is_textual,
    parse_media_type,
    to_text,
)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=allow_pickle)
    return stream.getvalue()


def _sagemaker_csv_decode(text: str) -> np.ndarray:
    """sagemaker_containers' csv_to_numpy, minus its squeeze, then the container's float32 cast."""
    rows = list(csv.reader(io.StringIO(text), delimiter=",", quotechar='"', strict=True))
    return np.array(rows).astype(float).astype(np.float32)


def _savetxt(array: Any) -> bytes:
    """sagemaker_containers' array_to_csv."""
    stream = io.StringIO()
    np.savetxt(stream, array, delimiter=",", fmt="%s")
    return stream.getvalue().encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text/csv", "text/csv"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("  Text/CSV ;charset=UTF-8", "text/csv"),
        ("", "application/json"),
        ("application/json, text/csv", "application/json, text/csv"),
        ("*/*", "*/*"),
    ],
)
def test_parse_media_type(value: str, expected: str) -> None:
    assert parse_media_type(value) == expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/csv", True),
        ("text/plain; charset=utf-8", True),
        ("application/json", True),
        ("application/vnd.api+json", True),
        ("", True),
        ("application/x-npy", False),
        ("application/octet-stream", False),
    ],
)
def test_is_textual(content_type: str, expected: bool) -> None:
    assert is_textual(content_type) is expected


def test_to_text_uses_the_charset_parameter() -> None:
    assert to_text("é".encode("latin-1"), "text/csv; charset=latin-1") == "é"
    assert to_text("é".encode(), "text/csv") == "é"
    assert to_text("already text", "text/csv; charset=latin-1") == "already text"


def test_to_text_refuses_unknown_charsets_and_bad_bytes() -> None:
    with pytest.raises(InvalidArgument, match="unknown charset 'klingon'"):
        to_text(b"1", "text/csv; charset=klingon")
    with pytest.raises(InvalidArgument, match="not valid utf-8"):
        to_text(b"\xff\xfe1", "text/csv")


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        ("5.1,3.5,1.4,0.2", (1, 4)),
        ("5.1,3.5,1.4,0.2\n", (1, 4)),
        ("5.1,3.5,1.4,0.2\n6.2,3.4,5.4,2.3\n", (2, 4)),
        ("1\n2\n3\n", (3, 1)),
        ("7", (1, 1)),
        ("1,2\r\n3,4\r\n", (2, 2)),
        ("1,2\r3,4\r", (2, 2)),
        ('"1","2"\n3,"4"', (2, 2)),
        ("1,2\n\n3,4\n\n", (2, 2)),
    ],
)
def test_decode_csv_is_always_2d_float32(body: str, shape: tuple[int, int]) -> None:
    array = decode(body, "text/csv")
    assert array.shape == shape
    assert array.dtype == np.float32
    assert decode(body.encode(), "text/csv; charset=utf-8").shape == shape


def test_decode_csv_values_match_sagemaker() -> None:
    body = "5.1,3.5,1.4,0.2\n0.1,1e-3,-7,1_000\n"
    np.testing.assert_array_equal(decode(body, "text/csv"), _sagemaker_csv_decode(body))


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("columns", [1, 4, 30])
def test_decode_large_csv_matches_the_csv_module(
    line_end: str, columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Large bodies take np.loadtxt; the result must be what the csv path gives, bit for bit.
    rng = random.Random(columns)
    cells: list[Callable[[], str]] = [
        lambda: repr(rng.uniform(-1e6, 1e6)),
        lambda: f"{rng.random():.9g}",
        lambda: str(rng.randint(-(10**6), 10**6)),
        lambda: " 2.5",
        lambda: "nan",
        lambda: "-inf",
        lambda: "1e-40",
    ]
    rows = [",".join(rng.choice(cells)() for _ in range(columns)) for _ in range(500)]
    body = line_end.join(rows) + line_end
    assert len(body) >= codecs._CSV_FAST_PATH_MIN_CHARS
    expected = _sagemaker_csv_decode(body.replace("\r\n", "\n").replace("\r", "\n"))

    def no_csv_module(*args: object, **kwargs: object) -> None:
        raise AssertionError("the large body fell back to the csv module")

    monkeypatch.setattr(csv, "reader", no_csv_module)
    np.testing.assert_array_equal(decode(body, "text/csv"), expected)


def test_decode_large_csv_errors_name_the_cell() -> None:
    body = "1,2,3\n" * 5000 + "1,x,3\n"
    with pytest.raises(InvalidArgument, match=r"line 5001, column 2: cannot read 'x'"):
        decode(body, "text/csv")


def test_decode_csv_value_beyond_float32_becomes_inf_without_warning() -> None:
    assert decode("1e39,1", "text/csv")[0, 0] == np.inf


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1,2,3\n4,abc,6\n", r"CSV line 2, column 2: cannot read 'abc' as a number"),
        ("sepal_length,sepal_width\n1,2\n", r"CSV line 1, column 1: cannot read 'sepal_length'"),
        ("1,2,3\n4,5\n", r"CSV line 2 has 2 fields, the first row has 3"),
        ("1,,3\n", r"column 2: cannot read '' as a number"),
        ('1,"2"x,3\n', r"malformed CSV"),
        ("", r"the CSV body has no rows"),
        ("\n\n", r"the CSV body has no rows"),
    ],
)
def test_decode_csv_errors_name_the_problem(body: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode(body, "text/csv")


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        ("[[5.1, 3.5, 1.4, 0.2], [6.2, 3.4, 5.4, 2.3]]", (2, 4)),
        ("[5.1, 3.5, 1.4, 0.2]", (1, 4)),
        ("[[1], [2], [3]]", (3, 1)),
        ('[["1.5", 2]]', (1, 2)),
    ],
)
def test_decode_json_is_float32_and_flat_lists_are_one_row(
    body: str, shape: tuple[int, ...]
) -> None:
    array = decode(body, "application/json")
    assert array.shape == shape
    assert array.dtype == np.float32
    assert decode(body.encode(), "").shape == shape


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"instances": [[1, 2]]}', r"must be a \(nested\) list of numbers, got an object; send"),
        ('{"a": 1}', r"must be a \(nested\) list of numbers, got an object"),
        ("3", r"got a number"),
        ("[[1, 2], [3]]", r"rectangular \(nested\) list of numbers"),
        ('[["a", 2]]', r"rectangular \(nested\) list of numbers: could not convert"),
        ("[1, 2", r"malformed JSON body"),
        ("[]", r"holds no values"),
    ],
)
def test_decode_json_errors(body: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode(body, "application/json")


@pytest.mark.parametrize(
    "array",
    [
        np.arange(8, dtype=np.int64).reshape(2, 4),
        np.asfortranarray(np.ones((3, 2), dtype=np.float32)),
        np.array(["free text", "more"]),
    ],
)
def test_decode_npy_keeps_dtype_and_shape(array: np.ndarray) -> None:
    decoded = decode(_npy(array), "application/x-npy")
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)
    decoded[...] = decoded  # a writable array, as np.load returns


def test_decode_npy_reads_a_1d_numeric_array_as_one_row() -> None:
    # predictor.predict(X[0]) sends one row as a 1-D array; models want (1, n_features).
    decoded = decode(_npy(np.linspace(0, 1, 4)), "application/x-npy")
    assert decoded.shape == (1, 4)
    np.testing.assert_array_equal(decoded[0], np.linspace(0, 1, 4))


def test_decode_npy_matches_np_load_for_every_layout() -> None:
    arrays = [
        np.arange(24, dtype=">i4").reshape(2, 3, 4),
        np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        np.float32(3.5) * np.ones(()),
        np.zeros((0, 4), dtype=np.float32),
        np.array([(1, 2.5)], dtype=[("a", "<i8"), ("b", "<f4")]),
        np.array([""], dtype="<U0"),
    ]
    for array in arrays:
        body = _npy(array)
        decoded = decode(body, "application/x-npy")
        reference = np.load(io.BytesIO(body), allow_pickle=False)
        assert decoded.dtype == reference.dtype
        assert decoded.shape == reference.shape
        assert decoded.flags.f_contiguous == reference.flags.f_contiguous
        assert decoded.flags.writeable
        np.testing.assert_array_equal(decoded, reference)


def test_decode_npy_reads_header_version_2_and_3() -> None:
    array = np.arange(4.0).reshape(1, 4)
    for version in ((2, 0), (3, 0)):
        stream = io.BytesIO()
        np.lib.format.write_array(stream, array, version=version, allow_pickle=False)
        np.testing.assert_array_equal(decode(stream.getvalue(), "application/x-npy"), array)


def test_decode_npy_refuses_object_arrays() -> None:
    body = _npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidArgument, match="dtype object are refused"):
        decode(body, "application/x-npy")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not an npy file",
        b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8', ",
        _npy(np.ones(3)).replace(b"'<f8'", b"'<zz'"),
    ],
)
def test_decode_npy_refuses_unreadable_bodies(body: bytes) -> None:
    with pytest.raises(InvalidArgument, match="cannot read the application/x-npy body"):
        decode(body, "application/x-npy")


@pytest.mark.parametrize(
    "body", [_npy(np.ones(100))[:-8], _npy(np.ones(100)) + b"extra", _npy(np.ones(3))[:-24]]
)
def test_decode_npy_refuses_data_of_the_wrong_size(body: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"header describes \(\d+,\) of float64"):
        decode(body, "application/x-npy")


def test_decode_npy_huge_shape_claim_is_refused_without_allocating() -> None:
    body = _npy(np.ones(2)).replace(b"(2,)", b"(10000000000000,)")
    with pytest.raises(InvalidArgument, match="80000000000000 bytes"):
        decode(body, "application/x-npy")


def test_decode_npy_refuses_a_text_body() -> None:
    with pytest.raises(InvalidArgument, match="must be binary"):
        decode("[1, 2]", "application/x-npy")


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "image/png"])
def test_decode_unsupported_content_type(content_type: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        decode(b"1,2", content_type)
    assert str(raised.value) == (
        f"unsupported content type '{content_type}'; "
        "supported: text/csv, application/json, application/x-npy"
    )


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        (np.array([0, 2, 1]), b"[0, 2, 1]"),
        (np.array([[0.25, 0.75]]), b"[[0.25, 0.75]]"),
        ([np.float32(0.5), np.int64(3)], b"[0.5, 3]"),
        (np.int64(2), b"2"),
        (np.array(["setosa", "virginica"]), b'["setosa", "virginica"]'),
    ],
)
def test_encode_json(prediction: object, expected: bytes) -> None:
    assert encode(prediction, "application/json") == (expected, "application/json")


def test_encode_json_of_unencodable_prediction_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="cannot be encoded as JSON"):
        encode(object(), "application/json")


@pytest.mark.parametrize(
    "prediction",
    [
        np.array([0, 2, 1]),
        np.array([[1, 2], [3, 4]], dtype=np.int32),
        np.array([0.1, 1.0, 1e16, 1e-5, np.nan], dtype=np.float64),
        np.array([[0.1, 0.2], [1.0, 2.5]], dtype=np.float32),
        np.array([True, False]),
        np.array(["setosa", "versicolor"]),
        np.array(["setosa", 1], dtype=object),
        np.zeros((2, 0)),
        [0.5, 1.5],
        [[1, 2], [3, 4]],
    ],
)
def test_encode_csv_matches_sagemakers_savetxt(prediction: object) -> None:
    assert encode(prediction, "text/csv") == (_savetxt(prediction), "text/csv")


def test_encode_csv_shapes() -> None:
    assert encode(np.array([0, 2, 1]), "text/csv")[0] == b"0\n2\n1\n"
    assert encode(np.array([[1, 2], [3, 4]]), "text/csv")[0] == b"1,2\n3,4\n"
    assert encode(np.int64(7), "text/csv")[0] == b"7\n"
    assert encode(np.array([], dtype=np.int64), "text/csv")[0] == b""


def test_encode_csv_refuses_more_than_two_dimensions() -> None:
    with pytest.raises(InvalidArgument, match="3-D prediction cannot be written as text/csv"):
        encode(np.zeros((1, 2, 3)), "text/csv")


def test_encode_npy_round_trips() -> None:
    prediction = np.array([[0.1, 0.9]], dtype=np.float32)
    body, content_type = encode(prediction, "application/x-npy")
    assert content_type == "application/x-npy"
    loaded = np.load(io.BytesIO(body), allow_pickle=False)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, prediction)


def test_encode_npy_refuses_object_predictions() -> None:
    with pytest.raises(InvalidArgument, match="dtype object"):
        encode(np.array([1, "a"], dtype=object), "application/x-npy")


@pytest.mark.parametrize("accept", ["", "*/*", "  ", "*/*; q=0.8"])
def test_encode_empty_or_any_accept_uses_the_default(accept: str) -> None:
    assert encode(np.array([1]), accept) == (b"[1]", "application/json")
    assert encode(np.array([1]), accept, default_accept="text/csv") == (b"1\n", "text/csv")


def test_encode_accept_parameters_are_accepted() -> None:
    assert encode(np.array([1]), "text/csv; charset=utf-8") == (b"1\n", "text/csv")


@pytest.mark.parametrize("accept", ["text/html", "application/json, text/csv", "image/*"])
def test_encode_unsupported_accept(accept: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        encode(np.array([1]), accept)
    assert str(raised.value) == (
        f"unsupported accept '{accept}'; supported: text/csv, application/json, application/x-npy"
    )


def test_encode_unsupported_default_accept_is_named_as_such() -> None:
    with pytest.raises(InvalidArgument, match="unsupported default accept 'text/html'"):
        encode(np.array([1]), "*/*", default_accept="text/html")


def test_json_body_survives_a_round_trip_through_decode() -> None:
    body, _ = encode(decode("[[1, 2]]", "application/json"), "application/json")
    assert json.loads(body) == [[1.0, 2.0]]


def test_a_large_csv_body_decodes_exactly_as_the_csv_module_would() -> None:
    # Over 1 MiB the bulk reader (pandas' C parser) runs; it must agree with the exact path.
    rng = np.random.default_rng(7)
    values = rng.normal(size=(40_000, 5))
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in values) + "\n"
    assert len(text) > 1 << 20
    expected = np.array([row.split(",") for row in text.splitlines()], dtype=np.float32)
    np.testing.assert_array_equal(decode(text, "text/csv"), expected)
    np.testing.assert_array_equal(decode(text.encode(), "text/csv"), expected)
    with pytest.raises(InvalidArgument, match="has 2 fields"):
        decode(text + "1,2\n", "text/csv")
    with pytest.raises(InvalidArgument, match="has 2 fields"):
        decode((text + "1,2\n").encode(), "text/csv")


def test_a_large_csv_body_in_bytes_keeps_the_charset_rules() -> None:
    rows = "\n".join(f"{i}.5,{i}.25" for i in range(120_000)) + "\n"
    assert len(rows) > 1 << 20
    body = rows.encode()
    with pytest.raises(InvalidArgument, match="not valid utf-8"):
        decode(body + b"\xff,1\n", "text/csv")
    with pytest.raises(InvalidArgument, match="line 120001, column 1"):
        decode(body + "caf\u00e9,1\n".encode("latin-1"), "text/csv; charset=latin-1")
    assert decode(body, "text/csv; charset=latin-1").shape == (120_000, 2)
