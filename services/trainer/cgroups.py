"""Job cgroups: a fresh cgroup (v1 or v2) per job process tree, its limits, kill and OOM check.

A trainer that can write to a cgroup hierarchy makes each job's cgroup under its own; the tree
lives in it, so it is killed whole at the end (frozen first where the kernel allows), ``setsid``
or not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from services.trainer.job_limits import JobLimits

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_KILL_DEADLINE_S = 10.0
_POLL_S = 0.02


class CgroupBox:
    """One job process tree's cgroup(s)."""

    def __init__(self, dirs: dict[str, Path], version: int) -> None:
        self._dirs = dirs  # controller (v1) or "unified" (v2) -> folder
        self.version = version

    @property
    def procs_files(self) -> list[str]:
        """Where the first process writes its pid to join."""
        return [str(d / "cgroup.procs") for d in self._dirs.values()]

    def pids(self) -> set[int]:
        """Every process in the cgroup(s)."""
        found: set[int] = set()
        for folder in self._dirs.values():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return found

    def kill_all(self) -> None:
        """Kills every process, forks racing the kill included (freeze first where possible)."""
        if self.version == 2 and (self._dirs["unified"] / "cgroup.kill").exists():
            _write(self._dirs["unified"] / "cgroup.kill", "1")
        else:
            self._set_frozen(True)
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._set_frozen(False)  # killed tasks die once thawed
        deadline = time.monotonic() + _KILL_DEADLINE_S
        while self.pids():
            if time.monotonic() > deadline:
                log.warning("processes %s survived the kill of their cgroup", sorted(self.pids()))
                return
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(_POLL_S)

    def _set_frozen(self, frozen: bool) -> None:
        if self.version == 1 and "freezer" in self._dirs:
            _write(self._dirs["freezer"] / "freezer.state", "FROZEN" if frozen else "THAWED")
        elif self.version == 2:
            with contextlib.suppress(OSError):
                _write(self._dirs["unified"] / "cgroup.freeze", "1" if frozen else "0")

    def out_of_memory(self) -> bool:
        """True when the kernel killed a process of the tree for going over the memory limit."""
        if self.version == 1:
            events = _read_keyed(self._dirs.get("memory"), "memory.oom_control")
        else:
            events = _read_keyed(self._dirs.get("unified"), "memory.events")
        return events.get("oom_kill", 0) > 0

    def remove(self) -> None:
        """Removes the (empty) cgroup folders."""
        for folder in self._dirs.values():
            try:
                folder.rmdir()
            except OSError as err:
                log.warning("cannot remove cgroup %s: %s", folder, err)


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _read_keyed(folder: Path | None, name: str) -> dict[str, int]:
    if folder is None:
        return {}
    try:
        lines = (folder / name).read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


class Cgroups:
    """Where job cgroups are made: under the trainer's own cgroup, in v1 or v2."""

    V1_CONTROLLERS = ("memory", "pids", "freezer")

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self._bases = bases

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT, own: Path = Path("/proc/self/cgroup")) -> Cgroups:
        """The cgroups this process can make job cgroups in.

        Raises:
            OSError: no usable hierarchy (not mounted, read-only, controllers missing).
        """
        lines = own.read_text().splitlines()
        paths = {}
        for line in lines:
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path.lstrip("/")
        if (root / "cgroup.controllers").exists():  # unified (v2) hierarchy
            return cls._detect_v2(root, root / paths.get("", ""))
        bases = {}
        for controller in cls.V1_CONTROLLERS:
            mount = root / controller
            if controller not in paths or not (mount / "cgroup.procs").exists():
                raise OSError(f"cgroup v1 controller {controller} is not mounted at {mount}")
            bases[controller] = mount / paths[controller]
        probe = cls(1, bases)
        probe.create("probe").remove()  # writable?
        return probe

    @classmethod
    def _detect_v2(cls, root: Path, own: Path) -> Cgroups:
        available = (own / "cgroup.controllers").read_text().split()
        missing = {"memory", "pids"} - set(available)
        if missing:
            raise OSError(f"cgroup v2 at {own} does not offer {', '.join(sorted(missing))}")
        jobs = own / "skmaker-jobs"
        jobs.mkdir(exist_ok=True)
        try:
            _write(own / "cgroup.subtree_control", "+memory +pids")
        except OSError:
            # v2 lets a non-root cgroup that holds processes have no controllers for its
            # children: move this process into a leaf of its own first, as systemd does.
            leaf = own / "skmaker-trainer"
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            _write(own / "cgroup.subtree_control", "+memory +pids")
        _write(jobs / "cgroup.subtree_control", "+memory +pids")
        probe = cls(2, {"unified": jobs})
        probe.create("probe").remove()
        return probe

    def create(self, name: str, limits: JobLimits | None = None) -> CgroupBox:
        """A new cgroup (one per controller in v1) with `limits` applied."""
        limits = limits or JobLimits()
        dirs: dict[str, Path] = {}
        try:
            for key, base in self._bases.items():
                folder = base / name
                folder.mkdir()
                dirs[key] = folder
            box = CgroupBox(dirs, self.version)
            if self.version == 1:
                if limits.memory_bytes:
                    _write(dirs["memory"] / "memory.limit_in_bytes", str(limits.memory_bytes))
                    memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
                    if memsw.exists():  # swap counts too, else the limit only moves the pages
                        _write(memsw, str(limits.memory_bytes))
                if limits.max_processes:
                    _write(dirs["pids"] / "pids.max", str(limits.max_processes))
            else:
                unified = dirs["unified"]
                if limits.memory_bytes:
                    _write(unified / "memory.max", str(limits.memory_bytes))
                    with contextlib.suppress(OSError):
                        _write(unified / "memory.swap.max", "0")
                if limits.max_processes:
                    _write(unified / "pids.max", str(limits.max_processes))
            return box
        except OSError:
            for folder in dirs.values():
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
