"""Sizes native thread pools (OpenMP, BLAS) to the cores a process has and its concurrent calls.

A model's native code parallelises each call over the machine's cores: HistGradientBoosting
through OpenMP, linear models through BLAS. A server runs many calls at once on its own threads,
and OpenMP keeps one team of threads per calling thread, spinning for a while after each call. A
replica with 32 RPC threads on 2 cores thus ran a one-row HistGradientBoosting call in 45 ms
against 11 ms in-process. The cure is to give each concurrent call its share of the cores:
``threads_per_call = cpus // concurrency`` (at least 1).

OpenMP's thread count is a per-thread setting whose default every new thread takes from
``OMP_NUM_THREADS`` as read when the runtime loads, so a process sets the variables before
numpy or scikit-learn is imported (`limit_process`); a thread pool created later for a known
concurrency sets its own threads' limit (`limit_current_thread`). A variable the operator (or
the model's environment) already set is left as it is.

The same share is the per-call budget of Python-level parallelism (`set_call_threads`,
`call_threads`): a batch worker scoring one mini-batch at a time gives that call every core, and
the fast path splits a large predict of a single-threaded tree model over them; a replica's RPC
threads keep the default of 1.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
"""The variables the native libraries scikit-learn's stack loads read for their pool size."""

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CALL = threading.local()


def available_cpus(cgroup_root: Path = _CGROUP_ROOT) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota if any.

    Reads cgroup v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (a
    container started with ``--cpus 1.5`` gets 2; a quota is rounded up, never below 1).
    """
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota(root: Path) -> float | None:
    """The CPU quota in cores of this process's cgroup, or None when unlimited or unreadable."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu" if (root / "cpu").is_dir() else root / "cpu,cpuacct"
        quota_file, period_file = v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota_us = int(quota_file.read_text())
            return None if quota_us <= 0 else quota_us / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def threads_per_call(concurrency: int, cpus: int | None = None) -> int:
    """Each concurrent call's share of `cpus` (default: `available_cpus()`), at least 1."""
    total = available_cpus() if cpus is None else cpus
    return max(1, total // max(1, concurrency))


def limit_process(environ: MutableMapping[str, str], threads: int) -> dict[str, str]:
    """Sets each unset thread-count variable in `environ` to `threads`; returns what is in force.

    Call it before numpy or scikit-learn is imported: the libraries read the variables once, at
    load. Variables already set (by the operator, or a model's environment) are kept.
    """
    for name in THREAD_VARIABLES:
        environ.setdefault(name, str(threads))
    return {name: environ[name] for name in THREAD_VARIABLES}


def limit_current_thread(threads: int) -> None:
    """Limits the native pools loaded so far: OpenMP for the calling thread, BLAS process-wide.

    Meant for a thread pool's initializer, once the model (and so its native libraries) is
    loaded; libraries loaded later keep the process-wide defaults of `limit_process`.
    """
    import threadpoolctl  # imported here: it inspects every loaded library when used

    threadpoolctl.threadpool_limits(limits=threads)


def set_call_threads(threads: int) -> None:
    """How many cores a predict call made on this thread may use (at least 1)."""
    _CALL.threads = max(1, threads)


def call_threads() -> int:
    """The calling thread's budget set by `set_call_threads`; 1 when never set."""
    return int(getattr(_CALL, "threads", 1))


def describe_pools() -> str:
    """One line naming each loaded native pool and its size, for the start-up log."""
    import threadpoolctl

    sizes: dict[str, set[int]] = {}
    for pool in threadpoolctl.threadpool_info():
        sizes.setdefault(pool["user_api"], set()).add(pool["num_threads"])
    if not sizes:
        return "no native thread pools loaded"
    return ", ".join(
        f"{api}={'/'.join(map(str, sorted(counts)))}" for api, counts in sorted(sizes.items())
    )
