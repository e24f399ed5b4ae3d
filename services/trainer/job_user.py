"""Who job processes run as, and which of the trainer's files that user may reach.

When the trainer runs as root, job processes run as a dedicated system user that owns only the
job's workspace.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobUser:
    """Who job processes run as."""

    name: str
    uid: int
    gid: int
    dedicated: bool  # False: the trainer's own user


def ensure_job_user(name: str) -> JobUser:
    """The system user `name`, created (no home, no login shell) when missing.

    Raises:
        OSError: the user does not exist and cannot be created.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        command = [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as err:
            raise OSError(f"cannot create the job user {name!r}: {err}") from err
        try:
            entry = pwd.getpwnam(name)  # a concurrent trainer may have created it
        except KeyError:
            raise OSError(f"cannot create the job user {name!r}: {done.stderr.strip()}") from None
        log.info("created system user %s (uid %d) for training scripts", name, entry.pw_uid)
    if entry.pw_uid == 0:
        raise OSError(f"job user {name!r} is root")
    return JobUser(name, entry.pw_uid, entry.pw_gid, dedicated=True)


def can_reach(path: Path, uid: int, gid: int) -> bool:
    """True when a process of `uid`/`gid` (no other groups) can traverse to `path`."""
    for folder in [path, *path.parents]:
        try:
            info = folder.stat()
        except OSError:
            return False
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Gives `root` and everything below it to `uid`/`gid`; links are not followed."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in itertools.chain(dirnames, filenames):
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def is_inside_without_links(path: Path, root: Path) -> bool:
    """True when `path` is below `root` and no component between them is a symbolic link.

    The trainer checks this before it reads or writes, with its own rights, a file user code
    could have replaced by a link (``failure``, ``success``, ``model/``).
    """
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            return False
    return True
