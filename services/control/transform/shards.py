"""Cutting a transform's input into shards, naming their outputs, and assembling `.out` files.

SageMaker gives each input file to one instance whole (contract §4.1). skmaker goes further:
a large `Line`-split file is cut into byte ranges whose boundaries fall just after a `\\n`, so
several workers can share it, and every record (line) belongs to exactly one shard. The outputs
of a file's shards, concatenated in shard order, make its `<input>.out`.

Why the concatenation is the file's output as if it had been one shard: a shard holds whole
records and a mini-batch never spans two shards, so a shard edge is just one more mini-batch
edge. With AssembleWith `Line` each record's output ends with its own `\\n`, so the bytes are
the same whatever the edges. With AssembleWith `None` the `.out` is the raw concatenation of
response bodies (SageMaker's rule); where one body ends depends on mini-batch edges already
(MaxPayloadInMB moves them too), and shards only add edges. A CSV answer ends each body with a
line end, so it concatenates cleanly; a JSON answer gives one array per body (`[0, 1][2]`), as
on SageMaker: ask for `text/csv` or AssembleWith `Line` for one output a line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from services.control.artifacts.store import STAGING_FOLDER
from services.sagemaker.transform.records import Compression, SplitType

# How much is read past a nominal cut to find the next line end. Lines are far shorter in the
# files worth splitting; a longer line takes a few more reads, not a failure.
BOUNDARY_WINDOW_BYTES = 64 * 1024

# Shard outputs are staged under this folder of the job's output path until their file is
# assembled, so a reader of the output path never sees a partial `.out`.
SHARD_OUTPUT_FOLDER = STAGING_FOLDER

# Parts are copied through a buffer this size, so assembling a large file takes little memory.
_COPY_CHUNK_BYTES = 1024 * 1024

ReadRange = Callable[[str, int, int], bytes]


@dataclass(frozen=True, slots=True)
class InputFile:
    """One object of the transform's input.

    Attributes:
        key: Its path relative to the input prefix (`a/data.csv`); outputs keep it.
        size: Its size in bytes, as listed.
    """

    key: str
    size: int


@dataclass(frozen=True, slots=True)
class Shard:
    """A byte range of one input file, scored by one worker as a unit.

    Attributes:
        key: The input file's key, relative to the input prefix.
        index: The shard's position among its file's shards, from 0.
        start: Its first byte: 0 or just after a `\\n`.
        end: The byte after its last one: just after a `\\n`, or the end of the file.
    """

    key: str
    index: int
    start: int
    end: int

    @property
    def size(self) -> int:
        """The shard's length in bytes."""
        return self.end - self.start


def plan_shards(
    files: Sequence[InputFile],
    split_type: SplitType,
    target_shard_bytes: int,
    read_range: ReadRange,
    *,
    compression: Compression = "None",
    boundary_window_bytes: int = BOUNDARY_WINDOW_BYTES,
) -> list[Shard]:
    """Cut input files into shards of about `target_shard_bytes`, on record boundaries.

    * SplitType `None`, Gzip objects (a compressed stream cannot be entered mid-way), and files
      no larger than the target: one shard per file, the whole file. An empty file gets one
      empty shard, so it still gets its (empty) `.out`.
    * A larger `Line` file: after each nominal cut at `start + target_shard_bytes`, a small
      window is read, and the shard ends just after the first `\\n` at or after the cut
      (bytes `cut - 1` onward are read, so a `\\n` right before the cut ends the shard there).
      No `\\n` up to the end of the file: the shard runs to the end. Shards are never empty,
      and every line, `\\r\\n`-ended or not, lies in exactly one of them.

    Args:
        files: The input objects, in the order their shards should be listed.
        split_type: The transform's SplitType.
        target_shard_bytes: The size a shard should have; a shard is longer by the rest of
            the line its nominal cut falls in.
        read_range: `read_range(key, start, length)` returns up to `length` bytes of the
            object `key` from `start` (fewer at its end), e.g. an artifact-store range read.
        compression: The transform's CompressionType.
        boundary_window_bytes: How many bytes each boundary search reads at a time.

    Returns:
        The shards, grouped by file in `files` order, each file's in byte order.

    Raises:
        ValueError: A size or the target is not positive, or a file size is negative.
    """
    if target_shard_bytes < 1:
        raise ValueError(f"the target shard size must be positive, got {target_shard_bytes}")
    if boundary_window_bytes < 1:
        raise ValueError(f"the boundary window must be positive, got {boundary_window_bytes}")
    shards: list[Shard] = []
    for file in files:
        if file.size < 0:
            raise ValueError(f"{file.key}: negative size {file.size}")
        if split_type != "Line" or compression == "Gzip" or file.size <= target_shard_bytes:
            shards.append(Shard(file.key, 0, 0, file.size))
            continue
        start = 0
        index = 0
        while start < file.size:
            cut = start + target_shard_bytes
            end = (
                file.size
                if cut >= file.size
                else _next_line_start(file, cut, read_range, boundary_window_bytes)
            )
            shards.append(Shard(file.key, index, start, end))
            start = end
            index += 1
    return shards


def output_key(input_key: str) -> str:
    """Name the output of an input file: `a/data.csv` → `a/data.csv.out` (contract §4.1).

    Args:
        input_key: The input's key relative to the input prefix.

    Returns:
        The output's key relative to the output path.
    """
    return f"{input_key}.out"


def errors_key(input_key: str) -> str:
    """Name the per-record errors file written beside an output (skmaker's opt-in).

    Args:
        input_key: The input's key relative to the input prefix.

    Returns:
        `<input>.out.errors`, relative to the output path; one JSON object a line.
    """
    return f"{input_key}.out.errors"


def shard_output_key(shard: Shard) -> str:
    """Name where one shard's output is staged before its file is assembled.

    The name depends only on the shard, so a shard scored again after its worker was lost
    overwrites its earlier output instead of adding a second one. The index is zero-padded,
    so a listing sorts in shard order.

    Args:
        shard: The shard.

    Returns:
        `.skmaker-shards/<input>.out.<index:06d>`, relative to the output path.
    """
    return f"{SHARD_OUTPUT_FOLDER}/{output_key(shard.key)}.{shard.index:06d}"


def assemble(parts: Iterable[BinaryIO], out: BinaryIO) -> int:
    """Write a file's `.out` from its shards' outputs: their bytes, concatenated in shard order.

    Nothing is added between parts: each already ends as a single-shard output would at the
    same place (see the module docstring for AssembleWith `None` and `Line`).

    Args:
        parts: The shards' outputs, opened for reading, in shard index order.
        out: Where the `.out` is written.

    Returns:
        The number of bytes written.
    """
    written = 0
    for part in parts:
        while chunk := part.read(_COPY_CHUNK_BYTES):
            out.write(chunk)
            written += len(chunk)
    return written


def _next_line_start(file: InputFile, cut: int, read_range: ReadRange, window: int) -> int:
    """Return the first position at or after `cut` that follows a `\\n`, or the file's size."""
    position = cut - 1
    while position < file.size:
        data = read_range(file.key, position, min(window, file.size - position))
        if not data:
            break
        newline = data.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(data)
    return file.size
