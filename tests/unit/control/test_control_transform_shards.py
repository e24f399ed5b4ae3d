"""Shard planning: every line of a file in exactly one shard, outputs assembled in order."""

from __future__ import annotations

import io
import itertools
import random

import pytest

from services.control.transform.shards import (
    InputFile,
    Shard,
    assemble,
    errors_key,
    output_key,
    plan_shards,
    shard_output_key,
)
from services.sagemaker.transform.records import iter_records


def _reader(files: dict[str, bytes], calls: list[tuple[str, int, int]] | None = None):
    def read_range(key: str, start: int, length: int) -> bytes:
        if calls is not None:
            calls.append((key, start, length))
        return files[key][start : start + length]

    return read_range


def _random_file(rng: random.Random, *, crlf: bool, trailing_newline: bool) -> bytes:
    end = b"\r\n" if crlf else b"\n"
    lines = [
        b",".join(str(rng.randint(0, 10 ** rng.randint(0, 6))).encode() for _ in range(3))
        # Some empty lines: they are records too.
        if rng.random() > 0.05
        else b""
        for _ in range(rng.randint(1, 60))
    ]
    data = end.join(lines)
    return data + end if trailing_newline else data


def _shard_records(data: bytes, shards: list[Shard]) -> list[bytes]:
    records: list[bytes] = []
    for shard in shards:
        records.extend(iter_records(io.BytesIO(data), "Line", shard.start, shard.end))
    return records


def _check_partition(data: bytes, shards: list[Shard]) -> None:
    assert [s.index for s in shards] == list(range(len(shards)))
    assert shards[0].start == 0
    assert shards[-1].end == len(data)
    for before, after in itertools.pairwise(shards):
        assert before.end == after.start
        assert data[before.end - 1 : before.end] == b"\n"
    assert all(s.size > 0 for s in shards) or len(data) == 0


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("trailing_newline", [False, True])
def test_every_line_lands_in_exactly_one_shard(
    seed: int, crlf: bool, trailing_newline: bool
) -> None:
    rng = random.Random(seed)
    data = _random_file(rng, crlf=crlf, trailing_newline=trailing_newline)
    whole = list(iter_records(io.BytesIO(data), "Line", 0, len(data)))
    line_ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    # 1 byte, tiny and odd sizes, sizes landing exactly on, just before and just after a line
    # boundary, and sizes around the whole file.
    targets = {1, 2, 3, 7, 64, len(data) - 1, len(data), len(data) + 1}
    for boundary in line_ends[:5]:
        targets |= {boundary - 1, boundary, boundary + 1}
    for target in sorted(t for t in targets if t >= 1):
        for window in (1, 3, 4096):
            shards = plan_shards(
                [InputFile("f.csv", len(data))],
                "Line",
                target,
                _reader({"f.csv": data}),
                boundary_window_bytes=window,
            )
            _check_partition(data, shards)
            assert _shard_records(data, shards) == whole, (target, window)


def test_records_match_the_text_lines() -> None:
    data = b"a,1\r\nb,2\r\n\r\nc,3"
    shards = plan_shards([InputFile("f", len(data))], "Line", 1, _reader({"f": data}))
    assert _shard_records(data, shards) == [b"a,1", b"b,2", b"", b"c,3"]
    assert [(s.start, s.end) for s in shards] == [(0, 5), (5, 10), (10, 12), (12, 15)]


def test_a_cut_right_after_a_newline_ends_the_shard_there() -> None:
    data = b"aaa\nbbb\nccc\n"
    calls: list[tuple[str, int, int]] = []
    shards = plan_shards([InputFile("f", len(data))], "Line", 4, _reader({"f": data}, calls))
    assert [(s.start, s.end) for s in shards] == [(0, 4), (4, 8), (8, 12)]
    # One small read per boundary, starting at the byte before the nominal cut.
    assert calls == [("f", 3, 9), ("f", 7, 5)]


def test_a_long_line_extends_its_shard_to_the_next_newline() -> None:
    data = b"x" * 100 + b"\n" + b"y\n"
    shards = plan_shards(
        [InputFile("f", len(data))], "Line", 10, _reader({"f": data}), boundary_window_bytes=8
    )
    assert [(s.start, s.end) for s in shards] == [(0, 101), (101, 103)]


def test_no_newline_after_the_cut_runs_to_the_end() -> None:
    data = b"abcdef\n" + b"z" * 50
    shards = plan_shards([InputFile("f", len(data))], "Line", 3, _reader({"f": data}))
    assert [(s.start, s.end) for s in shards] == [(0, 7), (7, 57)]


def test_whole_files_for_small_files_split_none_and_gzip() -> None:
    files = {"small": b"1\n2\n", "big": b"1\n2\n3\n4\n5\n6\n"}
    listed = [InputFile(k, len(v)) for k, v in files.items()]
    read = _reader(files)

    def whole(shards: list[Shard]) -> list[tuple[str, int, int, int]]:
        return [(s.key, s.index, s.start, s.end) for s in shards]

    assert whole(plan_shards(listed, "Line", 4, read))[0] == ("small", 0, 0, 4)
    assert len(plan_shards(listed, "Line", 4, read)) == 4
    assert whole(plan_shards(listed, "None", 4, read)) == [
        ("small", 0, 0, 4),
        ("big", 0, 0, 12),
    ]
    assert whole(plan_shards(listed, "Line", 4, read, compression="Gzip")) == [
        ("small", 0, 0, 4),
        ("big", 0, 0, 12),
    ]


def test_an_empty_file_gets_one_empty_shard() -> None:
    shards = plan_shards([InputFile("empty.csv", 0)], "Line", 1, _reader({"empty.csv": b""}))
    assert shards == [Shard("empty.csv", 0, 0, 0)]
    assert list(iter_records(io.BytesIO(b""), "Line", 0, 0)) == []


def test_a_file_shorter_than_listed_ends_its_last_shard_at_the_listed_size() -> None:
    data = b"a\nb"
    shards = plan_shards([InputFile("f", 10)], "Line", 1, _reader({"f": data}))
    assert shards[-1].end == 10
    assert _shard_records(data, shards) == [b"a", b"b"]


@pytest.mark.parametrize("bad", [0, -1])
def test_target_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_shards([InputFile("f", 3)], "Line", bad, _reader({"f": b"abc"}))


def test_output_names() -> None:
    assert output_key("a/data.csv") == "a/data.csv.out"
    assert errors_key("a/data.csv") == "a/data.csv.out.errors"
    assert shard_output_key(Shard("a/data.csv", 3, 10, 20)) == (
        ".skmaker-shards/a/data.csv.out.000003"
    )
    # Deterministic: a re-run shard overwrites its earlier output.
    assert shard_output_key(Shard("a/data.csv", 3, 10, 20)) == shard_output_key(
        Shard("a/data.csv", 3, 10, 20)
    )


def test_assemble_concatenates_parts_in_order() -> None:
    out = io.BytesIO()
    parts = [io.BytesIO(b"0\n1\n"), io.BytesIO(b""), io.BytesIO(b"2\n")]
    assert assemble(parts, out) == 6
    assert out.getvalue() == b"0\n1\n2\n"
