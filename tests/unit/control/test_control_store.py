"""ControlStore: schema migrations, durability pragmas, transactions, logs and metrics."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from services.control.db.migrations import MIGRATIONS
from services.control.dispatch.tasks import WorkerLogLine
from services.control.state import ControlStore
from services.control.training.store import spec_from_json, spec_to_json
from services.control.training.values import (
    Channel,
    MetricDefinition,
    MetricValue,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
)
from services.runtime.errors import AlreadyExists


def _job(name: str) -> TrainingJob:
    return TrainingJob(
        name=name,
        spec=TrainingJobSpec(entry_point="train.py", source_uri="store://s.tar.gz"),
        status=TrainingJobStatus.IN_PROGRESS,
        secondary_status="Starting",
        creation_time=1.0,
    )


def test_migrations_apply_once_and_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    ControlStore(path).close()
    reopened = ControlStore(path)
    try:
        assert reopened.schema_version() == len(MIGRATIONS)
        with reopened.transaction() as conn:
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
    finally:
        reopened.close()


def test_wal_and_full_sync_are_on(store: ControlStore) -> None:
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL


def test_an_exception_rolls_the_whole_nested_transaction_back(store: ControlStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_training_job(_job("a"))
        with store.transaction():
            store.insert_training_job(_job("b"))
        raise RuntimeError("boom")
    assert not store.training_job_exists("a")
    assert not store.training_job_exists("b")


def test_duplicate_name_is_already_exists(store: ControlStore) -> None:
    store.insert_training_job(_job("a"))
    with pytest.raises(AlreadyExists, match="'a' already exists"):
        store.insert_training_job(_job("a"))


def test_log_lines_get_consecutive_sequences(store: ControlStore) -> None:
    store.insert_training_job(_job("a"))
    store.append_log_lines(
        "a", [WorkerLogLine(1.0, "stdout", "one"), WorkerLogLine(2.0, "stderr", "two")]
    )
    store.append_log_lines("a", [WorkerLogLine(3.0, "stdout", "three")])
    lines = store.read_log_lines("a", 1, limit=10)
    assert [(line.sequence, line.text) for line in lines] == [(1, "two"), (2, "three")]


def test_metrics_keep_the_latest_sample_per_name(store: ControlStore) -> None:
    store.insert_training_job(_job("a"))
    store.record_metrics("a", [MetricValue("acc", 0.5, 10.0), MetricValue("acc", 0.7, 11.0)])
    store.record_metrics("a", [MetricValue("acc", 0.1, 9.0)])  # older: ignored
    job = store.get_training_job("a")
    assert job is not None
    assert job.final_metrics == (MetricValue("acc", 0.7, 11.0),)


def test_spec_round_trips_through_json() -> None:
    spec = TrainingJobSpec(
        entry_point="src/train.py",
        source_uri="store://j/source/sourcedir.tar.gz",
        hyperparameters={"a": "1"},
        channels=(Channel("train", "store://d", "text/csv"),),
        metric_definitions=(MetricDefinition("acc", "acc=(\\S+)"),),
        environment={"X": "1"},
        max_runtime_seconds=60,
        output_uri="store://j/output",
        shell_compat=True,
    )
    assert spec_from_json(spec_to_json(spec)) == spec


def test_a_resent_heartbeat_does_not_store_its_lines_twice(store: ControlStore) -> None:
    store.insert_training_job(_job("a"))
    first = [WorkerLogLine(1.0, "stdout", "line 0"), WorkerLogLine(1.1, "stdout", "line 1")]
    store.append_attempt_log_lines("a", "t-1", 1, 0, first)
    # The answer was lost (the control died after committing): the worker sends them again,
    # with the same offset, plus a new line.
    again = [*first, WorkerLogLine(1.2, "stdout", "line 2")]
    store.append_attempt_log_lines("a", "t-1", 1, 0, again)
    store.append_attempt_log_lines("a", "t-1", 1, 3, [WorkerLogLine(1.3, "stdout", "line 3")])
    # A new attempt counts from zero again.
    store.append_attempt_log_lines("a", "t-1", 2, 0, [WorkerLogLine(2.0, "stdout", "retry")])
    texts = [line.text for line in store.read_log_lines("a", 0, 100)]
    assert texts == ["line 0", "line 1", "line 2", "line 3", "retry"]


def test_jobs_stored_before_bundles_were_bound_get_their_keys(tmp_path: Path) -> None:
    # A database as migration 9 left it, holding one job.
    path = tmp_path / "control.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        for version, statements in enumerate(MIGRATIONS[:9], start=1):
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
        spec = TrainingJobSpec(
            entry_point="train.py",
            source_uri="store://jobs/old/source/sourcedir.tar.gz",
            output_uri="store://models/",
        )
        conn.execute(
            "INSERT INTO training_jobs (name, spec_json, status, secondary_status, "
            "creation_time) VALUES ('old', ?, 'Completed', 'Completed', 1.0)",
            (spec_to_json(spec),),
        )
    store = ControlStore(path)
    try:
        assert store.training_job_bound_to("jobs/old/source/sourcedir.tar.gz") == "old"
        assert store.training_job_with_output_at("models/old/output/model.tar.gz") == "old"
        assert store.training_job_with_output_at("models/older/output/model.tar.gz") is None
        assert store.training_job_bound_to("jobs/old/source/other.tar.gz") is None
    finally:
        store.close()
