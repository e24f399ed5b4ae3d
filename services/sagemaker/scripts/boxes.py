"""What running a script needs from a sandbox, as protocols (the trainer's `sandbox` provides it).

The runner and the requirements install run user code (a training script, pip building a
package) inside whatever box their caller hands them: the trainer's job sandbox (job user,
cgroup, limits), or none. They need only these few calls, so the shared package depends on no
service's sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class ProcessBox(Protocol):
    """One process tree in a sandbox: `open`, start `wrap(command)`, `kill_all`, `close`."""

    def open(self) -> None:
        """Prepares the box (its cgroup) before the command starts."""

    def wrap(self, command: Sequence[str]) -> list[str]:
        """The command line that starts `command` inside the box."""
        raise NotImplementedError

    def kill_all(self, main_pid: int) -> None:
        """Kills every process of the tree, `setsid` or not; `main_pid` is left to its Popen."""

    def limit_reason(self, exit_code: int | None, stderr_tail: Sequence[str]) -> str:
        """Which limit ended the tree, as a failure reason's start; empty when none did."""
        raise NotImplementedError

    def close(self) -> None:
        """Releases the box (its cgroup)."""


class ScriptSandbox(Protocol):
    """A sandbox that hands folders to user code and makes boxes to run it in."""

    def give(self, path: Path) -> None:
        """Lets the sandbox's user write `path`."""

    def take_back(self, path: Path) -> None:
        """Takes `path` back from the sandbox's user."""

    def box(self, label: str) -> ProcessBox:
        """A box for one process tree; `label` names it."""
        raise NotImplementedError
