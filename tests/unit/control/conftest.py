"""Fixtures for the control's domain tests: a store, an artifact store and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.tasks import TaskKind
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.control.training.jobs import TrainingJobs
from services.control.training.values import Channel, TrainingJobSpec
from tests.harness import source_bundle
from tests.unit.control.helpers import FakeClock, put_bytes


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ControlStore]:
    opened = ControlStore(tmp_path / "control.db")
    yield opened
    opened.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    store = LocalArtifactStore(tmp_path / "artifacts", max_upload_bytes=1024 * 1024)
    put_bytes(store, "job/source/sourcedir.tar.gz", source_bundle({"train.py": b"print(1)\n"}))
    put_bytes(store, "data/train/iris.csv", b"1,2,3\n")
    return store


@pytest.fixture
def metrics() -> ControlMetrics:
    return ControlMetrics(prometheus_client.CollectorRegistry())


@pytest.fixture
def scheduler(store: ControlStore, metrics: ControlMetrics, clock: FakeClock) -> Scheduler:
    return Scheduler(
        store,
        metrics,
        lease_s=10.0,
        heartbeat_interval_s=2.0,
        max_attempts=3,
        retry_backoff_s=1.0,
        clock=clock,
    )


@pytest.fixture
def jobs(
    store: ControlStore,
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    metrics: ControlMetrics,
    clock: FakeClock,
) -> TrainingJobs:
    training_jobs = TrainingJobs(store, scheduler, artifacts, metrics, clock=clock)
    scheduler.register(TaskKind.TRAINING, training_jobs)
    return training_jobs


@pytest.fixture
def spec() -> TrainingJobSpec:
    return TrainingJobSpec(
        entry_point="train.py",
        source_uri="store://job/source/sourcedir.tar.gz",
        hyperparameters={"max_leaf_nodes": "30"},
        channels=(Channel("train", "store://data/train"),),
    )
