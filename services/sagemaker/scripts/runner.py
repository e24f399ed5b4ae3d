"""Runs a user script as a child process and turns its end into a SageMaker-style outcome.

`ScriptRunner` owns one script run: it starts the command in its own process group (and, given
a `boxes.ProcessBox` such as the trainer's `sandbox.JobBox`, as the job user in the job's
cgroup and limits), streams every stdout and stderr line to a callback as the line is written,
enforces the run-time limit and stop requests (SIGTERM to the whole group, a grace period, then
SIGKILL, as SageMaker does, contract §1.9; with a box, whatever is left of the tree, `setsid` or
not, is killed once the command ends), and builds the failure reason of §1.8 and §8: the
failure file if the script wrote one, else ``ExecuteUserScriptError`` with the tail of stderr,
always ``AlgorithmError:`` first and at most 1024 characters (a limit the box enforced names
itself instead, e.g. ``OutOfMemory: ...``).
`MetricParser` applies the job's metric regexes (§1.10).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from services.sagemaker.scripts.boxes import ProcessBox

log = logging.getLogger(__name__)

FAILURE_REASON_LIMIT = 1024
"""SageMaker keeps at most this many characters of a failure reason."""

ALGORITHM_ERROR = "AlgorithmError: "
OOM_EXTRA_INFO = "OutOfMemory: Process killed by SIGKILL (signal 9)"
DEFAULT_GRACE_S = 120.0
"""SageMaker's time between SIGTERM and SIGKILL on stop or ``MaxRuntimeInSeconds``."""

SUCCEEDED = "succeeded"
FAILED = "failed"
STOPPED = "stopped"
MAX_RUNTIME_EXCEEDED = "max_runtime_exceeded"

_MAX_LINE_BYTES = 64 * 1024  # longer lines (progress bars without newlines) arrive in pieces
_POLL_S = 0.05
_READER_JOIN_S = 5.0
_MAX_COMMAND_CHARS = 300

OnLine = Callable[[str, str, float], None]
"""``on_line(stream, text, timestamp)``: stream is ``"stdout"`` or ``"stderr"``, text has no
trailing newline, timestamp is ``time.time()`` when the line was read."""


@dataclass(frozen=True)
class RunResult:
    """How a script run ended.

    Attributes:
        exit_code: The exit status in shell convention (a child killed by signal N reports
            128 + N, so an OOM kill is 137); None if the command could not be started.
        outcome: ``"succeeded"``, ``"failed"``, ``"stopped"`` or ``"max_runtime_exceeded"``.
        failure_reason: Empty on success and on stop; otherwise at most 1024 characters.
        stderr_tail: The last lines the script wrote to stderr, oldest first.
    """

    exit_code: int | None
    outcome: str
    failure_reason: str
    stderr_tail: list[str]


def _fit_tail(lines: Sequence[str], budget: int) -> str:
    """Join the last lines that fit in ``budget`` characters; the last line always survives."""
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        cost = len(line) + (1 if kept else 0)
        if used + cost > budget:
            if not kept:
                # Even the last line is too long: keep its end, where the message usually is.
                kept.append(line[len(line) - budget :] if budget > 0 else "")
            break
        kept.append(line)
        used += cost
    return "\n".join(reversed(kept))


def format_process_failure(
    error_name: str,
    exit_code: int | None,
    output_lines: Sequence[str],
    command: Sequence[str],
    *,
    extra_info: str | None = None,
    limit: int = FAILURE_REASON_LIMIT,
) -> str:
    """Format a failed child process the way the training toolkit formats it (§1.8).

    The layout is ``<error_name>:\\nExitCode <n>\\nErrorMessage "<output>"\\n[ExtraInfo "<info>"\\n]
    Command "<command>"``. The output gets whatever room the rest leaves within ``limit``, and
    is cut from the front, so the last line (the exception itself) always survives.

    Args:
        error_name: ``ExecuteUserScriptError``, ``InstallRequirementsError``, ...
        exit_code: The exit status, or None if the process never started.
        output_lines: Captured output, oldest first (skmaker captures stderr, §8).
        command: The command that ran.
        extra_info: The optional ``ExtraInfo`` line.
        limit: The maximum length of the result.

    Returns:
        The formatted message, at most ``limit`` characters.
    """
    command_text = " ".join(command)
    if len(command_text) > _MAX_COMMAND_CHARS:
        command_text = command_text[: _MAX_COMMAND_CHARS - 3] + "..."
    extra = f'\nExtraInfo "{extra_info}"' if extra_info is not None else ""

    def render(message: str) -> str:
        return (
            f'{error_name}:\nExitCode {exit_code}\nErrorMessage "{message}"{extra}'
            f'\nCommand "{command_text}"'
        )

    lines = [line.rstrip() for line in output_lines if line.strip()]
    budget = limit - len(render(""))
    if budget <= 0:
        return render("")[:limit]
    return render(_fit_tail(lines, budget))


def _read_failure_file(failure_file: Path | None, folder: str) -> str | None:
    # The script may have replaced the file or its folder by a link to a file only the trainer
    # can read: only a regular file in the folder the trainer made counts.
    if failure_file is None or os.path.realpath(failure_file.parent) != folder:
        return None
    try:
        fd = os.open(failure_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = handle.read(FAILURE_REASON_LIMIT * 4)
    return data.decode("utf-8", errors="replace")[:FAILURE_REASON_LIMIT]


def _write_failure_file(failure_file: Path, folder: str, text: str) -> None:
    if os.path.realpath(failure_file.parent) != folder:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(failure_file, flags, 0o644)
    except OSError:
        return  # the script made something there after all
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _with_prefix(text: str) -> str:
    return (ALGORITHM_ERROR + text)[:FAILURE_REASON_LIMIT]


def _as_predicate(
    stop_requested: Callable[[], bool] | threading.Event | None,
) -> Callable[[], bool]:
    if stop_requested is None:
        return lambda: False
    if isinstance(stop_requested, threading.Event):
        return stop_requested.is_set
    return stop_requested


def _shell_exit_code(returncode: int) -> int:
    # Popen reports death by signal N as -N; the toolkit ran scripts under /bin/sh, which
    # reports 128 + N. Keeping the shell form makes an OOM kill read 137, as on SageMaker.
    return 128 - returncode if returncode < 0 else returncode


def _exit_result(
    exit_code: int,
    stderr_tail: list[str],
    command: Sequence[str],
    error_name: str,
    failure_file: Path | None,
    failure_folder: str,
) -> RunResult:
    """The result of a command that exited on its own: success, or failure with its reason.

    The script's own failure file wins; otherwise the toolkit-style reason is built and written
    to ``failure_file`` when that file does not exist yet.
    """
    if exit_code == 0:
        return RunResult(0, SUCCEEDED, "", stderr_tail)

    written = _read_failure_file(failure_file, failure_folder)
    if written is not None:
        return RunResult(exit_code, FAILED, _with_prefix(written), stderr_tail)
    reason = format_process_failure(
        error_name,
        exit_code,
        stderr_tail,
        command,
        extra_info=OOM_EXTRA_INFO if exit_code == 137 else None,
        limit=FAILURE_REASON_LIMIT - len(ALGORITHM_ERROR),
    )
    if failure_file is not None:
        _write_failure_file(failure_file, failure_folder, reason)
    return RunResult(exit_code, FAILED, ALGORITHM_ERROR + reason, stderr_tail)


class ScriptRunner:
    """Runs one command at a time and reports its lines live.

    The child gets ``PYTHONUNBUFFERED=1`` on top of the given environment: without it a Python
    script writing to a pipe buffers its output in blocks, and its lines would arrive only when
    the buffer fills or the script exits, not as they are printed.

    ``on_line`` is called from the two reader threads, never from two threads at once (a lock
    serialises the calls), so it needs no locking of its own. It must be quick: a slow callback
    stalls the reader, and then the script once the pipe buffer is full.
    """

    def __init__(self, on_line: OnLine | None = None, *, stderr_tail_lines: int = 100) -> None:
        """Create a runner.

        Args:
            on_line: Called with ``(stream, text, timestamp)`` for each output line.
            stderr_tail_lines: How many of the last stderr lines to keep for the failure reason.
        """
        self._on_line = on_line
        self._stderr_tail_lines = stderr_tail_lines
        self._callback_lock = threading.Lock()

    def run(
        self,
        command: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        max_runtime_s: float | None = None,
        stop_requested: Callable[[], bool] | threading.Event | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        failure_file: Path | None = None,
        error_name: str = "ExecuteUserScriptError",
        box: ProcessBox | None = None,
    ) -> RunResult:
        """Run ``command`` to its end, or until the time limit or a stop request.

        On the limit or a stop, the whole process group gets SIGTERM; whatever is still alive
        after ``grace_s`` gets SIGKILL. Leftover processes of the group are killed once the
        command itself has exited, so a run never leaks children.

        If the command fails and ``failure_file`` was written by the script, its text wins;
        otherwise the toolkit-style message is built and, like the toolkit, written to
        ``failure_file`` when that file does not exist yet.

        Args:
            command: The argument list; executed without a shell.
            cwd: The working directory (``code_dir``).
            env: The complete environment of the child.
            max_runtime_s: Wall-clock limit; None for no limit.
            stop_requested: Polled (an Event or a predicate); true means stop now.
            grace_s: Time between SIGTERM and SIGKILL.
            failure_file: Where the script may write its own failure reason.
            error_name: The error class named in a generated failure reason.
            box: Runs the command in this sandbox box (user, cgroup, limits); its whole tree,
                `setsid` or not, is killed once the command exits. A limit that ended the
                command is the failure reason (e.g. ``OutOfMemory: ...``).

        Returns:
            The outcome, exit code, failure reason and stderr tail.
        """
        tail: collections.deque[str] = collections.deque(maxlen=self._stderr_tail_lines)
        child_env = {**env, "PYTHONUNBUFFERED": "1"}
        failure_folder = os.path.realpath(failure_file.parent) if failure_file else ""
        started = list(command)
        if box is not None:
            box.open()
            started = box.wrap(command)
        try:
            proc = subprocess.Popen(
                started,
                cwd=cwd,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            if box is not None:
                box.close()
            reason = format_process_failure(
                error_name, None, [f"could not start the command: {exc}"], command
            )
            return RunResult(None, FAILED, _with_prefix(reason), [])

        assert proc.stdout is not None and proc.stderr is not None  # both are PIPE above
        readers = [
            threading.Thread(target=self._pump, args=("stdout", proc.stdout, None), daemon=True),
            threading.Thread(target=self._pump, args=("stderr", proc.stderr, tail), daemon=True),
        ]
        for reader in readers:
            reader.start()

        ending = self._supervise(proc, max_runtime_s, _as_predicate(stop_requested), grace_s)
        # The command has exited but is not reaped yet, so its pid still names the group:
        # no unrelated process can have taken it. Kill whatever the script left behind.
        _signal_group(proc.pid, signal.SIGKILL)
        if box is not None:
            box.kill_all(proc.pid)  # what left the group (setsid) too
        returncode = proc.wait()
        for reader in readers:
            reader.join(_READER_JOIN_S)
            if reader.is_alive():
                log.warning("output of pid %d still open after its group was killed", proc.pid)

        exit_code = _shell_exit_code(returncode)
        stderr_tail = list(tail)
        limit_reason = ""
        if box is not None:
            limit_reason = box.limit_reason(exit_code, stderr_tail)
            box.close()
        if limit_reason and ending != STOPPED:
            log.info("pid %d hit a limit: %s", proc.pid, limit_reason)
            return RunResult(exit_code, FAILED, _with_prefix(limit_reason), stderr_tail)
        if ending is not None:
            reason = ""
            if ending == MAX_RUNTIME_EXCEEDED:
                reason = (
                    f"MaxRuntimeExceeded: the script ran longer than max_runtime_s="
                    f"{max_runtime_s:g} and was stopped"
                )
            return RunResult(exit_code, ending, reason, stderr_tail)
        return _exit_result(
            exit_code, stderr_tail, command, error_name, failure_file, failure_folder
        )

    def _supervise(
        self,
        proc: subprocess.Popen[bytes],
        max_runtime_s: float | None,
        is_stop_requested: Callable[[], bool],
        grace_s: float,
    ) -> str | None:
        """Wait for the command to exit; return why it was ended, or None if it exited alone."""
        deadline = None if max_runtime_s is None else time.monotonic() + max_runtime_s
        while not _has_exited(proc.pid, _POLL_S):
            ending = None
            if is_stop_requested():
                ending = STOPPED
            elif deadline is not None and time.monotonic() >= deadline:
                ending = MAX_RUNTIME_EXCEEDED
            if ending is not None:
                log.info("ending pid %d (%s): SIGTERM, %gs grace", proc.pid, ending, grace_s)
                _signal_group(proc.pid, signal.SIGTERM)
                if not _has_exited(proc.pid, grace_s):
                    log.info("pid %d outlived its grace period: SIGKILL", proc.pid)
                    _signal_group(proc.pid, signal.SIGKILL)
                    _has_exited(proc.pid, None)
                return ending
        return None

    def _pump(self, stream: str, pipe: IO[bytes], tail: collections.deque[str] | None) -> None:
        """Read one pipe line by line until EOF, forwarding each line as it arrives."""
        callback_failed = False
        with pipe:
            while True:
                raw = pipe.readline(_MAX_LINE_BYTES)
                if not raw:
                    return
                timestamp = time.time()
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if tail is not None:
                    tail.append(text)
                if self._on_line is None:
                    continue
                with self._callback_lock:
                    try:
                        self._on_line(stream, text, timestamp)
                    except Exception:
                        # A broken callback must not stop the draining: a full pipe would
                        # block the script forever. One traceback per stream is enough.
                        if not callback_failed:
                            log.exception("on_line callback failed; output reading continues")
                        callback_failed = True


def _has_exited(pid: int, timeout_s: float | None) -> bool:
    """Wait up to ``timeout_s`` (None: forever) for ``pid`` to exit, without reaping it."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        # WNOWAIT leaves the child a zombie, so its pid and process group id stay reserved
        # until Popen.wait() reaps it: signalling the group can never hit a recycled id.
        status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if status is not None:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        remaining = _POLL_S if deadline is None else deadline - time.monotonic()
        time.sleep(max(0.0, min(_POLL_S, remaining)))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already empty, which is what we wanted


@dataclass(frozen=True)
class _MetricDefinition:
    name: str
    pattern: re.Pattern[str]


class MetricParser:
    """Extracts training metrics from output lines with the job's ``metric_definitions``.

    As on SageMaker, each definition's regex is searched in every line and its first capture
    group is parsed as a float. Lines that match but do not hold a finite number are skipped.
    """

    MAX_DEFINITIONS = 40
    MAX_NAME_CHARS = 255
    MAX_REGEX_CHARS = 500

    def __init__(self, definitions: Sequence[tuple[str, str]]) -> None:
        """Compile the definitions once.

        Args:
            definitions: ``(name, regex)`` pairs, e.g. ``("train:loss", r"loss=([0-9.]+)")``.

        Raises:
            ValueError: More than 40 definitions, an empty or over-long name, a regex over 500
                characters, a regex that does not compile, or one without a capture group.
        """
        if len(definitions) > self.MAX_DEFINITIONS:
            raise ValueError(
                f"too many metric definitions: {len(definitions)} (at most {self.MAX_DEFINITIONS})"
            )
        compiled: list[_MetricDefinition] = []
        for name, regex in definitions:
            if not name or len(name) > self.MAX_NAME_CHARS:
                raise ValueError(f"metric name {name[:40]!r}: must be 1-255 characters")
            if len(regex) > self.MAX_REGEX_CHARS:
                raise ValueError(f"metric {name!r}: regex longer than 500 characters")
            try:
                pattern = re.compile(regex)
            except re.error as exc:
                raise ValueError(f"metric {name!r}: invalid regex {regex!r}: {exc}") from exc
            if pattern.groups < 1:
                raise ValueError(f"metric {name!r}: regex {regex!r} needs a capture group")
            compiled.append(_MetricDefinition(name, pattern))
        self._definitions = tuple(compiled)

    def parse(self, line: str) -> list[tuple[str, float]]:
        """Return the ``(name, value)`` pairs found in one line, in definition order."""
        found: list[tuple[str, float]] = []
        for definition in self._definitions:
            match = definition.pattern.search(line)
            if match is None or match.group(1) is None:
                continue
            try:
                value = float(match.group(1))
            except ValueError:
                continue
            if math.isfinite(value):
                found.append((definition.name, value))
        return found
