"""The JSONPath subset of DataProcessing filters: every supported form, and clear refusals."""

from __future__ import annotations

from typing import Any

import pytest

from services.runtime.errors import InvalidArgument
from services.sagemaker.transform.errors import InvalidJsonPath, RecordProcessingError
from services.sagemaker.transform.jsonpath import (
    Index,
    Indexes,
    Member,
    Members,
    Slice,
    Wildcard,
    parse_json_path,
)

FIELDS = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]
RECORD = {"id": 7, "features": [1.5, 2, 3], "meta": {"a": 1, "b": [4, 5]}, "x-y": True}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", FIELDS),
        ("$[0]", "c0"),
        ("$[-1]", "c6"),
        ("$[0,-1]", ["c0", "c6"]),
        ("$[1,3,5]", ["c1", "c3", "c5"]),
        ("$[2,0]", ["c2", "c0"]),
        ("$[1:]", FIELDS[1:]),
        # Slices include their end (skmaker decision, contract §8): columns 1, 2, 3 and 4.
        ("$[1:4]", ["c1", "c2", "c3", "c4"]),
        ("$[:2]", ["c0", "c1", "c2"]),
        ("$[:-2]", FIELDS[:-1]),
        ("$[-3:-2]", ["c4", "c5"]),
        ("$[-2:]", ["c5", "c6"]),
        ("$[3:3]", ["c3"]),
        ("$[4:2]", []),
        # Slices are clamped to the array.
        ("$[5:100]", ["c5", "c6"]),
        ("$[-100:0]", ["c0"]),
        ("$[0,5:]", ["c0", "c5", "c6"]),
        ("$[ 0 , 2:3 ]", ["c0", "c2", "c3"]),
        ("$[*]", FIELDS),
        ("$.*", FIELDS),
    ],
)
def test_paths_on_a_csv_line(path: str, expected: Any) -> None:
    assert parse_json_path(path).evaluate(list(FIELDS)) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.id", 7),
        ("$['id']", 7),
        ('$["id"]', 7),
        ("$.features", [1.5, 2, 3]),
        ("$.features[1:]", [2, 3]),
        ("$.features[-1]", 3),
        ("$.meta.b[0]", 4),
        ("$['meta']['a']", 1),
        ("$.meta.*", [1, [4, 5]]),
        ("$.x-y", True),
        ("$['id','features']", {"id": 7, "features": [1.5, 2, 3]}),
        ("$['features', 'id']", {"features": [1.5, 2, 3], "id": 7}),
        # AWS's own form, with a dot before the brackets.
        ("$.meta.['a','b']", {"a": 1, "b": [4, 5]}),
        ("$.*", [7, [1.5, 2, 3], {"a": 1, "b": [4, 5]}, True]),
    ],
)
def test_paths_on_a_json_object(path: str, expected: Any) -> None:
    assert parse_json_path(path).evaluate(RECORD) == expected


def test_parsed_steps() -> None:
    assert parse_json_path("$").is_root
    assert parse_json_path("$.a['b'][2][0,1:]").steps == (
        Member("a"),
        Member("b"),
        Index(2),
        Indexes((0, Slice(1, None))),
    )
    assert parse_json_path("$['a','b']").steps == (Members(("a", "b")),)
    assert parse_json_path("$[*]").steps == (Wildcard(),)
    assert parse_json_path("$[:3]").steps == (Indexes((Slice(None, 3),)),)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "must start with '\\$'"),
        ("features", "must start with '\\$'"),
        ("$$", "expected '.' or '\\['"),
        ("$..id", "recursive descent"),
        ("$.", "expected a member name"),
        ("$.a b", "expected '.' or '\\['"),
        ("$[", "never closed"),
        ("$[]", "empty brackets"),
        ("$[?(@.a > 1)]", "filter and script"),
        ("$[(@.length-1)]", "filter and script"),
        ("$[::2]", "is not an index"),
        ("$[1:2:3]", "is not an index"),
        ("$[a]", "is not an index"),
        ("$[1.5]", "is not an index"),
        ("$['a',1]", "is not a quoted member name"),
        ("$['a]", "is not a quoted member name"),
        ("$['']", "is not plain"),
        ("$['a.b']", "cannot nest further"),
        ("$['a','b.c']", "cannot nest further"),
        ("$['a',['b']]", "is not a quoted member name"),
        ("$[*].a", "must be the last step"),
        ("$[0,1][0]", "must be the last step"),
        ("$[1:].a", "must be the last step"),
        ("$['a','b'].c", "must be the last step"),
        ("$." + "a" * 62, "at most 63"),
    ],
)
def test_unsupported_paths_are_refused_clearly(path: str, problem: str) -> None:
    with pytest.raises(InvalidJsonPath, match=problem) as caught:
        parse_json_path(path)
    # A ValueError for plain callers, INVALID_ARGUMENT for the job API.
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, InvalidArgument)


def test_a_63_character_path_is_allowed() -> None:
    path = "$." + "a" * 61
    assert len(path) == 63
    assert parse_json_path(path).evaluate({"a" * 61: 1}) == 1


@pytest.mark.parametrize(
    ("path", "record", "problem"),
    [
        ("$[7]", FIELDS, "index 7 is out of range for 7 elements"),
        ("$[-8]", FIELDS, "index -8 is out of range"),
        ("$[0,9]", FIELDS, "index 9 is out of range"),
        ("$.id", FIELDS, "a CSV line is an array of its fields"),
        ("$.missing", RECORD, "no member 'missing'"),
        ("$['id','missing']", RECORD, "no member 'missing'"),
        ("$[0]", RECORD, "needs an array, the record has an object"),
        ("$.id[0]", RECORD, "needs an array, the record has a number"),
        ("$.id.*", RECORD, "needs an array, the record has a number"),
        ("$.id.x", RECORD, "cannot take member 'x' of a number"),
    ],
)
def test_records_that_do_not_fit(path: str, record: Any, problem: str) -> None:
    with pytest.raises(RecordProcessingError, match=problem) as caught:
        parse_json_path(path).evaluate(record)
    assert path in str(caught.value)
