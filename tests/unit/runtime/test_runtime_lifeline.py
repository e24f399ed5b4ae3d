"""The lifeline: a child stops when its parent dies; a watchdog stops a replica whose control is
gone for good; status messages stay within the caller's metadata limit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from services.runtime.errors import MAX_STATUS_MESSAGE_BYTES, status_message
from services.runtime.lifeline import LIFELINE_FD_ENV, ControlWatchdog

CHILD = textwrap.dedent(
    """
    import sys, threading
    from services.runtime.lifeline import watch_parent
    gone = threading.Event()
    print(watch_parent(gone.set, exit_after_s=30), flush=True)
    print("gone" if gone.wait(20) else "still waiting", flush=True)
    """
)


def test_a_child_learns_its_parent_is_gone_when_the_pipe_closes() -> None:
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env={**os.environ, LIFELINE_FD_ENV: str(read_end)},
        pass_fds=(read_end,),
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(read_end)
    assert child.stdout is not None
    with child.stdout:
        assert child.stdout.readline().strip() == "True"
        started = time.monotonic()
        os.close(write_end)  # what the kernel does when the parent dies, however it dies
        assert child.stdout.readline().strip() == "gone"
        assert time.monotonic() - started < 10
    assert child.wait(timeout=20) == 0


def test_without_a_lifeline_nothing_is_watched() -> None:
    env = {key: value for key, value in os.environ.items() if key != LIFELINE_FD_ENV}
    script = "from services.runtime.lifeline import watch_parent; print(watch_parent(print))"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_watchdog_stops_only_after_the_control_was_silent_long_enough() -> None:
    now = [0.0]
    answers = [True]
    stopped: list[bool] = []
    watchdog = ControlWatchdog(
        lambda: answers[0], 10.0, stop=lambda: stopped.append(True), clock=lambda: now[0]
    )
    assert not watchdog.step()
    answers[0] = False
    now[0] = 9.0
    assert not watchdog.step()  # a restart within the window goes unnoticed
    answers[0] = True
    now[0] = 12.0
    assert not watchdog.step()
    answers[0] = False
    now[0] = 21.0
    assert not watchdog.step()
    now[0] = 22.5
    assert watchdog.step()
    assert watchdog.step()
    assert stopped == [True]


def test_long_status_messages_are_cut_to_fit_the_callers_metadata_limit() -> None:
    assert status_message("model 'x' not found") == "model 'x' not found"
    for text in ("x" * 10_000, "é" * 10_000, "%" * 10_000):
        cut = status_message(text)
        encoded = sum(
            1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode()) for char in cut
        )
        assert cut.endswith(" [...]") and encoded <= MAX_STATUS_MESSAGE_BYTES
        assert len(cut) > 100
