"""Installs a job's ``requirements.txt`` into a shared, content-addressed dependency cache.

Contract §1.6: when the source directory holds ``requirements.txt``, pip installs it before the
script runs. skmaker installs with ``pip install --target`` into ``deps_root/<sha256>/`` and puts
that folder on the script's ``PYTHONPATH``, so jobs never touch the worker's own environment and
identical requirement files are installed once. A failed install raises
`RequirementsInstallError`, whose message follows the toolkit's ``InstallRequirementsError``
format (§1.8) and ends with pip's own error line.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from services.sagemaker.scripts.boxes import ProcessBox, ScriptSandbox
from services.sagemaker.scripts.runner import (
    ALGORITHM_ERROR,
    FAILED,
    FAILURE_REASON_LIMIT,
    SUCCEEDED,
    OnLine,
    ScriptRunner,
    format_process_failure,
)

log = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements.txt"
COMPLETE_MARKER = ".skmaker-complete"
"""Written inside a dependency folder as the last step of a successful install."""

_TAIL_LINES = 40


class RequirementsInstallError(Exception):
    """pip could not install ``requirements.txt``.

    Attributes:
        message: Starts with ``InstallRequirementsError:`` and carries the tail of pip's output;
            short enough that `failure_reason` keeps all of it.
    """

    def __init__(self, message: str) -> None:
        """Create the error from its toolkit-style message."""
        super().__init__(message)
        self.message = message

    @property
    def failure_reason(self) -> str:
        """The message as a job's failure reason: ``AlgorithmError:`` first, ≤1024 characters."""
        return (ALGORITHM_ERROR + self.message)[:FAILURE_REASON_LIMIT]


def requirements_digest(requirements: bytes, python: str) -> str:
    """Return the cache key of one requirements file for one interpreter.

    The interpreter is part of the key because packages installed for one Python version
    (compiled extensions, version markers) are not valid for another.

    Args:
        requirements: The bytes of ``requirements.txt``.
        python: The interpreter that will run the script.

    Returns:
        A sha256 hex digest.
    """
    digest = hashlib.sha256()
    digest.update(os.fsencode(python))
    digest.update(b"\0")
    digest.update(requirements)
    return digest.hexdigest()


def _is_complete(deps_dir: Path) -> bool:
    return (deps_dir / COMPLETE_MARKER).is_file()


def install_requirements(
    code_dir: Path,
    deps_root: Path,
    python: str,
    on_line: OnLine | None,
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    stop_requested: Callable[[], bool] | threading.Event | None = None,
    sandbox: ScriptSandbox | None = None,
) -> Path | None:
    """Install ``code_dir/requirements.txt`` if there is one, reusing a finished install.

    Runs ``python -m pip install --target <tmp> -r requirements.txt --disable-pip-version-check
    --no-input`` with cwd ``code_dir`` (so relative paths in the file resolve as on SageMaker),
    streaming pip's lines to ``on_line``. The install goes to a private temporary folder that is
    renamed to ``deps_root/<digest>`` only after pip succeeded and the completion marker was
    written, so concurrent workers never see, or use, a half-installed folder: the first rename
    wins and the others discard their copy.

    Args:
        code_dir: The job's source directory.
        deps_root: The shared cache folder; created if missing.
        python: The interpreter that will run the script (its pip is used).
        on_line: Receives ``(stream, text, timestamp)`` for each line pip writes.
        env: pip's environment (e.g. ``PIP_INDEX_URL`` from the job); the worker's if None.
        timeout_s: Give up after this long; None for no limit.
        stop_requested: A stop request ends pip early.
        sandbox: Runs pip (which runs the packages' build code) in the job's sandbox, as the
            job user, on a target folder it owns; the finished folder is taken back before it
            joins the shared cache, so no job can change another job's dependencies.

    Returns:
        The folder to put on ``PYTHONPATH``, or None if there is no ``requirements.txt``.

    Raises:
        RequirementsInstallError: pip failed, timed out or was stopped.
    """
    requirements = code_dir / REQUIREMENTS_FILE
    if not requirements.is_file():
        return None
    deps_root.mkdir(parents=True, exist_ok=True)
    final = deps_root / requirements_digest(requirements.read_bytes(), python)
    if _is_complete(final):
        log.info("requirements already installed in %s", final)
        return final

    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=deps_root))
    try:
        if sandbox is not None:
            tmp.chmod(0o755)
            sandbox.give(tmp)
        box = sandbox.box("pip") if sandbox is not None else None
        _run_pip(code_dir, tmp, python, on_line, env, timeout_s, stop_requested, box)
        if sandbox is not None:
            sandbox.take_back(tmp)
        (tmp / COMPLETE_MARKER).write_text("", encoding="utf-8")
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _run_pip(
    code_dir: Path,
    target: Path,
    python: str,
    on_line: OnLine | None,
    env: Mapping[str, str] | None,
    timeout_s: float | None,
    stop_requested: Callable[[], bool] | threading.Event | None,
    box: ProcessBox | None = None,
) -> None:
    command = [
        python,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "-r",
        REQUIREMENTS_FILE,
        "--disable-pip-version-check",
        "--no-input",
    ]
    # pip prints its error on stderr but the context (which requirement, which index) on
    # stdout, so the message keeps the tail of both, in the order they arrived.
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)

    def forward(stream: str, text: str, timestamp: float) -> None:
        tail.append(text)
        if on_line is not None:
            on_line(stream, text, timestamp)

    result = ScriptRunner(forward).run(
        command,
        cwd=code_dir,
        env=dict(os.environ if env is None else env),
        max_runtime_s=timeout_s,
        stop_requested=stop_requested,
        grace_s=10.0,
        box=box,
    )
    if result.outcome == SUCCEEDED:
        return
    lines = list(tail)
    if result.outcome != FAILED:
        lines.append(f"pip install ended early: {result.outcome}")
    raise RequirementsInstallError(
        format_process_failure(
            "InstallRequirementsError",
            result.exit_code,
            lines,
            command,
            limit=FAILURE_REASON_LIMIT - len(ALGORITHM_ERROR),
        )
    )


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished install into place, tolerating a concurrent winner."""
    try:
        tmp.rename(final)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        if _is_complete(final):
            return  # another worker finished the same install first; ours is discarded
        # A folder without the marker was not made by this code path (only complete folders
        # are renamed in); clear it and take its place.
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
