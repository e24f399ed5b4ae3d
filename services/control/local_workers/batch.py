"""`--local` batch workers: as many child processes as the running transform jobs ask for.

A transform job asks for `instance_count` workers. While transform jobs run (InProgress or
Stopping), the control keeps `min(largest instance count, local_batch_workers_max)` batch
workers running as its children (`python -m services.batch --control 127.0.0.1:<port>`), and
once fewer are wanted for `idle_s` seconds, it stops the extra ones, down to none when no
transform job runs. The delay keeps workers (and the models they loaded) across back-to-back
jobs. Workers are shared: any of them may take any job's shards.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from services.control.local_workers.supervisor import WorkerSpec, WorkerSupervisor
from services.runtime.components import StepLoop
from services.runtime.job_user import JobUser

log = logging.getLogger(__name__)

_NAME_PREFIX = "batch-"


def batch_worker_spec(
    index: int,
    *,
    data_dir: Path,
    control_address: str,
    extra_args: str = "",
    auth_token: str = "",
    python: str = sys.executable,
    extra_env: Mapping[str, str] | None = None,
    run_as: JobUser | None = None,
) -> WorkerSpec:
    """The child process of local batch worker `index`.

    Args:
        index: From 0; names the worker (`batch-<index>`), its work folder and its log.
        data_dir: The control's data folder (work folders and logs go below it).
        control_address: Where the worker reaches the control.
        extra_args: Flags (shell syntax) added to the worker's command line.
        auth_token: The control's bearer token, passed through an inherited pipe.
        python: The interpreter the worker runs on (the script runtime's: it runs handlers).
        extra_env: Environment added to the worker's (TLS file paths, the metrics token).
        run_as: The user it runs as (it owns its work folder), when not the control's.
    """
    data_dir = data_dir.resolve()
    name = f"{_NAME_PREFIX}{index}"
    return WorkerSpec(
        name=name,
        argv=(
            python,
            "-m",
            "services.batch",
            "--control",
            control_address,
            "--work-dir",
            str(data_dir / "work" / name),
            "--grpc-port=0",
            "--metrics-port=0",
            *shlex.split(extra_args),
        ),
        log_path=data_dir / "logs" / f"{name}.log",
        token=auth_token,
        token_fd_env="SKMAKER_BATCH_AUTH_TOKEN_FD",
        extra_env=dict(extra_env or {}),
        run_as=run_as,
        owned_dirs=(data_dir / "work" / name,),
    )


class LocalBatchWorkers:
    """Starts and stops local batch workers to follow what transform jobs ask for."""

    def __init__(
        self,
        supervisor: WorkerSupervisor,
        spec_for: Callable[[int], WorkerSpec],
        wanted: Callable[[], int],
        *,
        max_workers: int,
        idle_s: float,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepares the loop; nothing starts before `start()`.

        Args:
            supervisor: Runs the children (and restarts one that dies).
            spec_for: The child of worker `index` (see `batch_worker_spec`).
            wanted: How many workers the running jobs ask for (0 when none runs).
            max_workers: The most workers to run, whatever the jobs ask.
            idle_s: How long fewer workers must be wanted before the extra ones stop.
            interval_s: How often `wanted` is read.
            clock: Monotonic seconds.
        """
        self._supervisor = supervisor
        self._spec_for = spec_for
        self._wanted = wanted
        self._max_workers = max(0, max_workers)
        self._idle_s = idle_s
        self._interval_s = interval_s
        self._clock = clock
        self._fewer_wanted_since: float | None = None
        # Reconciles every interval; a component of the control's lifecycle.
        self.loop = StepLoop("local-batch-workers", self.reconcile, interval_s, step_at_start=False)

    def running(self) -> list[str]:
        """Names of the batch workers now kept running."""
        return [name for name in self._supervisor.names() if name.startswith(_NAME_PREFIX)]

    def reconcile(self) -> int:
        """Starts missing workers at once, stops extra ones after `idle_s`; returns the count."""
        target = min(self._wanted(), self._max_workers)
        running = self.running()
        if target >= len(running):
            self._fewer_wanted_since = None
            names = set(running)
            for index in range(target):
                spec = self._spec_for(index)
                if spec.name not in names:
                    self._supervisor.add(spec)
                    log.info("started local batch worker %s", spec.name)
            return target
        now = self._clock()
        if self._fewer_wanted_since is None:
            self._fewer_wanted_since = now
        if now - self._fewer_wanted_since < self._idle_s:
            return len(running)
        extra = sorted(running, key=lambda name: int(name[len(_NAME_PREFIX) :]))[target:]
        for name in reversed(extra):
            self._supervisor.remove(name)
        self._fewer_wanted_since = None
        return target
