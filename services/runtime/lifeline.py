"""A lifeline from a parent service to the processes it starts: they stop when it dies.

The control starts `--local` trainers and batch workers and local replica processes; killed
with SIGKILL it cannot stop them, and a restarted control would start more. So the parent holds
the write end of a pipe it never writes to, and each child inherits only the read end
(`LIFELINE_FD_ENV` names its number). The kernel closes the write end when the parent dies,
however it dies, and the child's blocked read then returns end-of-file: the child stops as on
SIGTERM, and exits at once if draining overruns a deadline.

Unlike prctl(PR_SET_PDEATHSIG) this is bound to the parent process, not to the parent thread
that happened to start the child, and a child started after its parent already died sees the
end at once. The write end is not inheritable, so no other child keeps it open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from services.runtime.components import StepLoop

log = logging.getLogger(__name__)

LIFELINE_FD_ENV = "SKMAKER_LIFELINE_FD"

_lock = threading.Lock()
_read_fd = -1


def child_lifeline() -> tuple[dict[str, str], tuple[int, ...]]:
    """What to start a child with so it stops when this process dies: (environment, pass_fds).

    The pipe is made once per process and kept open for its lifetime.
    """
    global _read_fd
    with _lock:
        if _read_fd < 0:
            read_end, _write_end = os.pipe()  # both non-inheritable (PEP 446)
            _read_fd = read_end
        return {LIFELINE_FD_ENV: str(_read_fd)}, (_read_fd,)


def watch_parent(
    on_parent_gone: Callable[[], None],
    *,
    exit_after_s: float = 30.0,
    exit_now: Callable[[int], None] = os._exit,
) -> bool:
    """Calls `on_parent_gone` when the lifeline in `LIFELINE_FD_ENV` breaks; False without one.

    Reads the variable (and removes it, so this process's own children do not see it) and
    waits for end-of-file on a daemon thread. If the process still runs `exit_after_s` after
    `on_parent_gone` returned, `exit_now(1)` ends it.
    """
    value = os.environ.pop(LIFELINE_FD_ENV, "")
    if not value.isdigit():
        return False
    fd = int(value)
    with contextlib.suppress(OSError):
        os.set_inheritable(fd, False)

    def wait() -> None:
        try:
            while os.read(fd, 1):
                pass  # nothing is ever written; end-of-file is the signal
        except OSError:
            pass  # closed from inside the process: treat as gone too
        log.warning("the process that started this one is gone; stopping")
        on_parent_gone()
        timer = threading.Timer(exit_after_s, _exit_late, args=(exit_now, exit_after_s))
        timer.daemon = True
        timer.start()

    threading.Thread(target=wait, name="lifeline", daemon=True).start()
    return True


def _exit_late(exit_now: Callable[[int], None], waited_s: float) -> None:
    log.error("still running %.0fs after the parent died; exiting", waited_s)
    exit_now(1)


class ControlWatchdog:
    """Stops this process once its control has not answered for `exit_after_s` (a container's
    lifeline: a replica container the control started cannot inherit a pipe from it).

    Every `interval_s` it asks `control_answers()`; once no answer came for `exit_after_s` it
    calls `stop()` (SIGTERM to this process by default: the usual drain). A control that
    restarts within the window is not noticed; a restarted one stops what a killed run left
    anyway. `loop` is the component to run.
    """

    def __init__(
        self,
        control_answers: Callable[[], bool],
        exit_after_s: float,
        *,
        interval_s: float = 2.0,
        stop: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._control_answers = control_answers
        self._exit_after_s = exit_after_s
        self._stop = stop if stop is not None else _terminate_self
        self._clock = clock
        self._last_answer = clock()
        self._stopped = False
        self.loop = StepLoop("control-watchdog", self.step, interval_s, step_at_start=False)

    def step(self) -> bool:
        """One check; True once it asked the process to stop."""
        if self._stopped:
            return True
        now = self._clock()
        if self._control_answers():
            self._last_answer = now
            return False
        if now - self._last_answer < self._exit_after_s:
            return False
        log.error(
            "the control has not answered for %.0fs (--control-lost-exit-s); stopping",
            now - self._last_answer,
        )
        self._stopped = True
        self._stop()
        return True


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
