"""Who user code runs as, and which files that user may reach.

When the trainer runs as root, job processes run as a dedicated system user that owns only the
job's workspace; when the control runs as root, so do the replicas and batch workers it starts
(they run model code: handlers, unpickled models).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import itertools
import json
import logging
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
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
        log.info("created system user %s (uid %d) for user code", name, entry.pw_uid)
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


# What a process running user code keeps of the environment of the process starting it
# (fnmatch patterns): locale, time zone, the search path, thread-pool sizes, proxies and pip's
# index, and the service's own SKMAKER_<SERVICE>_* settings. Never a variable ending in
# AUTH_TOKEN: credentials travel through inherited pipes.
USER_CODE_ENV_ALLOW = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "PYTHONUNBUFFERED",
    "PYTHONIOENCODING",
    "OMP_*",
    "MKL_*",
    "OPENBLAS_*",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "SKMAKER_INFERENCE_*",
    "SKMAKER_BATCH_*",
    "SKMAKER_LIFELINE_FD",
)


def allowed_environment(
    env: Mapping[str, str], allow: Sequence[str] = USER_CODE_ENV_ALLOW
) -> dict[str, str]:
    """The variables of `env` whose names match a pattern of `allow`, but no `*AUTH_TOKEN`."""
    return {
        name: value
        for name, value in env.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in allow)
        and not name.endswith("AUTH_TOKEN")
    }


# The worker code a runtime's interpreter imports for user code (the script contract, the
# handlers, the legacy toolkit). In a developer's checkout they are editable installs: the
# runtime finds them in the checkout, which may sit below a folder closed to other users.
WORKER_PACKAGES = ("skmaker", "services", "sagemaker_containers")

# Prints "path <folder>" for the interpreter's own folders and the worker packages' folders,
# and "package <name>" for each worker package it has.
_FACTS_PROGRAM = f"""
import importlib.util, sys
print("path", sys.prefix)
print("path", sys.base_prefix)
for name in {WORKER_PACKAGES!r}:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        continue
    if spec is not None:
        print("package", name)
        for folder in spec.submodule_search_locations or ():
            print("path", folder)
"""


@dataclass(frozen=True)
class _InterpreterFacts:
    paths: tuple[str, ...]
    packages: tuple[str, ...]


@functools.lru_cache(maxsize=16)
def _interpreter_facts(python: str) -> _InterpreterFacts:
    try:
        done = subprocess.run(
            [python, "-I", "-c", _FACTS_PROGRAM],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        lines = [line.split(" ", 1) for line in done.stdout.splitlines() if " " in line]
    except (OSError, subprocess.SubprocessError):
        lines = []
    paths = [os.path.dirname(os.path.realpath(python))]
    paths += [value for kind, value in lines if kind == "path"]
    return _InterpreterFacts(
        paths=tuple(sorted({os.path.realpath(p) for p in paths})),
        packages=tuple(value for kind, value in lines if kind == "package"),
    )


def interpreter_paths(python: str) -> list[str]:
    """The folders `python` needs: its binary's, its prefix and base prefix, and the folders of
    the worker packages it imports from outside them (editable installs in a checkout); real
    paths."""
    return list(_interpreter_facts(python).paths)


def wrapped(plan: dict[str, object], command: Sequence[str]) -> list[str]:
    """`command` started through `box_exec` with `plan`."""
    wrapper = str(Path(__file__).with_name("box_exec.py"))
    return [sys.executable, "-I", "-S", wrapper, json.dumps(plan), *command]


def probe_box(user: JobUser, expose: list[str], python: str) -> str:
    """Empty when `user` can start `python` through the box; else what went wrong."""
    plan = {"uid": user.uid, "gid": user.gid, "expose": expose}
    # The worker packages too: a user who can start python but not import them would fail
    # every job (the import is cheap: each package's __init__ is light).
    imports = "; ".join(f"import {name}" for name in _interpreter_facts(python).packages)
    command = wrapped(plan, [python, "-c", imports or "import sys"])
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False, cwd="/"
        )
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def as_user_command(user: JobUser, command: Sequence[str]) -> list[str]:
    """`command` (whose first word is a python) started as `user` through `box_exec`.

    The interpreter's folders are exposed to `user` when a closed folder (pyenv's under /root)
    hides them. No parent-death signal: a long-lived service stops with its starter through its
    lifeline, not when the thread that happened to start it ends.
    """
    plan = {
        "uid": user.uid,
        "gid": user.gid,
        "expose": interpreter_paths(command[0]),
        "die_with_parent": False,
    }
    return wrapped(plan, command)


def model_code_user(
    name: str, must_reach: Path, pythons: Sequence[str] | None = None
) -> JobUser | None:
    """The user a root process runs model code as (replicas, batch workers); None otherwise.

    None (with a warning) as well when `name` is empty, that user cannot start one of `pythons`
    through `box_exec`, or cannot traverse to `must_reach` (a data folder below a folder closed
    to others): model code then runs as this process's user and can read what it can.

    Raises:
        OSError: the user does not exist and cannot be created.
    """
    if os.geteuid() != 0:
        return None
    if not name:
        log.warning("no job user: model code runs as root and can read everything")
        return None
    user = ensure_job_user(name)
    problem = (
        ""
        if pythons is None
        else next(
            (
                said
                for python in pythons
                if (said := probe_box(user, interpreter_paths(python), python))
            ),
            "",
        )
    )
    if problem:
        log.warning(
            "job user %s cannot start python (%s): model code runs as root and can read everything",
            name,
            problem,
        )
        return None
    if not can_reach(must_reach, user.uid, user.gid):
        log.warning(
            "job user %s cannot reach %s (a folder on its path is closed to others): model "
            "code runs as root and can read everything",
            name,
            must_reach,
        )
        return None
    return user


def hand_over(folder: Path, user: JobUser) -> None:
    """Creates `folder` when missing and gives it to `user`, with everything inside when it was
    someone else's (files an earlier run made as root), so the user can change what it finds."""
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_uid != user.uid:
        chown_tree(folder, user.uid, user.gid)
