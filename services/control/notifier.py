"""A change signal that waiters cannot miss: a condition variable with a generation counter.

A waiter reads `generation()` *before* looking at the state it waits on; `wait(seen, timeout)`
returns at once if a `notify()` happened since, so a change between the look and the wait is
never lost. Used by the task queue (new or requeued tasks) and by log followers (new lines).
"""

from __future__ import annotations

import threading


class Notifier:
    """Wakes every waiter on `notify()`; `close()` wakes them for good (shutdown)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self._closed = False

    def generation(self) -> int:
        """A token to pass to `wait`: the number of notifications so far."""
        with self._condition:
            return self._generation

    @property
    def is_closed(self) -> bool:
        """True after `close()`: waiters should give up."""
        with self._condition:
            return self._closed

    def notify(self) -> None:
        """Wakes every waiter."""
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def close(self) -> None:
        """Wakes every waiter and makes later waits return at once."""
        with self._condition:
            self._closed = True
            self._generation += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout_s: float) -> bool:
        """Blocks until a notification after generation `seen`, or `timeout_s` passes.

        Returns:
            True when notified (or closed), False on timeout.
        """
        with self._condition:
            return self._condition.wait_for(
                lambda: self._generation != seen or self._closed, timeout=max(0.0, timeout_s)
            )
