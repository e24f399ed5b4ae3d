"""ScriptRunner against real child processes, and MetricParser."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.sagemaker.scripts.runner import MetricParser, RunResult, ScriptRunner

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


class Lines:
    """Collects on_line calls and lets a test react to one line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.seen = threading.Event()
        self.trigger = ""

    def __call__(self, stream: str, text: str, timestamp: float) -> None:
        assert abs(time.time() - timestamp) < 60
        self.lines.append((stream, text))
        if self.trigger and text == self.trigger:
            self.seen.set()


def run_script(
    tmp_path: Path,
    source: str,
    lines: Lines | None = None,
    *,
    max_runtime_s: float = 60.0,
    stop_requested: threading.Event | Callable[[], bool] | None = None,
    grace_s: float = 10.0,
    failure_file: Path | None = None,
) -> RunResult:
    (tmp_path / "train.py").write_text(textwrap.dedent(source))
    return ScriptRunner(lines).run(
        [sys.executable, "train.py"],
        cwd=tmp_path,
        env=ENV,
        max_runtime_s=max_runtime_s,
        stop_requested=stop_requested,
        grace_s=grace_s,
        failure_file=failure_file,
    )


def test_success_streams_both_outputs(tmp_path: Path) -> None:
    lines = Lines()

    result = run_script(
        tmp_path,
        """
        import sys
        print("hello")
        print("warning", file=sys.stderr)
        """,
        lines,
    )

    assert result == RunResult(0, "succeeded", "", ["warning"])
    assert ("stdout", "hello") in lines.lines
    assert ("stderr", "warning") in lines.lines


def test_lines_arrive_while_the_script_runs(tmp_path: Path) -> None:
    # The script exits 0 only once the test has reacted to its first line, which proves the
    # line was delivered live (and that print() was not block-buffered into the pipe).
    go = tmp_path / "go"
    lines = Lines()
    lines.trigger = "ready"

    def react() -> None:
        assert lines.seen.wait(30)
        go.touch()

    reactor = threading.Thread(target=react)
    reactor.start()
    result = run_script(
        tmp_path,
        f"""
        import os, sys, time
        print("ready")
        deadline = time.monotonic() + 30
        while not os.path.exists({str(go)!r}):
            if time.monotonic() > deadline:
                sys.exit(3)
            time.sleep(0.01)
        print("done")
        """,
        lines,
    )
    reactor.join(5)

    assert result.outcome == "succeeded"
    assert [text for _, text in lines.lines] == ["ready", "done"]


def test_failure_reason_carries_stderr_tail(tmp_path: Path) -> None:
    result = run_script(tmp_path, 'raise ValueError("boom: bad value")\n')

    assert result.outcome == "failed"
    assert result.exit_code == 1
    assert result.failure_reason.startswith(
        'AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "Traceback'
    )
    assert 'ValueError: boom: bad value"\nCommand "' in result.failure_reason
    assert result.failure_reason.endswith(f'Command "{sys.executable} train.py"')
    assert result.stderr_tail[-1] == "ValueError: boom: bad value"


def test_long_stderr_is_cut_from_the_front(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        import sys
        for i in range(300):
            print(f"noise line {i:04d} " + "x" * 40, file=sys.stderr)
        raise RuntimeError("the exception line that must survive")
        """,
    )

    assert len(result.failure_reason) <= 1024
    assert "RuntimeError: the exception line that must survive" in result.failure_reason
    assert "noise line 0000" not in result.failure_reason
    assert result.failure_reason.endswith('train.py"')


def test_failure_file_wins_and_is_limited(tmp_path: Path) -> None:
    failure = tmp_path / "failure"
    result = run_script(
        tmp_path,
        f"""
        import sys
        open({str(failure)!r}, "w").write("my own reason " + "y" * 3000)
        print("ignored", file=sys.stderr)
        sys.exit(2)
        """,
        failure_file=failure,
    )

    assert result.exit_code == 2
    assert result.failure_reason.startswith("AlgorithmError: my own reason yyy")
    assert len(result.failure_reason) == 1024


def test_generated_reason_is_written_to_an_absent_failure_file(tmp_path: Path) -> None:
    failure = tmp_path / "failure"

    result = run_script(tmp_path, "import sys; sys.exit(5)\n", failure_file=failure)

    assert result.failure_reason.startswith("AlgorithmError: ExecuteUserScriptError:\nExitCode 5")
    assert "AlgorithmError: " + failure.read_text() == result.failure_reason


def test_sigkill_reports_137_with_out_of_memory_info(tmp_path: Path) -> None:
    result = run_script(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n")

    assert result.exit_code == 137
    assert 'ExtraInfo "OutOfMemory: Process killed by SIGKILL (signal 9)"' in (
        result.failure_reason
    )


def test_max_runtime_sends_sigterm_and_the_script_saves(tmp_path: Path) -> None:
    saved = tmp_path / "model.joblib"

    result = run_script(
        tmp_path,
        f"""
        import signal, sys, time
        def save(signum, frame):
            open({str(saved)!r}, "w").write("partial model")
            sys.exit(0)
        signal.signal(signal.SIGTERM, save)
        print("ready")
        while True:
            time.sleep(0.05)
        """,
        max_runtime_s=2.0,
        grace_s=30.0,
    )

    assert result.outcome == "max_runtime_exceeded"
    assert result.exit_code == 0
    assert "MaxRuntimeExceeded" in result.failure_reason
    assert saved.read_text() == "partial model"


def _is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A killed grandchild lingers as a zombie until init reaps it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_stop_ignoring_sigterm_is_killed_with_its_children(tmp_path: Path) -> None:
    lines = Lines()
    lines.trigger = "ready"
    started = time.monotonic()

    result = run_script(
        tmp_path,
        """
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "60"])
        print(f"child {child.pid}")
        print("ready")
        while True:
            time.sleep(0.05)
        """,
        lines,
        stop_requested=lines.seen,
        grace_s=0.5,
    )

    assert result.outcome == "stopped"
    assert result.exit_code == 137
    assert result.failure_reason == ""
    assert time.monotonic() - started < 20
    child_pid = int(next(text for _, text in lines.lines if text.startswith("child "))[6:])
    deadline = time.monotonic() + 5
    while not _is_gone(child_pid):
        assert time.monotonic() < deadline, "grandchild survived the group kill"
        time.sleep(0.02)


def test_stop_predicate_lets_a_cooperative_script_finish(tmp_path: Path) -> None:
    lines = Lines()
    lines.trigger = "ready"

    result = run_script(
        tmp_path,
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("ready")
        while True:
            time.sleep(0.05)
        """,
        lines,
        stop_requested=lines.seen.is_set,
    )

    assert (result.outcome, result.exit_code, result.failure_reason) == ("stopped", 0, "")


def test_command_that_cannot_start(tmp_path: Path) -> None:
    result = ScriptRunner().run(["./does-not-exist"], cwd=tmp_path, env=ENV)

    assert result.exit_code is None
    assert result.outcome == "failed"
    assert result.failure_reason.startswith("AlgorithmError: ExecuteUserScriptError:")


def test_a_failing_callback_does_not_block_the_script(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(stream: str, text: str, timestamp: float) -> None:
        raise RuntimeError("callback bug")

    # 2000 lines of 81 bytes overflow a 64 KiB pipe: the script would hang if reading stopped.
    (tmp_path / "train.py").write_text("for i in range(2000): print('x' * 80)\n")
    result = ScriptRunner(broken).run(
        [sys.executable, "train.py"], cwd=tmp_path, env=ENV, max_runtime_s=60
    )

    assert result.outcome == "succeeded"
    assert caplog.text.count("on_line callback failed") == 1


def test_metric_parser_first_group_as_float() -> None:
    parser = MetricParser(
        [("train:loss", r"loss=([-+0-9.eE]+)"), ("validation:accuracy", r"val_acc: (\S+)")]
    )

    assert parser.parse("epoch 3 loss=1e-05 val_acc: 0.93") == [
        ("train:loss", 1e-05),
        ("validation:accuracy", 0.93),
    ]
    assert parser.parse("nothing here") == []
    assert parser.parse("val_acc: n/a") == []
    assert parser.parse("val_acc: nan") == []


@pytest.mark.parametrize(
    ("definitions", "message"),
    [
        ([("m", "loss=([0-9")], "invalid regex"),
        ([("m", "loss=[0-9]+")], "capture group"),
        ([("", "(x)")], "1-255"),
        ([("m" * 256, "(x)")], "1-255"),
        ([("m", "(x)" + "x" * 500)], "500"),
        ([(f"m{i}", "(x)") for i in range(41)], "too many"),
    ],
)
def test_metric_parser_rejects_bad_definitions(
    definitions: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MetricParser(definitions)
