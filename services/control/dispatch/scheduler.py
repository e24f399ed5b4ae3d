"""The task queue with leases: hand-out, renewal, fencing, completion and expiry.

Workers long-poll `acquire`; the oldest ready task is leased to them for `lease_s` seconds and
its `attempt` goes up by one. Heartbeats renew the lease; a heartbeat or completion that names
another attempt than the current lease is refused (FAILED_PRECONDITION "attempt N superseded"),
so a worker that lost its lease can never overwrite its successor's work. A reaper thread puts
tasks whose lease expired back in the queue after a backoff of `retry_backoff_s * 2^(attempt-1)`
until `max_attempts` leases were lost, then gives up. What a task means for its job (status,
logs, artifacts) is the business of the `TaskHandler` registered for its kind; the scheduler
calls it inside the same transaction as the task change, so both commit together.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from services.control.dispatch.tasks import (
    CompletionReport,
    HeartbeatAnswer,
    HeartbeatReport,
    Lease,
    LeaseLoss,
    Task,
    TaskKind,
    TaskOutcome,
    TaskState,
)
from services.control.metrics import ControlMetrics
from services.control.notifier import Notifier
from services.control.state import ControlStore
from services.runtime.components import StepLoop
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

MAX_ACQUIRE_WAIT_S = 30.0
# Longest sleep of a long poll between checks of the caller still being there.
_POLL_SLICE_S = 1.0


class TaskHandler(Protocol):
    """What a task means for its job. Every method runs inside the scheduler's transaction."""

    def payload(self, task: Task) -> object:
        """The work description a worker needs (e.g. the training job's spec)."""
        ...

    def on_leased(self, task: Task, now: float) -> None:
        """The task was just leased (its `attempt` is the new one)."""
        ...

    def on_heartbeat(self, task: Task, report: HeartbeatReport, now: float) -> bool:
        """Records the report; returns True when the worker must stop the task."""
        ...

    def on_completed(self, task: Task, report: CompletionReport, now: float) -> None:
        """Records the end of the task as its worker reported it."""
        ...

    def on_lease_expired(self, task: Task, loss: LeaseLoss, now: float) -> bool:
        """Records a lost worker; returns True to requeue (only allowed when `loss.will_retry`)."""
        ...


class Scheduler:
    """Leases tasks to workers and takes them back when workers go silent."""

    def __init__(
        self,
        store: ControlStore,
        metrics: ControlMetrics,
        *,
        lease_s: float,
        heartbeat_interval_s: float,
        max_attempts: int,
        retry_backoff_s: float,
        clock: Callable[[], float] = time.time,
        reap_interval_s: float = 0.25,
    ) -> None:
        """Creates the scheduler; call `start()` to begin reaping expired leases.

        Args:
            store: the control's database.
            metrics: counters to update (lease expirations).
            lease_s: how long a lease lasts without a heartbeat.
            heartbeat_interval_s: how often workers are told to heartbeat.
            max_attempts: leases a task may lose before it is given up.
            retry_backoff_s: delay before the first retry; doubles with each attempt.
            clock: wall-clock time in Unix seconds (leases must survive a restart).
            reap_interval_s: how often the reaper looks for expired leases.
        """
        self._store = store
        self._metrics = metrics
        self._lease_s = lease_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s
        self._clock = clock
        self._handlers: dict[TaskKind, TaskHandler] = {}
        self._queue_changed = Notifier()
        self._reaper = StepLoop("lease-reaper", self.step, reap_interval_s)
        # (task kind, script runtime a worker said it runs) -> when such a worker last polled.
        self._polled: dict[tuple[TaskKind, str], float] = {}
        self._created_at = clock()

    def register(self, kind: TaskKind, handler: TaskHandler) -> None:
        """Routes tasks of `kind` to `handler`."""
        self._handlers[kind] = handler

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Grants surviving leases one lease period, then starts the reaper thread.

        After a restart the leases in the database stand, but the control may have been down
        longer than a lease: extending them gives every worker that is still alive one lease
        period to heartbeat again before its task is taken back.
        """
        extended = self._store.extend_leases(self._clock() + self._lease_s)
        if extended:
            log.info(
                "extended %d lease(s) held before the restart by %.1fs", extended, self._lease_s
            )
        self._reaper.start()

    def step(self) -> int:
        """One pass of the lease reaper (`expire_leases`); returns how many leases expired."""
        return self.expire_leases()

    def drain(self) -> None:
        """Ends long polls at once (they return no task); no task is handed out after."""
        self._queue_changed.close()

    def stop(self) -> None:
        """Drains, then stops the reaper after its pass under way."""
        self.drain()
        self._reaper.stop(timeout_s=5.0)

    # ----------------------------------------------------------------- queue

    def enqueue(
        self, kind: TaskKind, job_name: str, *, max_leased: int = 0, script_runtime: str = ""
    ) -> Task:
        """Queues a new task for `job_name` (joins the caller's transaction, if any).

        `max_leased` caps how many of the job's tasks of this kind are leased at once (a
        transform job's instance count); 0 means no cap. `script_runtime` leaves the task to
        workers that run that runtime (or say they run any).
        """
        task = Task(
            task_id=uuid.uuid4().hex,
            kind=kind,
            job_name=job_name,
            state=TaskState.QUEUED,
            max_leased=max_leased,
            script_runtime=script_runtime,
        )
        self._store.insert_task(task)
        # Waiters that wake before the caller's transaction commits block on the store lock
        # and then see the task, so notifying here loses nothing.
        self._queue_changed.notify()
        return task

    def withdraw_queued(self, job_name: str, kind: TaskKind = TaskKind.TRAINING) -> bool:
        """Takes the job's queued task out of the queue (a stop before any worker took it).

        Job names are unique per kind only (a training job and a transform job may share
        one), so only tasks of `kind` are withdrawn.

        Returns:
            True when a queued task was withdrawn; False when none was queued.
        """
        with self._store.transaction():
            queued = [
                t
                for t in self._store.tasks_of_job(job_name)
                if t.state is TaskState.QUEUED and t.kind is kind
            ]
            for task in queued:
                self._store.update_task(
                    replace(task, state=TaskState.DONE, outcome=TaskOutcome.ABANDONED)
                )
        return bool(queued)

    def withdraw(self, task_ids: Sequence[str]) -> int:
        """Takes the named tasks out of the queue; leased or ended ones are left alone.

        For a job of several tasks (a transform job's shards) whose queued tasks are no longer
        needed. Joins the caller's transaction, if any.

        Returns:
            How many queued tasks were withdrawn.
        """
        withdrawn = 0
        with self._store.transaction():
            for task_id in task_ids:
                task = self._store.get_task(task_id)
                if task is not None and task.state is TaskState.QUEUED:
                    self._store.update_task(
                        replace(task, state=TaskState.DONE, outcome=TaskOutcome.ABANDONED)
                    )
                    withdrawn += 1
        return withdrawn

    def queue_depth(self) -> int:
        """How many tasks wait for a worker."""
        return self._store.count_tasks(TaskState.QUEUED)

    def unfinished(self, kind: TaskKind) -> list[Task]:
        """Tasks of `kind` queued (ready or backing off) or leased, oldest first."""
        return self._store.unfinished_tasks(kind)

    def acquire(
        self,
        worker_id: str,
        kinds: Sequence[TaskKind],
        wait_s: float,
        is_active: Callable[[], bool] = lambda: True,
        script_runtime: str = "",
    ) -> Lease | None:
        """Leases the oldest ready task of `kinds`, waiting up to `wait_s` (≤30 s) for one.

        Args:
            worker_id: the caller, recorded on the lease.
            kinds: task kinds the worker takes.
            wait_s: long-poll time; 0 answers at once.
            is_active: False once the caller went away (then the poll ends without a lease).
            script_runtime: the runtime the worker runs user code on in-process; tasks that
                need another are left to other workers. Empty: it takes any.

        Returns:
            The lease, or None when no task became ready in time.

        Raises:
            InvalidArgument: without a worker id or kinds.
        """
        if not worker_id:
            raise InvalidArgument("worker_id is required")
        if not kinds:
            raise InvalidArgument("kinds is empty: name the task kinds this worker takes")
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_ACQUIRE_WAIT_S)
        try:
            self._note_poll(kinds, script_runtime)
            return self._acquire_until(worker_id, kinds, script_runtime, deadline, is_active)
        finally:
            self._note_poll(kinds, script_runtime)

    def has_worker_for(self, kind: TaskKind, script_runtime: str, within_s: float = 60.0) -> bool:
        """Whether a worker that takes `kind` tasks on `script_runtime` polled in `within_s`.

        A worker that runs any runtime (it said none) counts; one busy with a task does not
        poll, so callers also look at leased tasks. While the control has run for less than
        `within_s` the answer is True: its workers may not have polled yet.
        """
        now = self._clock()
        if now - self._created_at < within_s:
            return True
        # A task for no particular runtime goes to any worker; one for a runtime, to workers
        # on it or on any (see ControlStore.oldest_ready_task).
        return any(
            now - polled <= within_s
            for (polled_kind, runtime), polled in list(self._polled.items())
            if polled_kind is kind and (not script_runtime or runtime in ("", script_runtime))
        )

    def _note_poll(self, kinds: Sequence[TaskKind], script_runtime: str) -> None:
        now = self._clock()
        for kind in kinds:
            self._polled[(kind, script_runtime)] = now

    def _acquire_until(
        self,
        worker_id: str,
        kinds: Sequence[TaskKind],
        script_runtime: str,
        deadline: float,
        is_active: Callable[[], bool],
    ) -> Lease | None:
        while True:
            seen = self._queue_changed.generation()
            if self._queue_changed.is_closed:
                return None
            lease = self._lease_oldest_ready(worker_id, kinds, script_runtime)
            if lease is not None:
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not is_active():
                return None
            timeout = min(remaining, _POLL_SLICE_S)
            next_ready = self._store.next_not_before(kinds)
            if next_ready is not None:
                timeout = min(timeout, max(0.01, next_ready - self._clock()))
            self._queue_changed.wait(seen, timeout)

    def _lease_oldest_ready(
        self, worker_id: str, kinds: Sequence[TaskKind], script_runtime: str
    ) -> Lease | None:
        with self._store.transaction():
            now = self._clock()
            task = self._store.oldest_ready_task(kinds, now, script_runtime)
            if task is None:
                return None
            task = replace(
                task,
                state=TaskState.LEASED,
                attempt=task.attempt + 1,
                worker_id=worker_id,
                lease_expires=now + self._lease_s,
            )
            self._store.update_task(task)
            handler = self._handler(task)
            handler.on_leased(task, now)
            payload = handler.payload(task)
        log.info(
            "leased task %s (%s %s) attempt %d to %s",
            task.task_id,
            task.kind,
            task.job_name,
            task.attempt,
            worker_id,
        )
        return Lease(task=task, heartbeat_interval_s=self._heartbeat_interval_s, payload=payload)

    # ----------------------------------------------------------------- reports

    def heartbeat(self, report: HeartbeatReport) -> HeartbeatAnswer:
        """Renews the lease and hands the report to the task's handler.

        Raises:
            NotFound: for an unknown task.
            FailedPrecondition: when `report.attempt` no longer holds the lease.
        """
        with self._store.transaction():
            now = self._clock()
            task = self._leased(report.task_id, report.attempt)
            task = replace(task, lease_expires=now + self._lease_s)
            self._store.update_task(task)
            stop_requested = self._handler(task).on_heartbeat(task, report, now)
        assert task.lease_expires is not None
        return HeartbeatAnswer(stop_requested=stop_requested, lease_expires=task.lease_expires)

    def complete(self, report: CompletionReport) -> None:
        """Ends the task and hands the outcome to its handler; repeats are accepted and ignored.

        Raises:
            NotFound: for an unknown task.
            FailedPrecondition: when `report.attempt` no longer holds the lease (and this is
                not a repeat of the completion that ended it).
        """
        with self._store.transaction():
            task = self._store.get_task(report.task_id)
            if (
                task is not None
                and task.state is TaskState.DONE
                and task.attempt == report.attempt
                and task.outcome is report.outcome
            ):
                log.info(
                    "repeated completion of task %s attempt %d ignored", task.task_id, task.attempt
                )
                return
            task = self._leased(report.task_id, report.attempt)
            task = replace(task, state=TaskState.DONE, outcome=report.outcome, lease_expires=None)
            self._store.update_task(task)
            self._handler(task).on_completed(task, report, self._clock())
        if task.max_leased:
            # A task of a capped job just left the leased ones: another may be leased now.
            self._queue_changed.notify()
        log.info(
            "task %s (%s) attempt %d ended: %s",
            task.task_id,
            task.job_name,
            task.attempt,
            report.outcome,
        )

    def _leased(self, task_id: str, attempt: int) -> Task:
        task = self._store.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id!r} not found")
        if task.state is not TaskState.LEASED or task.attempt != attempt:
            now_held = (
                f"attempt {task.attempt} holds it"
                if task.state is TaskState.LEASED
                else f"it is {task.state.value}"
            )
            raise FailedPrecondition(
                f"attempt {attempt} superseded: task {task_id} ({task.job_name}) {now_held}; "
                "abandon it"
            )
        return task

    def _handler(self, task: Task) -> TaskHandler:
        try:
            return self._handlers[task.kind]
        except KeyError:
            raise FailedPrecondition(f"no handler for {task.kind} tasks") from None

    # ----------------------------------------------------------------- expiry

    def expire_leases(self) -> int:
        """Requeues (with backoff) or gives up every task whose lease expired; returns how many."""
        with self._store.transaction():
            now = self._clock()
            expired = self._store.expired_leases(now)
            for task in expired:
                self._take_back(task, now)
        for task in expired:
            self._metrics.lease_expirations.inc()
            log.warning(
                "lease of task %s (%s) attempt %d by %s expired",
                task.task_id,
                task.job_name,
                task.attempt,
                task.worker_id,
            )
        if expired:
            self._queue_changed.notify()
        return len(expired)

    def _take_back(self, task: Task, now: float) -> None:
        can_retry = task.attempt < self._max_attempts
        retry_at = now + self._retry_backoff_s * 2 ** (task.attempt - 1) if can_retry else None
        loss = LeaseLoss(
            worker_id=task.worker_id,
            attempt=task.attempt,
            max_attempts=self._max_attempts,
            retry_at=retry_at,
        )
        requeue = self._handler(task).on_lease_expired(task, loss, now) and retry_at is not None
        if requeue:
            assert retry_at is not None
            task = replace(
                task, state=TaskState.QUEUED, worker_id="", lease_expires=None, not_before=retry_at
            )
        else:
            task = replace(
                task, state=TaskState.DONE, lease_expires=None, outcome=TaskOutcome.ABANDONED
            )
        self._store.update_task(task)
