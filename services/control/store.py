"""The control's durable state: one SQLite database (WAL, synchronous=FULL) with a versioned schema.

`ControlStore` owns the connection. Every public method runs in a transaction; callers that must
change several things atomically (a task and its job) wrap the calls in `transaction()`, which
nests: only the outermost block commits, and an exception escaping it rolls everything back.
A change is committed when the outermost block returns, before any RPC answers.

The schema is `migrations.MIGRATIONS`: migration N (1-based) is applied once, in its own
transaction, and recorded in `schema_version`. Queries of the serving tables live in
`model_store` and `endpoint_store`, which share this store's connection and transactions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.control.migrations import MIGRATIONS
from services.control.task import Task, TaskKind, TaskOutcome, TaskState, WorkerLogLine
from services.control.training_job import (
    Channel,
    LogLine,
    MetricDefinition,
    MetricValue,
    RuntimeVersions,
    StatusTransition,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
)
from services.runtime.errors import AlreadyExists

_JOB_COLUMNS = (
    "name, spec_json, status, secondary_status, failure_reason, creation_time, "
    "training_start_time, training_end_time, model_artifact_uri, output_artifact_uri, "
    "attempts, runtime_versions_json, tuning_job_name, stop_requested"
)
_TASK_COLUMNS = (
    "task_id, kind, job_name, state, attempt, worker_id, lease_expires, not_before, outcome, "
    "max_leased"
)


def spec_to_json(spec: TrainingJobSpec) -> str:
    """The spec as JSON text (the stored form)."""
    values = {
        "entry_point": spec.entry_point,
        "source_uri": spec.source_uri,
        "hyperparameters": dict(spec.hyperparameters),
        "channels": [asdict(channel) for channel in spec.channels],
        "metric_definitions": [asdict(definition) for definition in spec.metric_definitions],
        "environment": dict(spec.environment),
        "max_runtime_seconds": spec.max_runtime_seconds,
        "output_uri": spec.output_uri,
        "shell_compat": spec.shell_compat,
    }
    return json.dumps(values, sort_keys=True)


def spec_from_json(text: str) -> TrainingJobSpec:
    """The inverse of `spec_to_json`; unknown keys (from a newer schema) are ignored."""
    values: dict[str, Any] = json.loads(text)
    return TrainingJobSpec(
        entry_point=values["entry_point"],
        source_uri=values["source_uri"],
        hyperparameters=dict(values.get("hyperparameters", {})),
        channels=tuple(Channel(**channel) for channel in values.get("channels", ())),
        metric_definitions=tuple(
            MetricDefinition(**definition) for definition in values.get("metric_definitions", ())
        ),
        environment=dict(values.get("environment", {})),
        max_runtime_seconds=int(values.get("max_runtime_seconds", 0)),
        output_uri=values.get("output_uri", ""),
        shell_compat=bool(values.get("shell_compat", False)),
    )


class ControlStore:
    """SQLite-backed state of the control. Thread-safe: one connection behind one lock."""

    def __init__(self, path: Path) -> None:
        """Opens (creating if needed) the database at `path` and applies pending migrations."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so DDL is transactional too.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        """Closes the connection."""
        with self._lock:
            self._conn.close()

    # ----------------------------------------------------------------- transactions, schema

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Runs the block atomically; nested blocks join the outermost one.

        Yields:
            The connection, for the store's own queries.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
        for version, statements in enumerate(MIGRATIONS, start=1):
            with self.transaction() as conn:
                if conn.execute(
                    "SELECT 1 FROM schema_version WHERE version = ?", (version,)
                ).fetchone():
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )

    def schema_version(self) -> int:
        """The highest migration applied."""
        with self.transaction() as conn:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def pragma(self, name: str) -> Any:
        """The value of one PRAGMA (for checks such as journal_mode)."""
        with self.transaction() as conn:
            return conn.execute(f"PRAGMA {name}").fetchone()[0]

    # ----------------------------------------------------------------- training jobs

    def insert_training_job(self, job: TrainingJob) -> None:
        """Stores a new job with its first transitions.

        Raises:
            AlreadyExists: when a job with this name exists.
        """
        with self.transaction() as conn:
            try:
                conn.execute(
                    f"INSERT INTO training_jobs ({_JOB_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _job_row(job),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"training job {job.name!r} already exists") from None
            for transition in job.transitions:
                self.append_transition(
                    job.name, transition.status, transition.start_time, transition.message
                )

    def update_training_job(self, job: TrainingJob) -> None:
        """Writes the job's mutable columns (not its transitions, logs or metrics)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE training_jobs SET status = ?, secondary_status = ?, failure_reason = ?, "
                "training_start_time = ?, training_end_time = ?, model_artifact_uri = ?, "
                "output_artifact_uri = ?, attempts = ?, runtime_versions_json = ?, "
                "stop_requested = ? WHERE name = ?",
                (
                    job.status.value,
                    job.secondary_status,
                    job.failure_reason,
                    job.training_start_time,
                    job.training_end_time,
                    job.model_artifact_uri,
                    job.output_artifact_uri,
                    job.attempts,
                    json.dumps(asdict(job.runtime_versions)),
                    int(job.stop_requested),
                    job.name,
                ),
            )

    def training_job_exists(self, name: str) -> bool:
        """True when a job named `name` is stored."""
        with self.transaction() as conn:
            row = conn.execute("SELECT 1 FROM training_jobs WHERE name = ?", (name,)).fetchone()
        return row is not None

    def get_training_job(self, name: str) -> TrainingJob | None:
        """The job with its transitions and final metrics, or None."""
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM training_jobs WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else self._job_from_row(conn, row)

    def list_training_jobs(
        self,
        *,
        status: TrainingJobStatus | None,
        name_prefix: str,
        tuning_job_name: str,
        before_id: int | None,
        limit: int,
    ) -> list[tuple[int, TrainingJob]]:
        """Jobs newest first with their row ids (the paging cursor), filtered.

        Args:
            status: only this status, or all.
            name_prefix: only names starting with it (literal, case-sensitive).
            tuning_job_name: only jobs of this tuning job; empty for all.
            before_id: only rows older than this id (the previous page's last).
            limit: at most this many.
        """
        clauses: list[str] = ["1 = 1"]
        params: list[object] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if name_prefix:
            clauses.append("substr(name, 1, ?) = ?")
            params += [len(name_prefix), name_prefix]
        if tuning_job_name:
            clauses.append("tuning_job_name = ?")
            params.append(tuning_job_name)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT id, {_JOB_COLUMNS} FROM training_jobs WHERE {' AND '.join(clauses)} "
                "ORDER BY id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [(row["id"], self._job_from_row(conn, row)) for row in rows]

    def append_transition(self, job_name: str, status: str, now: float, message: str) -> None:
        """Ends the current secondary-status transition at `now` and starts a new one."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE training_job_transitions SET end_time = ? "
                "WHERE job_name = ? AND end_time IS NULL",
                (now, job_name),
            )
            conn.execute(
                "INSERT INTO training_job_transitions "
                "(job_name, position, status, start_time, end_time, message) VALUES "
                "(?, (SELECT COUNT(*) FROM training_job_transitions WHERE job_name = ?), "
                "?, ?, NULL, ?)",
                (job_name, job_name, status, now, message),
            )

    def end_transitions(self, job_name: str, now: float) -> None:
        """Ends the current transition (a terminal status has no successor)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE training_job_transitions SET end_time = ? "
                "WHERE job_name = ? AND end_time IS NULL",
                (now, job_name),
            )

    def append_log_lines(self, job_name: str, lines: Sequence[WorkerLogLine]) -> int:
        """Appends lines with the next sequence numbers; returns how many were added."""
        if not lines:
            return 0
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(sequence) + 1, 0) FROM training_job_logs WHERE job_name = ?",
                (job_name,),
            ).fetchone()
            first = int(row[0])
            conn.executemany(
                "INSERT INTO training_job_logs (job_name, sequence, timestamp, stream, text) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (job_name, first + offset, line.timestamp, line.stream, line.text)
                    for offset, line in enumerate(lines)
                ],
            )
        return len(lines)

    def append_attempt_log_lines(
        self,
        job_name: str,
        task_id: str,
        attempt: int,
        log_offset: int | None,
        lines: Sequence[WorkerLogLine],
    ) -> int:
        """Appends an attempt's lines, dropping those a re-sent report already delivered.

        `log_offset` is how many lines of this attempt the worker had delivered before
        `lines[0]`; None (a worker that does not count) appends everything.
        """
        if log_offset is None:
            return self.append_log_lines(job_name, lines)
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT lines_received FROM task_log_progress WHERE task_id = ? AND attempt = ?",
                (task_id, attempt),
            ).fetchone()
            received = int(row[0]) if row else 0
            fresh = lines[max(0, received - log_offset) :]
            conn.execute(
                "INSERT INTO task_log_progress (task_id, attempt, lines_received) "
                "VALUES (?, ?, ?) ON CONFLICT (task_id, attempt) "
                "DO UPDATE SET lines_received = MAX(lines_received, excluded.lines_received)",
                (task_id, attempt, log_offset + len(lines)),
            )
            return self.append_log_lines(job_name, fresh)

    def read_log_lines(self, job_name: str, from_sequence: int, limit: int) -> list[LogLine]:
        """Up to `limit` lines with sequence ≥ `from_sequence`, in order."""
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT sequence, timestamp, stream, text FROM training_job_logs "
                "WHERE job_name = ? AND sequence >= ? ORDER BY sequence LIMIT ?",
                (job_name, from_sequence, limit),
            ).fetchall()
        return [LogLine(r["sequence"], r["timestamp"], r["stream"], r["text"]) for r in rows]

    def record_metrics(self, job_name: str, samples: Sequence[MetricValue]) -> None:
        """Keeps the latest sample per metric name (a later timestamp wins; ties: arrival)."""
        if not samples:
            return
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO training_job_metrics (job_name, name, value, timestamp) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (job_name, name) DO UPDATE SET "
                "value = excluded.value, timestamp = excluded.timestamp "
                "WHERE excluded.timestamp >= training_job_metrics.timestamp",
                [(job_name, s.name, s.value, s.timestamp) for s in samples],
            )

    def _job_from_row(self, conn: sqlite3.Connection, row: sqlite3.Row) -> TrainingJob:
        name = row["name"]
        transitions = tuple(
            StatusTransition(r["status"], r["start_time"], r["end_time"], r["message"])
            for r in conn.execute(
                "SELECT status, start_time, end_time, message FROM training_job_transitions "
                "WHERE job_name = ? ORDER BY position",
                (name,),
            )
        )
        metrics = tuple(
            MetricValue(r["name"], r["value"], r["timestamp"])
            for r in conn.execute(
                "SELECT name, value, timestamp FROM training_job_metrics "
                "WHERE job_name = ? ORDER BY name",
                (name,),
            )
        )
        return TrainingJob(
            name=name,
            spec=spec_from_json(row["spec_json"]),
            status=TrainingJobStatus(row["status"]),
            secondary_status=row["secondary_status"],
            creation_time=row["creation_time"],
            failure_reason=row["failure_reason"],
            training_start_time=row["training_start_time"],
            training_end_time=row["training_end_time"],
            model_artifact_uri=row["model_artifact_uri"],
            output_artifact_uri=row["output_artifact_uri"],
            attempts=row["attempts"],
            runtime_versions=RuntimeVersions(**json.loads(row["runtime_versions_json"])),
            tuning_job_name=row["tuning_job_name"],
            stop_requested=bool(row["stop_requested"]),
            transitions=transitions,
            final_metrics=metrics,
        )

    # ----------------------------------------------------------------- tasks

    def insert_task(self, task: Task) -> None:
        """Adds a task to the queue table."""
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    def oldest_ready_task(self, kinds: Sequence[TaskKind], now: float) -> Task | None:
        """The oldest queued task of one of `kinds` whose backoff has passed and whose job has
        fewer than its `max_leased` tasks leased, or None."""
        if not kinds:
            return None
        marks = ", ".join("?" for _ in kinds)
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks AS queued WHERE state = 'queued' "
                f"AND kind IN ({marks}) AND not_before <= ? AND (max_leased = 0 OR max_leased > "
                "(SELECT COUNT(*) FROM tasks AS leased WHERE leased.job_name = queued.job_name "
                "AND leased.kind = queued.kind AND leased.state = 'leased')) ORDER BY seq LIMIT 1",
                (*[kind.value for kind in kinds], now),
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


def _job_row(job: TrainingJob) -> tuple[Any, ...]:
    return (
        job.name,
        spec_to_json(job.spec),
        job.status.value,
        job.secondary_status,
        job.failure_reason,
        job.creation_time,
        job.training_start_time,
        job.training_end_time,
        job.model_artifact_uri,
        job.output_artifact_uri,
        job.attempts,
        json.dumps(asdict(job.runtime_versions)),
        job.tuning_job_name,
        int(job.stop_requested),
    )


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
    )
