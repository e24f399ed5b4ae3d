"""Helpers the control's domain tests import (conftest.py holds only fixtures: a module named
`conftest` is not importable reliably when several test folders have one)."""

from __future__ import annotations

import hashlib

from services.control.artifacts.store import LocalArtifactStore


class FakeClock:
    """Wall-clock stand-in the tests move by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def put_bytes(artifacts: LocalArtifactStore, key: str, data: bytes) -> None:
    """Stores `data` under `key` through the store's public upload path."""
    artifacts.put(key, len(data), hashlib.sha256(data).hexdigest(), [data])
