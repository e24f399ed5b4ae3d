"""The `tasks` table (units of leased work) as queries.

`TaskTables` adds them to a `Database`; every method runs in its transaction, so it joins the
caller's when there is one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.control.db.database import Database
from services.control.dispatch.tasks import Task, TaskKind, TaskOutcome, TaskState

_TASK_COLUMNS = (
    "task_id, kind, job_name, state, attempt, worker_id, lease_expires, not_before, outcome, "
    "max_leased, script_runtime"
)


class TaskTables(Database):
    """Queries of the task table."""

    def insert_task(self, task: Task) -> None:
        """Adds a task to the queue table."""
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _task_row(task),
            )

    def update_task(self, task: Task) -> None:
        """Writes a task's state, attempt, worker, lease, backoff and outcome."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE tasks SET state = ?, attempt = ?, worker_id = ?, lease_expires = ?, "
                "not_before = ?, outcome = ? WHERE task_id = ?",
                (*_task_row(task)[3:9], task.task_id),
            )

    def get_task(self, task_id: str) -> Task | None:
        """The task, or None."""
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return None if row is None else _task_from_row(row)

    def tasks_of_job(self, job_name: str) -> list[Task]:
        """Every task of a job, oldest first."""
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE job_name = ? ORDER BY seq", (job_name,)
            ).fetchall()
        return [_task_from_row(row) for row in rows]

    def oldest_ready_task(
        self, kinds: Sequence[TaskKind], now: float, script_runtime: str = ""
    ) -> Task | None:
        """The oldest queued task of one of `kinds` whose backoff has passed and whose job has
        fewer than its `max_leased` tasks leased, or None; with `script_runtime`, only tasks
        that need that runtime or none."""
        if not kinds:
            return None
        marks = ", ".join("?" for _ in kinds)
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks AS queued WHERE state = 'queued' "
                f"AND kind IN ({marks}) AND not_before <= ? "
                "AND (? = '' OR script_runtime IN ('', ?)) AND (max_leased = 0 OR max_leased > "
                "(SELECT COUNT(*) FROM tasks AS leased WHERE leased.job_name = queued.job_name "
                "AND leased.kind = queued.kind AND leased.state = 'leased')) ORDER BY seq LIMIT 1",
                (*[kind.value for kind in kinds], now, script_runtime, script_runtime),
            ).fetchone()
        return None if row is None else _task_from_row(row)

    def next_not_before(self, kinds: Sequence[TaskKind]) -> float | None:
        """The earliest time a queued task of `kinds` becomes ready, or None when none is queued."""
        if not kinds:
            return None
        marks = ", ".join("?" for _ in kinds)
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT MIN(not_before) FROM tasks WHERE state = 'queued' AND kind IN ({marks})",
                [kind.value for kind in kinds],
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def expired_leases(self, now: float) -> list[Task]:
        """Leased tasks whose lease ended before `now`."""
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state = 'leased' AND lease_expires < ? "
                "ORDER BY seq",
                (now,),
            ).fetchall()
        return [_task_from_row(row) for row in rows]

    def extend_leases(self, until: float) -> int:
        """Moves every lease ending before `until` to `until`; returns how many moved."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE tasks SET lease_expires = ? WHERE state = 'leased' AND lease_expires < ?",
                (until, until),
            )
        return cursor.rowcount

    def unfinished_tasks(self, kind: TaskKind) -> list[Task]:
        """Tasks of `kind` queued or leased, oldest first."""
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state IN ('queued', 'leased') "
                "AND kind = ? ORDER BY seq",
                (kind.value,),
            ).fetchall()
        return [_task_from_row(row) for row in rows]

    def count_tasks(self, state: TaskState) -> int:
        """How many tasks are in `state`."""
        with self.transaction() as conn:
            row = conn.execute("SELECT COUNT(*) FROM tasks WHERE state = ?", (state.value,))
            return int(row.fetchone()[0])


def _task_row(task: Task) -> tuple[Any, ...]:
    return (
        task.task_id,
        task.kind.value,
        task.job_name,
        task.state.value,
        task.attempt,
        task.worker_id,
        task.lease_expires,
        task.not_before,
        None if task.outcome is None else task.outcome.value,
        task.max_leased,
        task.script_runtime,
    )


def _task_from_row(row: Mapping[str, Any]) -> Task:
    return Task(
        task_id=row["task_id"],
        kind=TaskKind(row["kind"]),
        job_name=row["job_name"],
        state=TaskState(row["state"]),
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        lease_expires=row["lease_expires"],
        not_before=row["not_before"],
        outcome=None if row["outcome"] is None else TaskOutcome(row["outcome"]),
        max_leased=row["max_leased"],
        script_runtime=row["script_runtime"],
    )
