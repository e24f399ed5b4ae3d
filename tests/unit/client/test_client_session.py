"""Session checks that need no server: defaults and arguments refused before any call.

Calls against a real control are in tests/integration/client/test_session_against_control.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skmaker import Session


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    """A session to an address nothing is asked of: each test fails before calling."""
    monkeypatch.delenv("SKMAKER_TOKEN", raising=False)
    monkeypatch.delenv("SKMAKER_TLS_CA", raising=False)
    with Session("127.0.0.1:9") as client:
        yield client


def test_default_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKMAKER_ADDRESS", raising=False)
    with Session() as session:
        assert session.address == "localhost:50051"


def test_upload_of_a_missing_path_raises(session: Session, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        session.upload_data(tmp_path / "absent")


def test_unknown_status_filter_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="unknown training job status"):
        session.list_training_jobs(status_equals="Running")
