"""Reading a shard's records and packing them into mini-batches (contract §4.1-4.2).

Records come from one shard (a byte range of an input object) by SplitType: `Line` splits on
`\\n` (a `\\r\\n` pair counts as one line end), `None` makes the whole object one record. Gzip
objects are decompressed first. Mini-batches pack consecutive records by BatchStrategy and
MaxPayloadInMB: `MultiRecord` as many as fit once joined with `\\n`, `SingleRecord` one each.

`iter_batches` is what a worker calls. For `Line` + `MultiRecord`, the common case for a large
CSV, it cuts request bodies out of the read buffer directly, on line ends, without one Python
object per record: a million-row file is a few hundred slices and newline counts in C. Other
combinations go through `iter_records` and `batch_records`, which it produces the same
mini-batches as. Everything streams: memory stays at one read chunk plus one mini-batch.

Line numbers count from 1 at the shard's first byte, so the first line of a file is line 1
(a skipped CSV header included); a worker scoring a later shard of a file adds the newlines
before the shard's start (`count_newlines`) to name a line of the file.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

from services.sagemaker.transform.errors import RecordTooLarge

SplitType = Literal["None", "Line"]
Compression = Literal["None", "Gzip"]
BatchStrategy = Literal["MultiRecord", "SingleRecord"]

MEBIBYTE = 1024 * 1024

# Bytes read from the input per call: large enough that splitting and slicing run in C over
# many lines at a time, small enough that a worker's memory stays flat.
READ_CHUNK_BYTES = MEBIBYTE


class _UnfinishedLineTooLong(Exception):
    """Raised by `_line_blocks`, which does not count lines, for its caller to name the line."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


@dataclass(frozen=True, slots=True)
class MiniBatch:
    """Records sent to the model in one request, and where they start in the shard.

    Attributes:
        body: The request body: the records joined with `\\n`, no line end after the last
            (for SplitType `None`, the one record as it is).
        count: How many records the body holds.
        first_line: The line number of the first record, counted from 1 at the shard's start.
    """

    body: bytes
    count: int
    first_line: int

    @classmethod
    def of(cls, records: Sequence[bytes], first_line: int = 1) -> MiniBatch:
        """Build a mini-batch from records without line ends (one record may hold any bytes)."""
        return cls(b"\n".join(records), len(records), first_line)

    @property
    def records(self) -> list[bytes]:
        """The records, split out of the body; computed on each access."""
        if self.count == 1:
            return [self.body]
        return self.body.split(b"\n") if self.count else []


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


def iter_batches(
    stream: BinaryIO,
    split_type: SplitType,
    start: int,
    end: int,
    compression: Compression = "None",
    *,
    strategy: BatchStrategy,
    max_payload_bytes: int,
    skip_header: bool = False,
) -> Iterator[MiniBatch]:
    """Yield the mini-batches of a shard: `batch_records(iter_records(...))`, faster.

    Args:
        stream: The input object, seekable when `start` is not 0.
        split_type: `"Line"` or `"None"`.
        start: The shard's first byte (see `iter_records`).
        end: The byte after the shard's last one.
        compression: `"Gzip"` decompresses a whole-object shard first.
        strategy: `"MultiRecord"` or `"SingleRecord"`.
        max_payload_bytes: The request size limit (`payload_limit_bytes(MaxPayloadInMB)`).
        skip_header: Drop the object's first line (see `iter_records`).

    Yields:
        Mini-batches in input order; none is empty.

    Raises:
        ValueError: Bad split type, compression, strategy or limit.
        RecordTooLarge: One record alone exceeds the limit (the file fails, contract §4.4);
            it is raised as soon as the record is read, before the rest is held in memory.
    """
    _check_batching(strategy, max_payload_bytes)
    skip_header = skip_header and start == 0
    if split_type == "Line" and strategy == "MultiRecord":
        if compression == "None" and not skip_header:
            if start:
                stream.seek(start)
            yield from _payload_sized_batches(stream, end - start, max_payload_bytes)
            return
        chunks = _open(stream, split_type, start, end, compression)
        blocks = _line_blocks(chunks, skip_header, max_payload_bytes)
        yield from _pack_blocks(blocks, max_payload_bytes, 2 if skip_header else 1)
        return
    records = iter_records(
        stream,
        split_type,
        start,
        end,
        compression,
        skip_header=skip_header,
        max_record_bytes=max_payload_bytes,
    )
    yield from batch_records(
        records, strategy, max_payload_bytes, first_line=2 if skip_header else 1
    )


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
        max_record_bytes: Refuse a record longer than this as soon as it is read, so a file
            without line ends cannot fill memory. None reads any length.

    Yields:
        Each record's bytes, without its line end.

    Raises:
        ValueError: Bad split type or compression, or a Gzip shard that is not a whole object.
        RecordTooLarge: A record is longer than `max_record_bytes`.
    """
    chunks = _open(stream, split_type, start, end, compression)
    skip_header = skip_header and start == 0
    if split_type == "None":
        yield from _whole_record(chunks, skip_header, max_record_bytes)
        return
    line = 2 if skip_header else 1
    blocks = _line_blocks(chunks, skip_header, max_record_bytes)
    while True:
        try:
            block = next(blocks, None)
        except _UnfinishedLineTooLong as err:
            raise RecordTooLarge(line, err.size, max_record_bytes or 0) from None
        if block is None:
            return
        lines = block.split(b"\n")
        lines.pop()  # the empty piece after the block's last line end
        # A block no longer than the limit cannot hold a line that exceeds it.
        if max_record_bytes is not None and len(block) > max_record_bytes + 1:
            if len(max(lines, key=len)) > max_record_bytes:
                # The error names the first record over the limit, as batch_records would.
                index, record = next(
                    (i, r) for i, r in enumerate(lines) if len(r) > max_record_bytes
                )
                yield from lines[:index]
                raise RecordTooLarge(line + index, len(record), max_record_bytes)
        line += len(lines)
        yield from lines


def batch_records(
    records: Iterable[bytes],
    strategy: BatchStrategy,
    max_payload_bytes: int,
    *,
    first_line: int = 1,
) -> Iterator[MiniBatch]:
    """Pack records into mini-batches, as SageMaker packs them into requests (contract §4.2).

    * `MultiRecord`: as many consecutive records as fit in `max_payload_bytes` once joined
      with `\\n`.
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
    _check_batching(strategy, max_payload_bytes)
    limit = max_payload_bytes
    if strategy == "SingleRecord":
        for line, record in enumerate(records, first_line):
            if len(record) > limit:
                raise RecordTooLarge(line, len(record), limit)
            yield MiniBatch(record, 1, line)
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
                yield MiniBatch.of(batch, batch_line)
                batch_line += len(batch)
                batch = []
                size = 0
            if length > limit:
                raise RecordTooLarge(batch_line, length, limit)
        batch.append(record)
        size += length + 1
    if batch:
        yield MiniBatch.of(batch, batch_line)


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


def _check_batching(strategy: str, max_payload_bytes: int) -> None:
    if strategy not in ("MultiRecord", "SingleRecord"):
        raise ValueError(f"BatchStrategy must be 'MultiRecord' or 'SingleRecord', got {strategy!r}")
    if max_payload_bytes < 1:
        raise ValueError(f"the payload limit must be positive, got {max_payload_bytes}")


def _open(
    stream: BinaryIO, split_type: str, start: int, end: int, compression: str
) -> Iterator[bytes]:
    if split_type not in ("Line", "None"):
        raise ValueError(f"SplitType must be 'None' or 'Line', got {split_type!r}")
    if compression not in ("None", "Gzip"):
        raise ValueError(f"CompressionType must be 'None' or 'Gzip', got {compression!r}")
    if compression == "Gzip":
        if start != 0:
            raise ValueError("a Gzip object is read whole: its shard must start at byte 0")
        return _gzip_chunks(stream)
    if start:
        stream.seek(start)
    return _range_chunks(stream, end - start)


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


def _line_blocks(
    chunks: Iterator[bytes], skip_header: bool, max_line_bytes: int | None
) -> Iterator[bytes]:
    """Regroup chunks into blocks of whole lines, each line ending with exactly `\\n`.

    `\\r\\n` becomes `\\n`, the header line is dropped when asked, and the last line gets a
    `\\n` if it had none. A line still unfinished beyond `max_line_bytes` raises
    `_UnfinishedLineTooLong` at once, for the caller, which counts lines, to name it. Complete
    lines are the caller's to measure.
    """
    tail: list[bytes] = []  # the start of a line whose end has not been read yet
    tail_size = 0
    for chunk in chunks:
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            tail.append(chunk)
            tail_size += len(chunk)
            # One more byte for a `\r` that will turn out to be part of the line end. A header
            # to skip is no record, so the limit does not apply to it.
            if max_line_bytes is not None and tail_size > max_line_bytes + 1 and not skip_header:
                raise _UnfinishedLineTooLong(tail_size)
            continue
        head = chunk[:cut] if cut < len(chunk) else chunk
        block = b"".join([*tail, head]) if tail else head
        rest = chunk[cut:]
        tail = [rest] if rest else []
        tail_size = len(rest)
        # One C-level replace per block, not a check per line; only CRLF files pay for it.
        # A block ends on a `\n`, so no `\r\n` pair is split between two blocks.
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        if skip_header:
            skip_header = False
            block = block[block.index(b"\n") + 1 :]
            if not block:
                continue
        yield block
    if tail and not skip_header:
        last = b"".join(tail)
        if last.endswith(b"\r"):
            # The last line of a CRLF file whose final `\n` is missing; a lone `\r` left
            # after the last line end is no record.
            last = last[:-1]
            if not last:
                return
        yield last + b"\n"


def _payload_sized_batches(stream: BinaryIO, length: int, limit: int) -> Iterator[MiniBatch]:
    """`_pack_blocks(_line_blocks(...))` for `\n`-ended lines, with two passes over each byte.

    Reads up to `limit + 1` bytes into one buffer and cuts the body at the last `\n` that fits,
    so a mini-batch costs one read, one copy, one `\r` check and one line count, all in C.
    The greedy packing gives the same bodies as `_pack_blocks`: a line fits while its `\n`
    lies within the first `limit + 1` bytes. Anything unusual from here on (a `\r`, a line
    longer than the limit) hands the rest, from the current mini-batch edge, to the general
    path, which packs it the same way and words its errors.
    """
    buffer = bytearray(limit + 1)
    view = memoryview(buffer)
    held = 0  # bytes of buffer holding the start of the lines not yet sent
    remaining = length
    line = 1
    while True:
        if remaining > 0 and held <= limit:
            got = stream.readinto(view[held : held + min(limit + 1 - held, remaining)])  # type: ignore[attr-defined]
            # A short read means the object is shorter than planned: the shard ends there.
            remaining = remaining - got if got else 0
            held += got
        if not held:
            return
        if buffer.find(b"\r", 0, held) >= 0:
            break
        if remaining == 0 and held <= limit + (buffer[held - 1] == ord("\n")):
            # The last lines fit, their final `\n` (or its absence) aside.
            body = bytes(view[: held - 1 if buffer[held - 1] == ord("\n") else held])
            yield MiniBatch(body, body.count(b"\n") + 1, line)
            return
        cut = buffer.rfind(b"\n", 0, min(held, limit + 1))
        if cut < 0:
            break  # one line longer than the limit: the general path names it
        body = bytes(view[:cut])
        count = body.count(b"\n") + 1
        yield MiniBatch(body, count, line)
        line += count
        held -= cut + 1
        buffer[:held] = view[cut + 1 : cut + 1 + held]
    rest = bytes(view[:held])
    view.release()
    chunks = itertools.chain([rest], _range_chunks(stream, remaining))
    yield from _pack_blocks(_line_blocks(chunks, False, limit), limit, line)


def _pack_blocks(blocks: Iterator[bytes], limit: int, first_line: int) -> Iterator[MiniBatch]:
    """Cut line blocks into bodies of at most `limit` bytes, greedily, as `batch_records`."""
    pieces: list[bytes] = []  # whole lines, each ending with `\n`
    # Their total size; the body drops the last `\n`, so lines fit while size <= limit + 1.
    size = 0
    line = first_line
    while True:
        try:
            block = next(blocks, None)
        except _UnfinishedLineTooLong as err:
            # Hand out the lines before the overlong one first, as batch_records does.
            if pieces:
                batch = _body(pieces, line)
                yield batch
                line += batch.count
            raise RecordTooLarge(line, err.size, limit) from None
        if block is None:
            break
        while True:
            room = limit + 1 - size
            if len(block) <= room:
                pieces.append(block)
                size += len(block)
                break
            cut = block.rfind(b"\n", 0, room) + 1
            if cut:
                pieces.append(block[:cut])
                block = block[cut:]
            elif not pieces:
                raise RecordTooLarge(line, block.index(b"\n"), limit)
            batch = _body(pieces, line)
            yield batch
            line += batch.count
            pieces = []
            size = 0
    if pieces:
        yield _body(pieces, line)


def _body(pieces: list[bytes], first_line: int) -> MiniBatch:
    pieces[-1] = pieces[-1][:-1]
    body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    return MiniBatch(body, body.count(b"\n") + 1, first_line)


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
        raise RecordTooLarge(2 if skip_header else 1, len(record), max_record_bytes)
    if record:
        yield record
