"""The training-job tables (jobs, status transitions, log lines, final metrics) as queries.

`TrainingJobTables` adds them to a `Database`; every method runs in its transaction, so it joins
the caller's when there is one. The spec is stored as JSON (`spec_to_json`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from services.control.db.database import Database
from services.control.dispatch.tasks import WorkerLogLine
from services.control.training.values import (
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
        "source_sha256": spec.source_sha256,
        "framework_version": spec.framework_version,
        "script_runtime": spec.script_runtime,
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
        source_sha256=str(values.get("source_sha256", "")),
        framework_version=values.get("framework_version", ""),
        script_runtime=values.get("script_runtime", ""),
    )


class TrainingJobTables(Database):
    """Queries of the training-job tables."""

    def insert_training_job(
        self, job: TrainingJob, source_key: str = "", output_prefix: str = ""
    ) -> None:
        """Stores a new job with its first transitions.

        `source_key` is its bundle's key, `output_prefix` the key prefix its archives go to.

        Raises:
            AlreadyExists: when a job with this name exists.
        """
        with self.transaction() as conn:
            try:
                conn.execute(
                    f"INSERT INTO training_jobs ({_JOB_COLUMNS}, source_key, output_prefix) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_job_row(job), source_key, output_prefix),
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

    def training_job_bound_to(self, source_key: str) -> str | None:
        """The name of a job whose source bundle is at `source_key`, or None."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT name FROM training_jobs WHERE source_key = ? LIMIT 1", (source_key,)
            ).fetchone()
        return None if row is None else str(row["name"])

    def training_job_with_output_at(self, key: str) -> str | None:
        """The name of a job whose output prefix is `key` or a folder above it, or None."""
        parts = key.split("/")
        prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
        marks = ", ".join("?" * len(prefixes))
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT name FROM training_jobs WHERE output_prefix IN ({marks}) LIMIT 1",
                prefixes,
            ).fetchone()
        return None if row is None else str(row["name"])

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
