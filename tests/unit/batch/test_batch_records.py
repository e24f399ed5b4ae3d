"""Reading a shard's records (Line, None, Gzip, CRLF, headers) and packing mini-batches."""

from __future__ import annotations

import gzip
import io
import pickle
import random

import pytest

from services.sagemaker.transform import records as records_module
from services.sagemaker.transform.errors import RecordTooLarge
from services.sagemaker.transform.records import (
    MEBIBYTE,
    MiniBatch,
    batch_records,
    count_newlines,
    iter_batches,
    iter_records,
    payload_limit_bytes,
)


def _lines(data: bytes, **kwargs: object) -> list[bytes]:
    return list(iter_records(io.BytesIO(data), "Line", 0, len(data), **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"1,2\n3,4\n", [b"1,2", b"3,4"]),
        (b"1,2\n3,4", [b"1,2", b"3,4"]),
        (b"1,2\r\n3,4\r\n", [b"1,2", b"3,4"]),
        (b"1,2\r\n3,4", [b"1,2", b"3,4"]),
        (b"1,2\r\n3,4\r", [b"1,2", b"3,4"]),
        (b"1,2\r\n\r", [b"1,2"]),
        # Empty lines are records; only the piece after the final newline is not.
        (b"1\n\n2\n\n", [b"1", b"", b"2", b""]),
        (b"\n", [b""]),
        (b"", []),
        # A lone \r inside a line is data.
        (b"a\rb\n", [b"a\rb"]),
    ],
)
def test_line_records(data: bytes, expected: list[bytes]) -> None:
    assert _lines(data) == expected


def test_lines_across_read_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "READ_CHUNK_BYTES", 3)
    data = b"alpha\r\nbe\r\n\r\ngamma-delta\r\nz"
    assert _lines(data) == [b"alpha", b"be", b"", b"gamma-delta", b"z"]


def test_a_range_reads_only_its_bytes() -> None:
    data = b"h\n1\n2\n3\n"
    assert list(iter_records(io.BytesIO(data), "Line", 2, 6)) == [b"1", b"2"]


def test_split_none_is_one_record() -> None:
    data = b"1,2\n3,4\n"
    assert list(iter_records(io.BytesIO(data), "None", 0, len(data))) == [data]
    assert list(iter_records(io.BytesIO(b""), "None", 0, 0)) == []


def test_gzip_is_decompressed_before_splitting() -> None:
    raw = b"".join(b"%d,%d\n" % (i, i * i) for i in range(5000))
    packed = gzip.compress(raw)
    got = list(iter_records(io.BytesIO(packed), "Line", 0, len(packed), "Gzip"))
    assert got == raw.splitlines()
    whole = list(iter_records(io.BytesIO(packed), "None", 0, len(packed), "Gzip"))
    assert whole == [raw]


def test_gzip_shards_must_be_whole_objects() -> None:
    with pytest.raises(ValueError, match="whole"):
        list(iter_records(io.BytesIO(gzip.compress(b"1\n")), "Line", 5, 10, "Gzip"))


def test_bad_split_and_compression_are_refused() -> None:
    with pytest.raises(ValueError, match="SplitType"):
        list(iter_records(io.BytesIO(b""), "RecordIO", 0, 0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CompressionType"):
        list(iter_records(io.BytesIO(b""), "Line", 0, 0, "Zip"))  # type: ignore[arg-type]


def test_skip_header_drops_the_first_line_of_the_file_only() -> None:
    data = b"a,b\r\n1,2\r\n3,4\r\n"
    assert _lines(data, skip_header=True) == [b"1,2", b"3,4"]
    # A later shard holds no header.
    assert list(iter_records(io.BytesIO(data), "Line", 5, len(data), skip_header=True)) == [
        b"1,2",
        b"3,4",
    ]
    assert _lines(b"a,b", skip_header=True) == []
    assert list(iter_records(io.BytesIO(data), "None", 0, len(data), skip_header=True)) == [
        b"1,2\r\n3,4\r\n"
    ]


def test_gzip_skip_header() -> None:
    packed = gzip.compress(b"x,y\n1,2\n")
    got = list(iter_records(io.BytesIO(packed), "Line", 0, len(packed), "Gzip", skip_header=True))
    assert got == [b"1,2"]


def test_max_record_bytes_stops_a_line_without_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "READ_CHUNK_BYTES", 4)
    data = b"1\n22\n" + b"x" * 50
    reader = iter_records(io.BytesIO(data), "Line", 0, len(data), max_record_bytes=10)
    assert next(reader) == b"1"
    assert next(reader) == b"22"
    with pytest.raises(RecordTooLarge) as caught:
        next(reader)
    assert caught.value.line == 3
    assert "line 3" in str(caught.value)


def test_max_record_bytes_inside_a_chunk() -> None:
    data = b"1\n" + b"y" * 20 + b"\n3\n"
    with pytest.raises(RecordTooLarge, match="line 2"):
        _lines(data, max_record_bytes=10)
    with pytest.raises(RecordTooLarge, match="line 3"):
        _lines(b"h\n" + data, max_record_bytes=10, skip_header=True)
    assert _lines(data, max_record_bytes=20) == [b"1", b"y" * 20, b"3"]


def test_max_record_bytes_for_split_none() -> None:
    with pytest.raises(RecordTooLarge, match="line 1"):
        list(iter_records(io.BytesIO(b"x" * 11), "None", 0, 11, max_record_bytes=10))
    # The header does not count towards the record's size.
    data = b"h\n" + b"x" * 10
    got = iter_records(io.BytesIO(data), "None", 0, 12, skip_header=True, max_record_bytes=10)
    assert list(got) == [b"x" * 10]


def test_multirecord_packs_up_to_the_limit() -> None:
    records = [b"aaaa", b"bb", b"c", b"dddd", b"", b"e"]
    batches = list(batch_records(records, "MultiRecord", 8))
    assert batches == [
        # b"aaaa\nbb\nc" would be 9 bytes.
        MiniBatch.of([b"aaaa", b"bb"], 1),
        MiniBatch.of([b"c", b"dddd", b""], 3),
        MiniBatch.of([b"e"], 6),
    ]
    for batch in batches:
        assert len(batch.body) <= 8
    assert [r for b in batches for r in b.records] == records


def test_multirecord_fills_exactly_to_the_limit() -> None:
    batches = list(batch_records([b"aaa", b"bbbb", b"c"], "MultiRecord", 8, first_line=2))
    assert batches == [MiniBatch.of([b"aaa", b"bbbb"], 2), MiniBatch.of([b"c"], 4)]


def test_multirecord_keeps_big_batches_under_the_default_limit() -> None:
    row = b"5.1,3.5,1.4,0.2"
    limit = payload_limit_bytes(1)
    batches = list(batch_records([row] * 200_000, "MultiRecord", limit))
    assert sum(b.count for b in batches) == 200_000
    assert all(len(b.body) <= limit for b in batches)
    # Every batch but the last is full: adding its next record would cross the limit.
    assert all(len(b.body) + len(row) + 1 > limit for b in batches[:-1])


def test_single_record() -> None:
    batches = list(batch_records([b"a", b"bb", b""], "SingleRecord", 5, first_line=7))
    assert batches == [MiniBatch.of([b"a"], 7), MiniBatch.of([b"bb"], 8), MiniBatch.of([b""], 9)]


@pytest.mark.parametrize("strategy", ["MultiRecord", "SingleRecord"])
def test_an_oversize_record_names_its_line(strategy: str) -> None:
    records = [b"1", b"22", b"x" * 9, b"4"]
    got: list[MiniBatch] = []
    with pytest.raises(RecordTooLarge) as caught:
        got.extend(batch_records(records, strategy, 8, first_line=2))  # type: ignore[arg-type]
    assert (caught.value.line, caught.value.size, caught.value.limit) == (4, 9, 8)
    assert "line 4" in str(caught.value) and "MaxPayloadInMB" in str(caught.value)
    # Batches before the bad record were handed out.
    assert [r for b in got for r in b.records] == [b"1", b"22"]


def test_record_too_large_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(RecordTooLarge(3, 20, 10)))
    assert (error.line, error.size, error.limit, str(error)) == (
        3,
        20,
        10,
        str(RecordTooLarge(3, 20, 10)),
    )


def test_bad_batching_settings() -> None:
    with pytest.raises(ValueError, match="BatchStrategy"):
        list(batch_records([b"1"], "Multi", 10))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        list(batch_records([b"1"], "MultiRecord", 0))


def test_payload_limit_bytes() -> None:
    assert payload_limit_bytes(6) == 6 * MEBIBYTE == 6_291_456
    for bad in (0, 101):
        with pytest.raises(ValueError, match="between 1 and 100"):
            payload_limit_bytes(bad)


def test_count_newlines() -> None:
    data = b"a\nb\r\nc\nd"
    assert count_newlines(io.BytesIO(data), 0, len(data)) == 3
    assert count_newlines(io.BytesIO(data), 2, 5) == 1


def test_mini_batch_records() -> None:
    assert MiniBatch.of([b"a", b"", b"c"], 4).records == [b"a", b"", b"c"]
    assert MiniBatch.of([b"whole\nobject"]).records == [b"whole\nobject"]
    assert MiniBatch.of([]).records == []


def _random_lines(rng: random.Random) -> bytes:
    end = rng.choice([b"\n", b"\r\n"])
    lines = [b"x" * rng.choice([0, 1, 2, 5, 9, 30]) for _ in range(rng.randint(0, 40))]
    data = end.join(lines)
    return data + end if rng.random() < 0.5 else data


@pytest.mark.parametrize("seed", range(40))
def test_iter_batches_equals_batch_records_of_iter_records(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(records_module, "READ_CHUNK_BYTES", rng.choice([1, 2, 7, 64, 4096]))
    data = _random_lines(rng)
    for limit in (1, 2, 5, 9, 10, 11, 31, 64, 1000):
        for skip_header in (False, True):
            for strategy in ("MultiRecord", "SingleRecord"):
                expected: list[MiniBatch] = []
                expected_error = None
                try:
                    records = iter_records(
                        io.BytesIO(data), "Line", 0, len(data), skip_header=skip_header
                    )
                    expected.extend(
                        batch_records(records, strategy, limit, first_line=2 if skip_header else 1)
                    )
                except RecordTooLarge as err:
                    expected_error = err.line
                got: list[MiniBatch] = []
                got_error = None
                try:
                    got.extend(
                        iter_batches(
                            io.BytesIO(data),
                            "Line",
                            0,
                            len(data),
                            strategy=strategy,
                            max_payload_bytes=limit,
                            skip_header=skip_header,
                        )
                    )
                except RecordTooLarge as err:
                    # Reading may stop before the end of an overlong line: only its start
                    # was measured.
                    assert err.size > limit
                    got_error = err.line
                context = (data, limit, skip_header, strategy)
                assert got == expected, context
                assert got_error == expected_error, context


def test_iter_batches_for_split_none_and_gzip() -> None:
    raw = b"h1,h2\n1,2\n3,4\n"
    packed = gzip.compress(raw)
    batches = list(
        iter_batches(
            io.BytesIO(packed),
            "None",
            0,
            len(packed),
            "Gzip",
            strategy="MultiRecord",
            max_payload_bytes=100,
            skip_header=True,
        )
    )
    assert batches == [MiniBatch(b"1,2\n3,4\n", 1, 2)]
    with pytest.raises(RecordTooLarge, match="line 1"):
        list(
            iter_batches(
                io.BytesIO(raw), "None", 0, len(raw), strategy="MultiRecord", max_payload_bytes=5
            )
        )


def test_iter_batches_refuses_an_endless_line_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "READ_CHUNK_BYTES", 4)
    read: list[int] = []

    class Counting(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            read.append(len(chunk))
            return chunk

    data = b"1\n" + b"x" * 1000
    with pytest.raises(RecordTooLarge, match="line 2"):
        list(
            iter_batches(
                Counting(data), "Line", 0, len(data), strategy="MultiRecord", max_payload_bytes=10
            )
        )
    assert sum(read) < 20


@pytest.mark.parametrize(
    "data",
    [
        # A `\r\n` after several `\n`-ended mini-batches: the rest goes the general way.
        b"".join(b"%d,1\n" % i for i in range(50)) + b"7,7\r\n8,8\n9,9",
        # An overlong line after several mini-batches is named by its line number.
        b"".join(b"%d,1\n" % i for i in range(50)) + b"x" * 40 + b"\n1,2\n",
        # A shard that ends with a `\n`, and one that does not.
        b"".join(b"%d,1\n" % i for i in range(50)),
        b"".join(b"%d,1\n" % i for i in range(50)) + b"last",
    ],
)
def test_mini_batches_cut_in_place_match_the_general_path(data: bytes) -> None:
    def general() -> list[MiniBatch]:
        return list(
            batch_records(iter_records(io.BytesIO(data), "Line", 0, len(data)), "MultiRecord", 20)
        )

    def fast() -> list[MiniBatch]:
        return list(
            iter_batches(
                io.BytesIO(data), "Line", 0, len(data), strategy="MultiRecord", max_payload_bytes=20
            )
        )

    try:
        expected = general()
    except RecordTooLarge as err:
        with pytest.raises(RecordTooLarge, match=f"line {err.line}:"):
            fast()
        return
    assert fast() == expected
