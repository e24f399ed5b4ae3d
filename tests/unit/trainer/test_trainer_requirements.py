"""requirements.txt installs: the failure message, the cache, and the publish step."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from shlex import quote

import pytest

from services.sagemaker.scripts.requirements import (
    COMPLETE_MARKER,
    RequirementsInstallError,
    install_requirements,
    requirements_digest,
)

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _fake_python(path: Path, body: str) -> str:
    """A stand-in interpreter: `python -m pip install --target DIR ...` puts DIR in $5."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_no_requirements_file_means_nothing_to_install(tmp_path: Path) -> None:
    assert install_requirements(tmp_path, tmp_path / "deps", sys.executable, None) is None


def test_pip_failure_message_carries_pips_error(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text("skmaker-no-such-package-xyz==0.0.1\n")
    deps_root = tmp_path / "deps"
    lines: list[tuple[str, str]] = []

    with pytest.raises(RequirementsInstallError) as caught:
        install_requirements(
            code,
            deps_root,
            sys.executable,
            lambda stream, text, _: lines.append((stream, text)),
            env={**ENV, "PIP_RETRIES": "1", "PIP_TIMEOUT": "20"},
            timeout_s=110,
        )

    message = caught.value.message
    assert message.startswith("InstallRequirementsError:\nExitCode 1\nErrorMessage ")
    assert "ERROR: No matching distribution found for skmaker-no-such-package-xyz" in message
    assert caught.value.failure_reason == "AlgorithmError: " + message
    assert len(caught.value.failure_reason) <= 1024
    assert any("skmaker-no-such-package-xyz" in text for _, text in lines)
    assert list(deps_root.iterdir()) == []  # the temporary install folder is gone


def test_successful_install_is_published_and_reused(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text("anything==1.0\n")
    python = _fake_python(tmp_path / "python", 'echo "Installing"; touch "$5/fakepkg.py"')
    deps_root = tmp_path / "deps"
    lines: list[str] = []

    deps = install_requirements(code, deps_root, python, lambda _s, text, _t: lines.append(text))

    assert deps is not None
    assert deps.parent == deps_root
    assert deps.name == requirements_digest(b"anything==1.0\n", python)
    assert (deps / "fakepkg.py").is_file()
    assert (deps / COMPLETE_MARKER).is_file()
    assert lines == ["Installing"]
    assert sorted(p.name for p in deps_root.iterdir()) == [deps.name]

    # A second install of the same file never runs pip.
    (deps / "fakepkg.py").unlink()
    assert install_requirements(code, deps_root, python, None) == deps
    assert not (deps / "fakepkg.py").exists()


def test_a_concurrent_winner_is_kept(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text("anything==1.0\n")
    deps_root = tmp_path / "deps"
    python_path = tmp_path / "python"
    final = deps_root / requirements_digest(b"anything==1.0\n", str(python_path))
    # While "pip" runs, another worker finishes the same install.
    python = _fake_python(
        python_path,
        f'touch "$5/ours.py"; mkdir -p {quote(str(final))}; cd {quote(str(final))}; '
        f"touch theirs.py {COMPLETE_MARKER}",
    )

    deps = install_requirements(code, deps_root, python, None)

    assert deps == final
    assert (final / "theirs.py").is_file()
    assert not (final / "ours.py").exists()
    assert sorted(p.name for p in deps_root.iterdir()) == [final.name]


def test_digest_depends_on_the_interpreter() -> None:
    assert requirements_digest(b"x", "/py3.11") != requirements_digest(b"x", "/py3.12")
