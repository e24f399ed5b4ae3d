"""`--local` trainers: as many trainer children as there are training tasks, within bounds.

A trainer runs one training task at a time, so parallel work (a tuning job's
`max_parallel_jobs`, several `fit(wait=False)`) needs as many trainers. The control keeps
`min(max(demand, --local-trainers), --local-trainers-max)` trainers running as its children,
where the demand is the training tasks queued or leased. Missing trainers start at once; once
fewer are wanted for `idle_s` seconds, idle extra trainers stop, never one that holds a lease
(stopping it would abandon its job to a retry). The minimum stays, so a first job does not wait
for a trainer to start.

Which trainer holds a lease is known from the lease's worker id, which a trainer builds as
`<hostname>/<pid>` (services/trainer/app.py): the control's children run on its host.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from services.control.local_workers.supervisor import WorkerSpec, WorkerSupervisor
from services.runtime.components import StepLoop

log = logging.getLogger(__name__)

NAME_PREFIX = "trainer-"


def default_max_trainers() -> int:
    """The core count: each trainer runs one script, and a script usually keeps a core busy."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class TrainingDemand:
    """What the training tasks ask of the local trainers."""

    # Training tasks queued (waiting or backing off before a retry) or leased.
    tasks: int
    # Worker ids holding a training lease now.
    leased_by: frozenset[str]


def worker_id(pid: int) -> str:
    """The worker id a trainer child with process id `pid` gives itself."""
    return f"{socket.gethostname()}/{pid}"


class LocalTrainers:
    """Starts and stops local trainers to follow the training tasks."""

    def __init__(
        self,
        supervisor: WorkerSupervisor,
        spec_for: Callable[[int], WorkerSpec],
        demand: Callable[[], TrainingDemand],
        *,
        min_trainers: int,
        max_trainers: int,
        idle_s: float,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        worker_id_of: Callable[[int], str] = worker_id,
    ) -> None:
        """Prepares the loop; nothing starts before `start()`.

        Args:
            supervisor: Runs the children (and restarts one that dies).
            spec_for: The child of trainer `index` (named `trainer-<index>`).
            demand: The training tasks now queued or leased, and who holds the leases.
            min_trainers: Trainers kept running even without work.
            max_trainers: The most trainers to run, whatever the demand (0: none; the minimum
                is cut to it).
            idle_s: How long fewer trainers must be wanted before idle extra ones stop.
            interval_s: How often `demand` is read.
            clock: Monotonic seconds.
            worker_id_of: The worker id of a child by its process id.
        """
        self._supervisor = supervisor
        self._spec_for = spec_for
        self._demand = demand
        self._max = max(0, max_trainers)
        self._min = min(max(0, min_trainers), self._max)
        self._idle_s = idle_s
        self._interval_s = interval_s
        self._clock = clock
        self._worker_id_of = worker_id_of
        self._fewer_wanted_since: float | None = None
        # Reconciles every interval (the control reconciles once itself while starting); a
        # component of the control's lifecycle.
        self.loop = StepLoop("local-trainers", self.reconcile, interval_s, step_at_start=False)

    @property
    def max_trainers(self) -> int:
        """The most trainers this runs."""
        return self._max

    def running(self) -> list[str]:
        """Names of the trainers now kept running, by index."""
        names = [name for name in self._supervisor.names() if name.startswith(NAME_PREFIX)]
        return sorted(names, key=_index)

    def wanted(self, demand: TrainingDemand) -> int:
        """How many trainers `demand` asks for, within the bounds."""
        return min(max(demand.tasks, self._min), self._max)

    def reconcile(self) -> int:
        """Starts missing trainers at once, stops idle extra ones after `idle_s`.

        Returns:
            How many trainers are kept running now.
        """
        demand = self._demand()
        target = self.wanted(demand)
        running = self.running()
        if target >= len(running):
            self._fewer_wanted_since = None
            taken = {_index(name) for name in running}
            free = (index for index in range(self._max) if index not in taken)
            for _ in range(target - len(running)):
                spec = self._spec_for(next(free))
                self._supervisor.add(spec)
                log.info("started local trainer %s (%d training tasks)", spec.name, demand.tasks)
            return target
        now = self._clock()
        if self._fewer_wanted_since is None:
            self._fewer_wanted_since = now
        if now - self._fewer_wanted_since < self._idle_s:
            return len(running)
        busy = self._busy(demand.leased_by)
        idle = [name for name in reversed(running) if name not in busy]
        for name in idle[: len(running) - target]:
            self._supervisor.remove(name)
            log.info("stopped idle local trainer %s", name)
        self._fewer_wanted_since = None
        return len(self.running())

    def _busy(self, leased_by: Collection[str]) -> set[str]:
        """Names of the trainers holding a lease (a child not running yet counts as idle)."""
        return {
            name
            for name, pid in self._supervisor.pids().items()
            if self._worker_id_of(pid) in leased_by
        }


def _index(name: str) -> int:
    return int(name[len(NAME_PREFIX) :])
