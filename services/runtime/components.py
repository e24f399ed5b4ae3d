"""Background work in one shape: a component starts, works one `step()` at a time, and stops.

A service's background parts (a lease reaper, a tuning loop, an assembler, an autoscaler) are
`Component`s: `start()` brings one up, `stop()` ends it and waits for the step under way, and
those that take on work from outside also `drain()` (stop taking new work, finish what they
hold). Their periodic work is one public `step()`, run by a `StepLoop` thread every interval,
and sooner on `wake()`; tests call `step()` directly instead of sleeping until a thread ran it.

`Components` runs a service's components in order: started first to last, drained and stopped
last to first, so a component never outlives one it depends on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class Component(Protocol):
    """A part of a service with a lifetime: started once, stopped once."""

    def start(self) -> None:
        """Brings the component up; its background work (if any) begins."""

    def stop(self) -> None:
        """Ends the component's background work and waits for the step under way."""


@runtime_checkable
class Drainable(Component, Protocol):
    """A component that takes on work from outside and can stop taking it before it stops."""

    def drain(self) -> None:
        """Stops taking new work; what is under way goes on until `stop()`."""


class StepLoop:
    """Runs `step` on its own thread every `interval_s`, and at once after `wake()`.

    The interval runs from the start of one step to the start of the next, so a slow step does
    not stretch the period. A step that raises is logged and the loop goes on: one bad pass (a
    busy database, a bad row) must not end the work for good. A `wake()` during a step is not
    lost: the next step starts as soon as the current one ends.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        interval_s: float,
        *,
        before_start: Callable[[], object] | None = None,
        step_at_start: bool = True,
    ) -> None:
        """`name` names the thread and the log lines of failed steps; `before_start` (e.g.
        picking up state a restart left) runs in `start()` before the thread starts. With
        `step_at_start` False the first step waits an interval (or a wake), for a component
        that did its first step itself while starting."""
        self.name = name
        self._step = step
        self._before_start = before_start
        self._step_at_start = step_at_start
        self._interval_s = interval_s
        self._changed = threading.Condition()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Runs `before_start`, then starts the thread; the first step runs at once unless
        `step_at_start` is False."""
        if self._before_start is not None:
            self._before_start()
        with self._changed:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Asks for a step now rather than at the end of the interval."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def drain(self) -> None:
        """Ends the loop as `stop()` does: a loop's steps are work no one waits for."""
        self.stop()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ends the loop after the step under way, waiting at most `timeout_s` for it."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        thread, self._thread = self._thread, None
        # A step may stop its own loop (a shutdown it triggered): it then ends after the step.
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout_s)

    @property
    def is_stopping(self) -> bool:
        """Whether `stop()` was called (a long step may check it to end early)."""
        return self._stopping

    def _run(self) -> None:
        if not self._step_at_start:
            self._wait(time.monotonic() + self._interval_s)
        while True:
            with self._changed:
                if self._stopping:
                    return
                self._woken = False
            started = time.monotonic()
            try:
                self._step()
            except Exception:
                log.exception("%s: step failed; the loop goes on", self.name)
            self._wait(started + self._interval_s)

    def _wait(self, deadline: float) -> None:
        """Until `deadline`, a wake or a stop."""
        with self._changed:
            while not (self._stopping or self._woken):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)


class Components:
    """A service's components, started in order and drained and stopped in reverse."""

    def __init__(self, components: Sequence[Component]) -> None:
        """`components` in dependency order: each may rely on the ones before it."""
        self._components = tuple(components)
        self._started: list[Component] = []

    def start(self) -> None:
        """Starts each component in order; if one fails, stops the started ones and re-raises."""
        for component in self._components:
            try:
                component.start()
            except BaseException:
                self.stop()
                raise
            self._started.append(component)

    def drain(self) -> None:
        """Drains the started components that take outside work, last started first."""
        for component in reversed(self._started):
            if isinstance(component, Drainable):
                component.drain()

    def stop(self) -> None:
        """Stops the started components, last started first; a failure is logged, not raised."""
        while self._started:
            component = self._started.pop()
            try:
                component.stop()
            except Exception:
                log.exception("stopping %s failed", type(component).__name__)
