"""Where the trainer's cgroup code writes on a cgroup v2 host (a folder laid out like one).

This machine mounts cgroup v1, where the integration tests run for real; most hosts have v2,
whose interface files are checked here on a copy of their layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer.sandbox import Cgroups, JobLimits


def _v2_host(tmp_path: Path, own: str = "system.slice/trainer.service") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    (root / own).mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / own / "cgroup.controllers").write_text("memory pids\n")
    (root / own / "cgroup.subtree_control").write_text("")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text(f"0::/{own}\n")
    return root / own, self_cgroup


def test_v2_job_cgroups_get_their_limits_below_the_trainers_own(tmp_path: Path) -> None:
    own, self_cgroup = _v2_host(tmp_path)
    cgroups = Cgroups.detect(tmp_path / "cgroup", self_cgroup)
    box = cgroups.create("job-1", JobLimits(memory_bytes=256 * 2**20, max_processes=64))

    job = own / "skmaker-jobs" / "job-1"
    assert cgroups.version == 2
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (job / "memory.max").read_text() == str(256 * 2**20)
    assert (job / "memory.swap.max").read_text() == "0"
    assert (job / "pids.max").read_text() == "64"
    assert box.procs_files == [str(job / "cgroup.procs")]


def test_v2_kill_uses_cgroup_kill_and_oom_kills_are_read_from_memory_events(
    tmp_path: Path,
) -> None:
    own, self_cgroup = _v2_host(tmp_path)
    box = Cgroups.detect(tmp_path / "cgroup", self_cgroup).create("job-2", JobLimits())
    job = own / "skmaker-jobs" / "job-2"
    (job / "cgroup.kill").write_text("")
    (job / "cgroup.procs").write_text("")

    box.kill_all()
    assert (job / "cgroup.kill").read_text() == "1"

    (job / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\n")
    assert not box.out_of_memory()
    (job / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    assert box.out_of_memory()


def test_v2_without_the_memory_controller_is_not_used(tmp_path: Path) -> None:
    own, self_cgroup = _v2_host(tmp_path)
    (own / "cgroup.controllers").write_text("pids\n")
    with pytest.raises(OSError, match="memory"):
        Cgroups.detect(tmp_path / "cgroup", self_cgroup)
