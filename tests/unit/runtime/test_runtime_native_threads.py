"""native_threads: the cores a process has, each call's share, and the variables it sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.runtime import native_threads


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_no_cgroup_quota_means_the_affinity(tmp_path: Path) -> None:
    assert native_threads.available_cpus(tmp_path) == affinity()


@pytest.mark.parametrize(("content", "cap"), [("max 100000", None), ("50000 100000", 1)])
def test_cgroup_v2_quota_caps_the_cores(tmp_path: Path, content: str, cap: int | None) -> None:
    (tmp_path / "cpu.max").write_text(content + "\n")
    expected = affinity() if cap is None else min(affinity(), cap)
    assert native_threads.available_cpus(tmp_path) == expected


@pytest.mark.parametrize(("quota", "cap"), [("-1", None), ("150000", 2), ("100000", 1)])
def test_cgroup_v1_quota_rounds_up(tmp_path: Path, quota: str, cap: int | None) -> None:
    cpu = tmp_path / "cpu,cpuacct"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text(quota + "\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    expected = affinity() if cap is None else min(affinity(), cap)
    assert native_threads.available_cpus(tmp_path) == expected


def test_unreadable_quota_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("garbage")
    assert native_threads.available_cpus(tmp_path) == affinity()


@pytest.mark.parametrize(
    ("concurrency", "cpus", "share"), [(1, 8, 8), (2, 8, 4), (3, 8, 2), (32, 8, 1), (0, 4, 4)]
)
def test_threads_per_call_is_the_share_and_at_least_one(
    concurrency: int, cpus: int, share: int
) -> None:
    assert native_threads.threads_per_call(concurrency, cpus) == share


def test_limit_process_keeps_what_is_set() -> None:
    environ = {"OMP_NUM_THREADS": "3", "PATH": "/bin"}
    in_force = native_threads.limit_process(environ, 1)
    assert in_force["OMP_NUM_THREADS"] == "3"
    assert in_force["OPENBLAS_NUM_THREADS"] == "1"
    assert environ["MKL_NUM_THREADS"] == "1"
    assert environ["PATH"] == "/bin"
