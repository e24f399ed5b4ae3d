"""Reading a shard's records and packing them into mini-batches (contract §4.1-4.2).

`iter_records` cuts the bytes of one shard into records by SplitType: `Line` splits on `\\n`
(a `\\r\\n` pair counts as one line end), `None` makes the whole object one record. Gzip
objects are decompressed first. `batch_records` packs records into requests by BatchStrategy
and MaxPayloadInMB. Both stream: memory stays at one read chunk plus one mini-batch, whatever
the file's size, because a large CSV (a million rows) passes through here.

Line numbers count from 1 at the shard's first byte, so the first line of a file is line 1
(a skipped CSV header included); a worker scoring a later shard of a file adds the newlines
before the shard's start (`count_newlines`) to name a line of the file.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from services.batch.errors import RecordTooLarge

SplitType = Literal["None", "Line"]
Compression = Literal["None", "Gzip"]
BatchStrategy = Literal["MultiRecord", "SingleRecord"]

MEBIBYTE = 1024 * 1024

# Bytes read from the input per call: large enough that splitting and slicing run in C over
# many lines at a time, small enough that a worker's memory stays flat.
READ_CHUNK_BYTES = MEBIBYTE


@dataclass(frozen=True, slots=True)
class MiniBatch:
    """Records sent to the model in one request, and where they start in the shard.

    Attributes:
        records: The records, in input order, without their line ends.
        first_line: The line number of `records[0]`, counted from 1 at the shard's start.
    """

    records: list[bytes]
    first_line: int


def payload_limit_bytes(max_payload_in_mb: int) -> int:
    """Turn MaxPayloadInMB into bytes: SageMaker's megabytes are mebibytes (6 → 6,291,456).

    Args:
        max_payload_in_mb: The transform's MaxPayloadInMB, 1 to 100.

    Returns:
        The limit in bytes.

    Raises:
        ValueError: The value is not between 1 and 100. SageMaker's 0 (chunked streaming for
            built-in algorithms) is not offered: every request is one body here.
    """
    if not 1 <= max_payload_in_mb <= 100:
        raise ValueError(f"MaxPayloadInMB must be between 1 and 100, got {max_payload_in_mb}")
    return max_payload_in_mb * MEBIBYTE


def iter_records(
    stream: BinaryIO,
    split_type: SplitType,
    start: int,
    end: int,
    compression: Compression = "None",
    *,
    skip_header: bool = False,
    max_record_bytes: int | None = None,
) -> Iterator[bytes]:
    """Yield the records of the byte range `[start, end)` of an input object.

    * `Line`: the range is split on `\\n`. A `\\r` just before a `\\n` belongs to the line end,
      so CRLF files give the same records as LF files; a `\\r` elsewhere is data. Empty lines
      are records (empty bytes), as SageMaker sends them; only the empty piece after a final
      line end is not a record. The last line needs no line end.
    * `None`: the whole range is one record. An empty object has no record, so its output
      is empty.

    Args:
        stream: The input object, seekable when `start` is not 0.
        split_type: `"Line"` or `"None"`.
        start: The shard's first byte; 0 or just after a `\\n` (see `shards.plan_shards`).
        end: The byte after the shard's last one.
        compression: `"Gzip"` decompresses the object first; its shard must be the whole
            object (`start == 0`), and reading stops at the end of the gzip data.
        skip_header: Drop the object's first line (a CSV header), which only the shard at
            `start == 0` holds. skmaker's opt-in; SageMaker sends headers to the model (§4.5).
        max_record_bytes: Refuse a line longer than this while it is still being read, so a
            file without line ends cannot fill memory. None reads any length.

    Yields:
        Each record's bytes, without its line end.

    Raises:
        ValueError: Bad split type or compression, or a Gzip shard that is not a whole object.
        RecordTooLarge: A record is longer than `max_record_bytes`.
    """
    if split_type not in ("Line", "None"):
        raise ValueError(f"SplitType must be 'None' or 'Line', got {split_type!r}")
    if compression not in ("None", "Gzip"):
        raise ValueError(f"CompressionType must be 'None' or 'Gzip', got {compression!r}")
    chunks: Iterator[bytes]
    if compression == "Gzip":
        if start != 0:
            raise ValueError("a Gzip object is read whole: its shard must start at byte 0")
        chunks = _gzip_chunks(stream)
    else:
        if start:
            stream.seek(start)
        chunks = _range_chunks(stream, end - start)
    skip_header = skip_header and start == 0
    if split_type == "None":
        yield from _whole_record(chunks, skip_header, max_record_bytes)
    else:
        yield from _lines(chunks, skip_header, max_record_bytes)


def batch_records(
    records: Iterable[bytes],
    strategy: BatchStrategy,
    max_payload_bytes: int,
    *,
    first_line: int = 1,
) -> Iterator[MiniBatch]:
    """Pack records into mini-batches, as SageMaker packs them into requests (contract §4.2).

    * `MultiRecord`: as many consecutive records as fit in `max_payload_bytes` once joined
      with `\\n` (the body `dataprocessing.process_batch` sends).
    * `SingleRecord`: one record per mini-batch.

    Args:
        records: The shard's records, in order (from `iter_records`).
        strategy: `"MultiRecord"` or `"SingleRecord"`.
        max_payload_bytes: The request size limit (`payload_limit_bytes(MaxPayloadInMB)`).
        first_line: The line number of the first record: 1, or 2 after a skipped header.

    Yields:
        Mini-batches, in input order; none is empty.

    Raises:
        ValueError: Bad strategy or limit.
        RecordTooLarge: One record alone exceeds the limit; SageMaker then fails the file
            (§4.4). Mini-batches before it have been yielded.
    """
    if strategy not in ("MultiRecord", "SingleRecord"):
        raise ValueError(f"BatchStrategy must be 'MultiRecord' or 'SingleRecord', got {strategy!r}")
    if max_payload_bytes < 1:
        raise ValueError(f"the payload limit must be positive, got {max_payload_bytes}")
    limit = max_payload_bytes
    if strategy == "SingleRecord":
        for line, record in enumerate(records, first_line):
            if len(record) > limit:
                raise RecordTooLarge(line, len(record), limit)
            yield MiniBatch([record], line)
        return
    batch: list[bytes] = []
    batch_line = first_line
    # The joined body is sum(len(r) + 1) - 1 bytes: `size` holds that sum, so a record fits
    # while size + len(record) stays within the limit.
    size = 0
    for record in records:
        length = len(record)
        if size + length > limit:
            if batch:
                yield MiniBatch(batch, batch_line)
                batch_line += len(batch)
                batch = []
                size = 0
            if length > limit:
                raise RecordTooLarge(batch_line, length, limit)
        batch.append(record)
        size += length + 1
    if batch:
        yield MiniBatch(batch, batch_line)


def count_newlines(stream: BinaryIO, start: int, end: int) -> int:
    """Count the `\\n` bytes in `[start, end)` of an uncompressed object, in constant memory.

    A shard starts just after a line end, so the lines before shard `[s, e)` are
    `count_newlines(stream, 0, s)`; add it to a shard's line numbers to name a line of the file.
    Meant for error reports, not for every shard: it reads the whole prefix.

    Args:
        stream: The object, seekable.
        start: The first byte to look at.
        end: The byte after the last one.

    Returns:
        The number of line feeds in the range.
    """
    stream.seek(start)
    return sum(chunk.count(b"\n") for chunk in _range_chunks(stream, end - start))


def _range_chunks(stream: BinaryIO, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(READ_CHUNK_BYTES, remaining))
        if not chunk:
            # The object is shorter than planned (it changed since it was listed): what was
            # there is read, and the shard ends early rather than waiting for bytes.
            return
        remaining -= len(chunk)
        yield chunk


def _gzip_chunks(stream: BinaryIO) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=stream, mode="rb") as unpacked:
        while chunk := unpacked.read(READ_CHUNK_BYTES):
            yield chunk


def _lines(
    chunks: Iterator[bytes], skip_header: bool, max_record_bytes: int | None
) -> Iterator[bytes]:
    pending = b""  # the start of a line whose end has not been read yet
    lines_done = 0  # complete lines yielded or skipped, for error line numbers
    for chunk in chunks:
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            pending = data
            if max_record_bytes is not None and len(pending) > max_record_bytes:
                raise RecordTooLarge(lines_done + 1, len(pending), max_record_bytes)
            continue
        complete = data[:cut]
        pending = data[cut + 1 :]
        # One C-level replace per chunk, not a check per line; only CRLF files pay for it.
        # A chunk always ends on a `\n` here, so no `\r\n` pair is ever split between two.
        if b"\r" in complete:
            complete = complete.replace(b"\r\n", b"\n")
            if complete.endswith(b"\r"):
                complete = complete[:-1]
        lines = complete.split(b"\n")
        if skip_header:
            skip_header = False
            lines_done += 1
            del lines[0]
        # A chunk no longer than the limit cannot hold a line that exceeds it.
        if max_record_bytes is not None and len(complete) > max_record_bytes:
            longest = max(lines, key=len, default=b"")
            if len(longest) > max_record_bytes:
                raise RecordTooLarge(
                    lines_done + 1 + lines.index(longest), len(longest), max_record_bytes
                )
        lines_done += len(lines)
        yield from lines
    if pending:
        if pending.endswith(b"\r"):
            # The last line of a CRLF file whose final `\n` is missing, or got cut off.
            pending = pending[:-1]
        if skip_header:
            return
        if max_record_bytes is not None and len(pending) > max_record_bytes:
            raise RecordTooLarge(lines_done + 1, len(pending), max_record_bytes)
        yield pending


def _whole_record(
    chunks: Iterator[bytes], skip_header: bool, max_record_bytes: int | None
) -> Iterator[bytes]:
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        # Without a header to drop, the record is all that was read: stop as soon as it is
        # too large instead of reading the rest of a huge object into memory.
        if max_record_bytes is not None and not skip_header and size > max_record_bytes:
            raise RecordTooLarge(1, size, max_record_bytes)
    record = b"".join(parts)
    if skip_header:
        newline = record.find(b"\n")
        record = b"" if newline < 0 else record[newline + 1 :]
    if max_record_bytes is not None and len(record) > max_record_bytes:
        raise RecordTooLarge(1, len(record), max_record_bytes)
    if record:
        yield record
