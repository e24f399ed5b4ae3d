"""Queries of the transform tables (migrations 3 and 7), on the control's database (`ControlStore`).

Every method runs in a `ControlStore` transaction, so it joins the caller's when there is one:
the transform state machine changes a shard, its file and its job together with the task row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from services.control.state import ControlStore
from services.control.transform.values import (
    FileStatus,
    RecordError,
    ShardStatus,
    TransformFile,
    TransformJob,
    TransformJobStatus,
    TransformShard,
    model_from_json,
    model_to_json,
    spec_from_json,
    spec_to_json,
)
from services.runtime.errors import AlreadyExists

_JOB_COLUMNS = (
    "name, spec_json, model_json, status, failure_reason, creation_time, start_time, end_time"
)
_FILE_COLUMNS = (
    "job_name, position, key, input_uri, size, status, failure_reason, output_uri, errors_uri"
)
_SHARD_COLUMNS = (
    "job_name, file_position, shard_index, start_offset, end_offset, task_id, status, "
    "records_done, bytes_done, failure_reason, records_failed"
)


class TransformStore:
    """Stored transform jobs, files, shards and record errors. Thread-safe via `ControlStore`."""

    def __init__(self, store: ControlStore) -> None:
        """Uses `store`'s connection and transactions."""
        self._store = store

    # ----------------------------------------------------------------- jobs

    def insert_job(
        self, job: TransformJob, files: Sequence[TransformFile], shards: Sequence[TransformShard]
    ) -> None:
        """Stores a new job with its files and shards.

        Raises:
            AlreadyExists: a transform job with this name exists.
        """
        with self._store.transaction() as conn:
            try:
                conn.execute(
                    f"INSERT INTO transform_jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.name,
                        spec_to_json(job.spec),
                        model_to_json(job.model),
                        job.status.value,
                        job.failure_reason,
                        job.creation_time,
                        job.start_time,
                        job.end_time,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"transform job {job.name!r} already exists") from None
            conn.executemany(
                f"INSERT INTO transform_files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_file_row(job.name, file) for file in files],
            )
            conn.executemany(
                f"INSERT INTO transform_shards ({_SHARD_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_shard_row(shard) for shard in shards],
            )

    def job_exists(self, name: str) -> bool:
        """True when a transform job named `name` is stored."""
        with self._store.transaction() as conn:
            row = conn.execute("SELECT 1 FROM transform_jobs WHERE name = ?", (name,)).fetchone()
        return row is not None

    def get_job(self, name: str, *, with_files: bool = True) -> TransformJob | None:
        """The job with its shard counts and (unless `with_files` is False) its files, or None."""
        with self._store.transaction() as conn:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM transform_jobs WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            return self._job_from_row(conn, row, with_files)

    def update_job(self, job: TransformJob) -> None:
        """Writes the job's status, failure reason and times."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE transform_jobs SET status = ?, failure_reason = ?, start_time = ?, "
                "end_time = ? WHERE name = ?",
                (job.status.value, job.failure_reason, job.start_time, job.end_time, job.name),
            )

    def list_jobs(
        self,
        *,
        status: TransformJobStatus | None,
        name_prefix: str,
        before_id: int | None,
        limit: int,
    ) -> list[tuple[int, TransformJob]]:
        """Jobs newest first with their row ids (the paging cursor), without their files."""
        clauses = ["1 = 1"]
        params: list[object] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if name_prefix:
            clauses.append("substr(name, 1, ?) = ?")
            params += [len(name_prefix), name_prefix]
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        with self._store.transaction() as conn:
            rows = conn.execute(
                f"SELECT id, {_JOB_COLUMNS} FROM transform_jobs WHERE {' AND '.join(clauses)} "
                "ORDER BY id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [(row["id"], self._job_from_row(conn, row, False)) for row in rows]

    def active_jobs(self) -> list[TransformJob]:
        """Jobs InProgress or Stopping, oldest first, without their files."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM transform_jobs WHERE status IN (?, ?) ORDER BY id",
                (TransformJobStatus.IN_PROGRESS.value, TransformJobStatus.STOPPING.value),
            ).fetchall()
            return [self._job_from_row(conn, row, False) for row in rows]

    def _job_from_row(
        self, conn: sqlite3.Connection, row: sqlite3.Row, with_files: bool
    ) -> TransformJob:
        name = row["name"]
        counts = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(status = ?), 0) FROM transform_shards "
            "WHERE job_name = ?",
            (ShardStatus.DONE.value, name),
        ).fetchone()
        return TransformJob(
            name=name,
            spec=spec_from_json(row["spec_json"]),
            model=model_from_json(row["model_json"]),
            status=TransformJobStatus(row["status"]),
            creation_time=row["creation_time"],
            failure_reason=row["failure_reason"],
            start_time=row["start_time"],
            end_time=row["end_time"],
            files=tuple(self._files(conn, name)) if with_files else (),
            shards_total=int(counts[0]),
            shards_done=int(counts[1]),
        )

    # ----------------------------------------------------------------- files

    def files_of_job(self, job_name: str) -> list[TransformFile]:
        """The job's files in input order, with progress summed over their shards."""
        with self._store.transaction() as conn:
            return self._files(conn, job_name)

    def get_file(self, job_name: str, position: int) -> TransformFile:
        """One file of a job, with its progress."""
        with self._store.transaction() as conn:
            return self._files(conn, job_name, position)[0]

    def update_file(self, job_name: str, file: TransformFile) -> None:
        """Writes a file's status, failure reason and output URIs."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE transform_files SET status = ?, failure_reason = ?, output_uri = ?, "
                "errors_uri = ? WHERE job_name = ? AND position = ?",
                (
                    file.status.value,
                    file.failure_reason,
                    file.output_uri,
                    file.errors_uri,
                    job_name,
                    file.position,
                ),
            )

    def files_in_status(self, status: FileStatus) -> list[tuple[str, int]]:
        """(job name, position) of every file in `status`, oldest job first."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT f.job_name, f.position FROM transform_files AS f "
                "JOIN transform_jobs AS j ON j.name = f.job_name "
                "WHERE f.status = ? ORDER BY j.id, f.position",
                (status.value,),
            ).fetchall()
        return [(row[0], int(row[1])) for row in rows]

    def _files(
        self, conn: sqlite3.Connection, job_name: str, position: int | None = None
    ) -> list[TransformFile]:
        where = "f.job_name = ?" + ("" if position is None else " AND f.position = ?")
        params: tuple[Any, ...] = (job_name,) if position is None else (job_name, position)
        rows = conn.execute(
            "SELECT f.position, f.key, f.input_uri, f.size, f.status, f.failure_reason, "
            "f.output_uri, f.errors_uri, "
            "(SELECT COALESCE(SUM(s.records_done), 0) FROM transform_shards AS s "
            " WHERE s.job_name = f.job_name AND s.file_position = f.position) AS records_done, "
            "(SELECT COALESCE(SUM(s.bytes_done), 0) FROM transform_shards AS s "
            " WHERE s.job_name = f.job_name AND s.file_position = f.position) AS bytes_done, "
            "(SELECT COALESCE(SUM(s.records_failed), 0) FROM transform_shards AS s "
            " WHERE s.job_name = f.job_name AND s.file_position = f.position) "
            "+ (SELECT COUNT(*) FROM transform_record_errors AS e "
            " WHERE e.job_name = f.job_name AND e.file_position = f.position) AS records_failed "
            f"FROM transform_files AS f WHERE {where} ORDER BY f.position",
            params,
        ).fetchall()
        return [
            TransformFile(
                position=row["position"],
                key=row["key"],
                input_uri=row["input_uri"],
                size=row["size"],
                status=FileStatus(row["status"]),
                failure_reason=row["failure_reason"],
                output_uri=row["output_uri"],
                errors_uri=row["errors_uri"],
                records_done=int(row["records_done"]),
                bytes_done=int(row["bytes_done"]),
                records_failed=int(row["records_failed"]),
            )
            for row in rows
        ]

    # ----------------------------------------------------------------- shards

    def shard_of_task(self, task_id: str) -> TransformShard | None:
        """The shard a task scores, or None."""
        with self._store.transaction() as conn:
            row = conn.execute(
                f"SELECT {_SHARD_COLUMNS} FROM transform_shards WHERE task_id = ?", (task_id,)
            ).fetchone()
        return None if row is None else _shard_from_row(row)

    def shards_of_file(self, job_name: str, position: int) -> list[TransformShard]:
        """A file's shards in index order."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_SHARD_COLUMNS} FROM transform_shards "
                "WHERE job_name = ? AND file_position = ? ORDER BY shard_index",
                (job_name, position),
            ).fetchall()
        return [_shard_from_row(row) for row in rows]

    def shards_of_job(self, job_name: str) -> list[TransformShard]:
        """Every shard of a job, by file then index."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_SHARD_COLUMNS} FROM transform_shards WHERE job_name = ? "
                "ORDER BY file_position, shard_index",
                (job_name,),
            ).fetchall()
        return [_shard_from_row(row) for row in rows]

    def update_shard(self, shard: TransformShard) -> None:
        """Writes a shard's status, progress, bad-record count and failure reason."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE transform_shards SET status = ?, records_done = ?, bytes_done = ?, "
                "failure_reason = ?, records_failed = ? WHERE task_id = ?",
                (
                    shard.status.value,
                    shard.records_done,
                    shard.bytes_done,
                    shard.failure_reason,
                    shard.records_failed,
                    shard.task_id,
                ),
            )

    def leased_task_count(self, job_name: str, *, excluding: str = "") -> int:
        """How many of the job's transform tasks a worker holds now (other than `excluding`)."""
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM tasks WHERE job_name = ? AND kind = 'transform' "
                "AND state = 'leased' AND task_id != ?",
                (job_name, excluding),
            ).fetchone()
        return int(row[0])

    # ----------------------------------------------------------------- record errors

    def replace_record_errors(self, shard: TransformShard, errors: Iterable[RecordError]) -> None:
        """Stores the bad records a shard reported inline, replacing any of an earlier attempt.

        Only older workers report them inline (newer ones upload them, see
        `TransformShard.records_failed`); an empty `errors` clears what an earlier attempt
        stored.
        """
        with self._store.transaction() as conn:
            conn.execute(
                "DELETE FROM transform_record_errors "
                "WHERE job_name = ? AND file_position = ? AND shard_index = ?",
                (shard.job_name, shard.file_position, shard.index),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO transform_record_errors "
                "(job_name, file_position, shard_index, line, message) VALUES (?, ?, ?, ?, ?)",
                [
                    (shard.job_name, shard.file_position, shard.index, error.line, error.message)
                    for error in errors
                ],
            )

    def record_errors_of_shard(self, shard: TransformShard) -> list[RecordError]:
        """The bad records a shard reported inline (older workers), in line order."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT line, message FROM transform_record_errors "
                "WHERE job_name = ? AND file_position = ? AND shard_index = ? ORDER BY line",
                (shard.job_name, shard.file_position, shard.index),
            ).fetchall()
        return [RecordError(int(row[0]), row[1]) for row in rows]


def _file_row(job_name: str, file: TransformFile) -> tuple[Any, ...]:
    return (
        job_name,
        file.position,
        file.key,
        file.input_uri,
        file.size,
        file.status.value,
        file.failure_reason,
        file.output_uri,
        file.errors_uri,
    )


def _shard_row(shard: TransformShard) -> tuple[Any, ...]:
    return (
        shard.job_name,
        shard.file_position,
        shard.index,
        shard.start,
        shard.end,
        shard.task_id,
        shard.status.value,
        shard.records_done,
        shard.bytes_done,
        shard.failure_reason,
        shard.records_failed,
    )


def _shard_from_row(row: sqlite3.Row) -> TransformShard:
    return TransformShard(
        job_name=row["job_name"],
        file_position=row["file_position"],
        index=row["shard_index"],
        start=row["start_offset"],
        end=row["end_offset"],
        task_id=row["task_id"],
        status=ShardStatus(row["status"]),
        records_done=row["records_done"],
        bytes_done=row["bytes_done"],
        failure_reason=row["failure_reason"],
        records_failed=row["records_failed"],
    )
