"""The first program of a boxed job process: joins its cgroups, sets limits, drops to the job
user, then execs the real command.

Run as ``python -I -S box_exec.py '<json plan>' command...`` by the trainer's
`sandbox.JobBox.wrap`, and by a root control for the replicas and batch workers it runs as its
job user (`job_user.as_user_command`). It is started (as root when its starter is) with the
scrubbed environment of what it runs; ``-I -S`` keep that environment and the working folder
from putting user code on its import path while it still has its starter's rights. Standard
library only, so it starts fast. The plan (JSON): ``cgroup_procs`` (files to write our pid to),
``rlimits`` (name to ``[soft, hard]``), ``uid``/``gid`` (null: keep ours), ``expose`` (paths
the job user must reach, e.g. an interpreter under /root, and their folders it cannot
traverse), ``die_with_parent`` (default true: SIGKILL when the starting thread ends; false for
long-lived services, which stop with the control through their lifeline instead).

Exposing happens in a mount namespace of the job's own: each closed folder on the way gets an
empty tmpfs laid over it, holding only bind mounts of the entries on the way. The job then sees
the interpreter and nothing else of, say, /root; the host's folders keep their modes.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import stat
import sys

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
EXIT_CANNOT_BOX = 125


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    try:
        _libc().prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # best effort: not every libc exposes prctl


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _traversable(folder: str, uid: int, gid: int) -> bool:
    info = os.stat(folder)
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def closed_folders(targets: list[str], uid: int, gid: int) -> dict[str, list[str]]:
    """Folders on the way to `targets` that `uid` cannot traverse -> the entries to keep."""
    closed: dict[str, list[str]] = {}
    for target in targets:
        current = "/"
        for part in target.strip("/").split("/"):
            if not _traversable(current, uid, gid):
                keep = closed.setdefault(current, [])
                if part not in keep:
                    keep.append(part)
            current = os.path.join(current, part)
    return closed


def expose(targets: list[str], uid: int, gid: int) -> None:
    """Makes `targets` reachable for `uid` in a new mount namespace (see the module doc)."""
    closed = closed_folders(targets, uid, gid)
    if not closed:
        return
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare")
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    # Every entry is opened before anything is laid over it (and in the new namespace: a bind
    # mount's source must be in the caller's).
    kept = {
        folder: [(name, os.open(os.path.join(folder, name), os.O_PATH)) for name in names]
        for folder, names in closed.items()
    }
    for folder in sorted(kept, key=len):  # outer folders first
        _check(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", 0, b"mode=711"), folder)
        for name, fd in kept[folder]:
            point = os.path.join(folder, name)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.mkdir(point)
            else:
                open(point, "w").close()
            source = f"/proc/self/fd/{fd}".encode()
            _check(libc.mount(source, point.encode(), None, _MS_BIND | _MS_REC, None), point)
            os.close(fd)


def main(argv: list[str]) -> int:
    """Applies the plan in `argv[1]` and execs `argv[2:]`; returns only on failure."""
    plan = json.loads(argv[1])
    command = argv[2:]
    try:
        for procs_file in plan.get("cgroup_procs", []):
            with open(procs_file, "w") as handle:
                handle.write(str(os.getpid()))
        for name, (soft, hard) in plan.get("rlimits", {}).items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        # setuid programs (sudo, su) cannot raise the rights of anything started from here.
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        if plan.get("uid") is not None:
            if plan.get("expose"):
                expose(plan["expose"], plan["uid"], plan["gid"])
            os.setgroups([])
            os.setgid(plan["gid"])
            os.setuid(plan["uid"])
        # After the uid change, which clears it: the script dies with the trainer.
        if plan.get("die_with_parent", True):
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        os.execvpe(command[0], command, os.environ)
    except OSError as err:
        print(f"skmaker: cannot start the job in its box: {err}", file=sys.stderr)
    return EXIT_CANNOT_BOX


if __name__ == "__main__":
    sys.exit(main(sys.argv))
