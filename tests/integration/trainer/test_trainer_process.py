"""The trainer as a real process next to a real control."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import run_service

pytestmark = pytest.mark.integration


def test_an_idle_trainer_stops_at_once_on_sigterm(tmp_path: Path) -> None:
    control = run_service("control", tmp_path / "control", ["--data-dir", str(tmp_path / "data")])
    try:
        trainer = run_service(
            "trainer",
            tmp_path / "trainer",
            [
                "--control",
                control.address,
                "--work-dir",
                str(tmp_path / "work"),
                "--acquire-wait-s",
                "30",
            ],
        )
        started = time.monotonic()
        trainer.stop(timeout_s=20)  # asserts exit 0
        # Its 30 s long poll is cut short: a compose `down` or a scale-in is not held up.
        assert time.monotonic() - started < 5
    finally:
        control.stop()
