"""A job's process tree without cgroups: found through /proc, the trainer being a subreaper.

Where no cgroup can hold a job, the trainer makes itself a child subreaper so orphans (a
``setsid`` grandchild) are re-parented to it, and kills everything below itself at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_KILL_DEADLINE_S = 10.0
_POLL_S = 0.02


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_descendants(keep_unreaped: int) -> None:
    """SIGKILLs every process below this one (a subreaper), reaping all but `keep_unreaped`."""
    deadline = time.monotonic() + _KILL_DEADLINE_S
    while True:
        alive = descendants(os.getpid())
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap_adopted(keep_unreaped)
        if not alive:
            return
        if time.monotonic() > deadline:
            log.warning("processes %s survived the kill of their job", sorted(alive))
            return
        time.sleep(_POLL_S)


def _reap_adopted(keep_unreaped: int) -> None:
    # Orphans re-parented to this subreaper become its zombies; the script's own pid is left
    # to its Popen.
    for child in _children_including_zombies():
        if child != keep_unreaped:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)


def _children_including_zombies() -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.append(int(entry.name))
    return found


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; False where the kernel says no."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
