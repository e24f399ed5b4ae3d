"""Worker tokens the operator makes (for worker containers) cannot double as a person's."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.control.config import ControlSettings


def _file(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_a_worker_token_that_is_also_a_persons_is_refused(tmp_path: Path) -> None:
    people = _file(tmp_path / "people", "alice:shared-1\n")
    workers = _file(tmp_path / "workers", "box:shared-1\n")
    settings = ControlSettings(auth_tokens_file=people, worker_tokens_file=workers)
    with pytest.raises(ValueError, match="a worker has a person's token"):
        settings.check()


def test_worker_tokens_need_peoples_tokens(tmp_path: Path) -> None:
    workers = _file(tmp_path / "workers", "box:w-1\n")
    with pytest.raises(ValueError, match="needs people's tokens"):
        ControlSettings(worker_tokens_file=workers).check()
    people = _file(tmp_path / "people", "alice:a-1\n")
    ControlSettings(worker_tokens_file=workers, auth_tokens_file=people).check()
