"""Replica runtime reports: compared with the training runtime, an event when they differ."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.hosting.endpoints import Endpoints
from services.control.hosting.model_registry import ModelRegistry
from services.control.hosting.model_values import Model
from services.control.hosting.runtime_versions import ReplicaRuntimes
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.control.training.values import (
    RuntimeVersions,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
)
from services.runtime.errors import NotFound
from tests.unit.control.conftest import put_bytes
from tests.unit.control.test_control_endpoints import ScriptedBackend

TRAINED = RuntimeVersions(python="3.11.7", sklearn="1.9.1", numpy="2.4.6", joblib="1.6.0")


@pytest.fixture
def hosting(
    store: ControlStore, artifacts: LocalArtifactStore
) -> Iterator[tuple[Endpoints, ModelRegistry]]:
    put_bytes(artifacts, "m/model.tar.gz", b"x")
    store.insert_training_job(
        TrainingJob(
            name="job",
            spec=TrainingJobSpec(entry_point="train.py", source_uri="store://s.tar.gz"),
            status=TrainingJobStatus.COMPLETED,
            secondary_status="Completed",
            creation_time=1.0,
            runtime_versions=TRAINED,
        )
    )
    models = ModelRegistry(store, artifacts)
    models.create(
        Model("trained", "store://m/model.tar.gz", "inference.py", training_job_name="job")
    )
    models.create(Model("external", "store://m/model.tar.gz", "inference.py"))
    metrics = ControlMetrics(prometheus_client.CollectorRegistry())
    endpoints = Endpoints(store, models, ScriptedBackend(), metrics, max_replicas=4)
    endpoints.create("ep", "trained", 1, None)
    endpoints.create("other", "external", 1, None)
    yield endpoints, models
    endpoints.close()


def _events(endpoints: Endpoints, name: str = "ep") -> list[str]:
    return [event.message for event in endpoints.describe(name).events]


def test_the_same_runtime_records_nothing(hosting: tuple[Endpoints, ModelRegistry]) -> None:
    endpoints, models = hosting
    before = _events(endpoints)
    assert ReplicaRuntimes(endpoints, models).report("ep", "r-1", "trained", TRAINED) == ""
    assert _events(endpoints) == before


def test_another_scikit_learn_is_an_endpoint_event(
    hosting: tuple[Endpoints, ModelRegistry],
) -> None:
    endpoints, models = hosting
    serving = RuntimeVersions(python="3.11.9", sklearn="1.8.0", numpy="2.4.6", joblib="1.6.0")
    message = ReplicaRuntimes(endpoints, models).report("ep", "r-2", "trained", serving)
    assert message.startswith(
        "replica r-2 serves model trained with scikit-learn 1.8.0 (trained with 1.9.1); pin"
    )
    assert _events(endpoints)[-1] == message


def test_a_model_deleted_while_served_is_still_compared(
    hosting: tuple[Endpoints, ModelRegistry],
) -> None:
    endpoints, models = hosting
    models.delete("trained")  # the endpoint keeps serving it
    serving = RuntimeVersions(python="3.11.7", sklearn="1.9.1", numpy="2.3.0", joblib="1.6.0")
    message = ReplicaRuntimes(endpoints, models).report("ep", "r-3", "trained", serving)
    assert "numpy 2.3.0 (trained with 2.4.6)" in message


def test_unknown_training_runtime_or_endpoint(hosting: tuple[Endpoints, ModelRegistry]) -> None:
    endpoints, models = hosting
    runtimes = ReplicaRuntimes(endpoints, models)
    assert runtimes.report("other", "r-1", "external", RuntimeVersions(sklearn="0.1")) == ""
    with pytest.raises(NotFound):
        runtimes.report("nope", "r-1", "trained", TRAINED)
