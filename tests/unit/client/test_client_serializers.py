"""skmaker.serializers and skmaker.deserializers behave as SageMaker's base_(de)serializers."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from skmaker.deserializers import (
    BytesDeserializer,
    CSVDeserializer,
    JSONDeserializer,
    NumpyDeserializer,
    StringDeserializer,
)
from skmaker.serializers import (
    CSVSerializer,
    IdentitySerializer,
    JSONSerializer,
    NumpySerializer,
)


def _stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


# -- content types ---------------------------------------------------------------------------


def test_serializers_announce_sagemakers_content_types() -> None:
    assert CSVSerializer().CONTENT_TYPE == "text/csv"
    assert JSONSerializer().CONTENT_TYPE == "application/json"
    assert NumpySerializer().CONTENT_TYPE == "application/x-npy"
    assert IdentitySerializer().CONTENT_TYPE == "application/octet-stream"
    assert IdentitySerializer(content_type="text/csv").CONTENT_TYPE == "text/csv"


def test_a_content_type_must_be_one_string() -> None:
    with pytest.raises(ValueError, match="content_type must be a string"):
        CSVSerializer(content_type=["text/csv"])  # type: ignore[arg-type]


def test_deserializers_announce_sagemakers_accept_tuples() -> None:
    assert CSVDeserializer().ACCEPT == ("text/csv",)
    assert JSONDeserializer().ACCEPT == ("application/json",)
    assert NumpyDeserializer().ACCEPT == ("application/x-npy",)
    assert BytesDeserializer().ACCEPT == ("*/*",)
    assert StringDeserializer().ACCEPT == ("application/json",)
    assert BytesDeserializer(accept=["text/csv", "application/json"]).ACCEPT == (
        "text/csv",
        "application/json",
    )


# -- CSVSerializer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (np.array([[5.1, 3.5, 1.4], [6.2, 2.9, 4.3]]), "5.1,3.5,1.4\n6.2,2.9,4.3"),
        (np.array([1, 2, 3]), "1,2,3"),
        ([[1, 2], [3, 4]], "1,2\n3,4"),
        ([1, 2, 3], "1,2,3"),
        ((1, 2, 3), "1,2,3"),
        ("1,2,3", "1,2,3"),
        (["1,2", "3,4"], "1,2\n3,4"),  # a list of strings is a list of ready-made lines
        ([["a,b", "c"]], '"a,b",c'),  # cells are quoted by the csv module
    ],
)
def test_csv_serializer_writes_one_line_per_row(data: object, expected: str) -> None:
    assert CSVSerializer().serialize(data) == expected


def test_csv_serializer_writes_a_dataframe_without_header_or_index() -> None:
    frame = pd.DataFrame({"a": [1.5, 2.0], "b": [3, 4]}, index=[10, 11])
    assert CSVSerializer().serialize(frame) == "1.5,3\n2.0,4\n"


def test_csv_serializer_sends_a_file_as_is() -> None:
    assert CSVSerializer().serialize(io.StringIO("1,2\n3,4\n")) == "1,2\n3,4\n"


@pytest.mark.parametrize("data", [[], np.array([])])
def test_csv_serializer_refuses_an_empty_row(data: object) -> None:
    with pytest.raises(ValueError, match="empty"):
        CSVSerializer().serialize(data)


def test_csv_serializer_refuses_a_lone_number() -> None:
    with pytest.raises(ValueError, match="Unable to handle input format"):
        CSVSerializer().serialize(5)


# -- JSONSerializer --------------------------------------------------------------------------


def test_json_serializer_turns_arrays_into_lists() -> None:
    assert JSONSerializer().serialize(np.array([[1, 2], [3, 4]])) == "[[1, 2], [3, 4]]"
    assert JSONSerializer().serialize([1.5, "x"]) == '[1.5, "x"]'


def test_json_serializer_turns_array_values_of_a_dict_into_lists() -> None:
    body = JSONSerializer().serialize({"instances": np.array([1, 2]), "k": "v"})
    assert json.loads(body) == {"instances": [1, 2], "k": "v"}


def test_json_serializer_sends_a_file_as_is() -> None:
    assert JSONSerializer().serialize(io.BytesIO(b"[1]")) == b"[1]"


# -- NumpySerializer -------------------------------------------------------------------------


def test_numpy_serializer_round_trips_an_array() -> None:
    array = np.array([[5.1, 3.5, 1.4, 0.2]])
    body = NumpySerializer().serialize(array)
    assert isinstance(body, bytes)
    np.testing.assert_array_equal(np.load(io.BytesIO(body), allow_pickle=False), array)


def test_numpy_serializer_converts_a_list_with_its_dtype() -> None:
    body = NumpySerializer(dtype="float32").serialize([[1, 2], [3, 4]])
    loaded = np.load(io.BytesIO(body))
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, [[1, 2], [3, 4]])


def test_numpy_serializer_converts_other_array_likes() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    np.testing.assert_array_equal(
        np.load(io.BytesIO(NumpySerializer().serialize(frame))), frame.to_numpy()
    )


@pytest.mark.parametrize("data", [[], np.zeros((0, 4))])
def test_numpy_serializer_refuses_empty_arrays(data: object) -> None:
    with pytest.raises(ValueError, match="empty array"):
        NumpySerializer().serialize(data)


def test_numpy_serializer_never_pickles() -> None:
    with pytest.raises(ValueError, match="pickle"):
        NumpySerializer().serialize(np.array([{"a": 1}], dtype=object))


def test_identity_serializer_returns_the_data() -> None:
    payload = b"\x00\x01"
    assert IdentitySerializer().serialize(payload) is payload


# -- deserializers ---------------------------------------------------------------------------


def test_csv_deserializer_gives_rows_of_strings() -> None:
    rows = CSVDeserializer().deserialize(_stream(b'1,2\n3,"a,b"\n'), "text/csv")
    assert rows == [["1", "2"], ["3", "a,b"]]


def test_json_deserializer_loads_json() -> None:
    assert JSONDeserializer().deserialize(_stream(b'{"a": [1, 2]}'), "application/json") == {
        "a": [1, 2]
    }


def test_bytes_and_string_deserializers() -> None:
    assert BytesDeserializer().deserialize(_stream(b"\x00ab"), "application/octet-stream") == (
        b"\x00ab"
    )
    assert StringDeserializer().deserialize(_stream("é".encode()), "text/plain") == "é"


def test_deserializers_close_the_stream() -> None:
    stream = _stream(b"[1]")
    JSONDeserializer().deserialize(stream, "application/json")
    assert stream.closed


def test_numpy_deserializer_reads_npy() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([0, 2, 1]))
    result = NumpyDeserializer().deserialize(_stream(buffer.getvalue()), "application/x-npy")
    np.testing.assert_array_equal(result, [0, 2, 1])


@pytest.mark.parametrize("content_type", ["text/csv", "text/csv; charset=utf-8"])
def test_numpy_deserializer_reads_csv_by_content_type(content_type: str) -> None:
    one_column = NumpyDeserializer().deserialize(_stream(b"0\n2\n1\n"), content_type)
    rows = NumpyDeserializer(dtype=float).deserialize(_stream(b"1,2\n3,4\n"), content_type)
    np.testing.assert_array_equal(one_column, [0, 2, 1])
    np.testing.assert_array_equal(rows, [[1.0, 2.0], [3.0, 4.0]])


def test_numpy_deserializer_reads_json_by_content_type() -> None:
    result = NumpyDeserializer().deserialize(_stream(b"[[0.1, 0.9], [1, 0]]"), "application/json")
    np.testing.assert_array_equal(result, [[0.1, 0.9], [1.0, 0.0]])
    typed = NumpyDeserializer(dtype="int64").deserialize(_stream(b"[0, 2]"), "application/json")
    assert typed.dtype == np.int64


def test_numpy_deserializer_refuses_pickled_arrays_unless_allowed() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        NumpyDeserializer().deserialize(_stream(buffer.getvalue()), "application/x-npy")
    allowed = NumpyDeserializer(allow_pickle=True)
    assert allowed.deserialize(_stream(buffer.getvalue()), "application/x-npy")[0] == {"a": 1}


def test_numpy_deserializer_refuses_other_content_types() -> None:
    with pytest.raises(ValueError, match="cannot read content type text/html"):
        NumpyDeserializer().deserialize(_stream(b"<p>"), "text/html")


def test_numpy_round_trip_through_the_default_pair() -> None:
    array = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float64)
    body = NumpySerializer().serialize(array)
    back = NumpyDeserializer().deserialize(_stream(body), NumpySerializer().CONTENT_TYPE)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype
