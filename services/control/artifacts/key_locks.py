"""Locks by artifact key, so a check and the write it guards happen as one step.

A training job is bound to the bundle at its source key while uploads to that key are refused
from then on: the create (check the bundle's digest, record the job) and an upload's end (check
the key is not bound, rename the object into place) each hold the key's lock, so an upload
cannot land between a create's check and its record. Keys share a fixed set of locks by hash.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager


class KeyLocks:
    """A fixed set of locks, one per key's hash."""

    def __init__(self, stripes: int = 64) -> None:
        """`stripes` locks; keys with the same hash modulo it share one."""
        self._locks = tuple(threading.Lock() for _ in range(stripes))

    @contextmanager
    def holding(self, key: str) -> Iterator[None]:
        """Holds `key`'s lock for the block."""
        with self._locks[zlib.crc32(key.encode()) % len(self._locks)]:
            yield
