"""Why a transform job's shards wait, and getting them a runtime to run on.

A batch worker runs handlers in-process, so it takes only the shards of models on its own
script runtime. A transform job of a model on a runtime no worker runs would otherwise wait in
silence; `TransformWaits.message` says why it waits (DescribeTransformJob's `status_message`):
the runtime is being built, its build failed, or no batch worker on it asks for work. Its loop
(`step`) starts the build of such a runtime in the runtimes folder the control shares with the
batch workers (the `--local` workers' folder; compose's runtimes volume, where the batch
containers start a worker per runtime once it is built, see services.batch.every_runtime).
"""

from __future__ import annotations

import logging

from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.tasks import Task, TaskKind, TaskState
from services.control.runtimes import ControlRuntimes
from services.control.transform.values import TransformJob, TransformJobStatus
from services.runtime.components import StepLoop
from services.runtime.errors import InvalidArgument

log = logging.getLogger(__name__)

# A worker that polled this recently still serves its runtime (a long poll lasts ≤ 30 s).
WORKER_SEEN_WITHIN_S = 60.0


class TransformWaits:
    """Explains waiting transform jobs and starts the runtime builds they wait on."""

    def __init__(
        self,
        scheduler: Scheduler,
        runtimes: ControlRuntimes,
        *,
        interval_s: float = 5.0,
        seen_within_s: float = WORKER_SEEN_WITHIN_S,
    ) -> None:
        """Reads the transform tasks of `scheduler`; builds with `runtimes`."""
        self._scheduler = scheduler
        self._runtimes = runtimes
        self._seen_within_s = seen_within_s
        self.loop = StepLoop("transform-runtimes", self.step, interval_s)

    def message(self, job: TransformJob) -> str:
        """Why `job`'s shards wait for a worker; empty when they do not (or it is not running)."""
        if job.status is not TransformJobStatus.IN_PROGRESS:
            return ""
        tasks = [
            t for t in self._scheduler.unfinished(TaskKind.TRANSFORM) if t.job_name == job.name
        ]
        waiting = [t for t in tasks if t.state is TaskState.QUEUED]
        if not waiting:
            return ""
        runtime = self._name(waiting[0].script_runtime or job.model.script_runtime)
        if self._runtimes.is_building(runtime):
            return (
                f"building runtime {runtime} (first use) before a batch worker can take the shards"
            )
        if self._served(runtime, tasks):
            return ""
        failure = self._runtimes.last_failure(runtime)
        if failure:
            return f"no batch worker serves runtime {runtime}: {failure}"
        return (
            f"no batch worker serves runtime {runtime}: none asked for its shards in the last "
            f"{self._seen_within_s:.0f} s (a batch worker takes the shards of its own runtime)"
        )

    def step(self) -> int:
        """Starts the build of each runtime that queued shards wait on and nobody serves yet;
        returns how many builds it started (a runtime built or building counts once)."""
        tasks = self._scheduler.unfinished(TaskKind.TRANSFORM)
        started = 0
        for runtime in sorted({t.script_runtime for t in tasks if t.state is TaskState.QUEUED}):
            name = self._name(runtime)
            if not name or self._served(name, tasks) or self._runtimes.is_building(name):
                continue
            try:
                if self._runtimes.python_if_ready(name) is None:
                    started += 1
            except (InvalidArgument, RuntimeError) as err:
                log.warning("transform shards on runtime %s wait: %s", name, err)
        return started

    def _name(self, runtime: str) -> str:
        return runtime or self._runtimes.default_name()

    def _served(self, runtime: str, tasks: list[Task]) -> bool:
        busy = any(
            t.state is TaskState.LEASED and self._name(t.script_runtime) == runtime for t in tasks
        )
        return busy or self._scheduler.has_worker_for(
            TaskKind.TRANSFORM, runtime, self._seen_within_s
        )
