"""A shard's byte range read as it streams from the control, so scoring starts at the first byte.

A worker that cannot read the control's file in place (another machine, or a job user kept out
of the control's folder) used to download its whole range into a file before scoring it: for a
48 MB shard a tenth of a second or more with every core idle. `RangeStream` hands the bytes to
the reader as they arrive instead, so the download overlaps with scoring the mini-batches
already read (and no file is written and read again).

A stream the control breaks off (it restarts, the connection drops) is opened again from the
first byte not yet received, retried as long as the link retries any call; what the reader got
is never read twice. Errors the retries cannot mend keep their kind: a `grpc.RpcError` (the
shard is abandoned, to be run again elsewhere), `ReadInterrupted` when the worker shut down
meanwhile, `OSError` when the object ended before the range did.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

OpenChunks = Callable[[int, int], Iterator[bytes]]
"""`open_chunks(offset, length)`: the object's bytes from `offset`, in chunks."""
Retrying = Callable[[Callable[[], T], str], T]
"""`retrying(call, what)`: `call()` again while the control is unreachable (the link's rule)."""


class ReadInterrupted(Exception):
    """The worker began shutting down while the input was being read; not an `OSError`, so it
    is not taken for unreadable input."""


class RangeStream(io.RawIOBase):
    """Bytes `[offset, offset + length)` of one object, read as they arrive.

    Args:
        open_chunks: Opens the object's stream at an offset (see `OpenChunks`).
        retrying: Runs a call again while the control is unreachable (see `Retrying`).
        offset: The range's first byte.
        length: The range's size; reading ends there, or earlier if the object does.
        what: Names the transfer in retry logs.
    """

    def __init__(
        self,
        open_chunks: OpenChunks,
        retrying: Retrying[Any],
        offset: int,
        length: int,
        what: str,
    ) -> None:
        super().__init__()
        self._open_chunks = open_chunks
        self._retrying = retrying
        self._offset = offset
        self._length = length
        self._what = what
        self._received = 0
        self._chunks: Iterator[bytes] | None = None
        self._pending = memoryview(b"")

    @property
    def received(self) -> int:
        """Bytes received so far."""
        return self._received

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Fills `buffer` from the next chunk; 0 at the end of the range."""
        while not self._pending:
            try:
                chunk = self._retrying(self._next_chunk, self._what)
            except TimeoutError as err:  # the link was interrupted: the worker is stopping
                raise ReadInterrupted(str(err)) from err
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        target = memoryview(buffer).cast("B")
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        if self._chunks is not None:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()  # a generator's stream call is cancelled with it
            self._chunks = None
        super().close()

    def _next_chunk(self) -> bytes | None:
        if self._received >= self._length:
            return None
        if self._chunks is None:
            self._chunks = self._open_chunks(
                self._offset + self._received, self._length - self._received
            )
        try:
            chunk = next(self._chunks, None)
        except grpc.RpcError:
            self._chunks = None  # a retry opens the stream again where it broke off
            raise
        if chunk is None:
            self._chunks = None
            self._length = self._received  # the object ended early: so does the range
            return None
        chunk = chunk[: self._length - self._received]
        self._received += len(chunk)
        return chunk
