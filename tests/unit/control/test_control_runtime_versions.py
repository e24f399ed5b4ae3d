"""Replica runtime reports: compared with the training runtime, an event when they differ;
the predict path each replica reports is shown per replica, a refused fast path is an event."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.backends import ReplicaState
from services.control.hosting.convert import endpoint_to_pb
from services.control.hosting.endpoint_store import EndpointStore
from services.control.hosting.endpoint_values import PredictPath
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
from skmaker.v1 import model_pb2
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
    backend = ScriptedBackend()
    backend.set(
        "ep",
        ("r-1", "trained", ReplicaState.SERVING),
        ("r-2", "trained", ReplicaState.SERVING),
        ("r-3", "trained", ReplicaState.STARTING),
    )
    endpoints = Endpoints(store, models, backend, metrics, max_replicas=4)
    endpoints.create("ep", "trained", 1, None)
    endpoints.create("other", "external", 1, None)
    yield endpoints, models
    endpoints.close()


def _events(endpoints: Endpoints, name: str = "ep") -> list[str]:
    return [event.message for event in endpoints.describe(name).events]


def test_the_same_runtime_records_nothing(hosting: tuple[Endpoints, ModelRegistry]) -> None:
    endpoints, models = hosting
    before = _events(endpoints)
    assert ReplicaRuntimes(endpoints, models).report("ep", "r-1", "trained", TRAINED) == ("", "")
    assert _events(endpoints) == before


def test_another_scikit_learn_is_an_endpoint_event(
    hosting: tuple[Endpoints, ModelRegistry],
) -> None:
    endpoints, models = hosting
    serving = RuntimeVersions(python="3.11.9", sklearn="1.8.0", numpy="2.4.6", joblib="1.6.0")
    message, _ = ReplicaRuntimes(endpoints, models).report("ep", "r-2", "trained", serving)
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
    message, _ = ReplicaRuntimes(endpoints, models).report("ep", "r-3", "trained", serving)
    assert "numpy 2.3.0 (trained with 2.4.6)" in message


def test_unknown_training_runtime_or_endpoint(hosting: tuple[Endpoints, ModelRegistry]) -> None:
    endpoints, models = hosting
    runtimes = ReplicaRuntimes(endpoints, models)
    assert runtimes.report("other", "r-1", "external", RuntimeVersions(sklearn="0.1")) == ("", "")
    with pytest.raises(NotFound):
        runtimes.report("nope", "r-1", "trained", TRAINED)


REFUSED = PredictPath(
    "trained",
    "scikit-learn",
    "onnxruntime: values differ from scikit-learn's by up to 0.0078 (> 1e-06)",
    refused=True,
)
FAST = PredictPath("trained", "onnxruntime", "verified on 2401 rows", max_rows=2401)


def _replica_paths(endpoints: Endpoints) -> dict[str, model_pb2.PredictPath | None]:
    described = endpoint_to_pb(endpoints.describe("ep"))
    return {
        replica.id: replica.predict_path if replica.HasField("predict_path") else None
        for replica in described.replicas
    }


def test_each_replica_shows_what_serves_its_predicts(
    hosting: tuple[Endpoints, ModelRegistry],
) -> None:
    endpoints, models = hosting
    runtimes = ReplicaRuntimes(endpoints, models)
    assert runtimes.report("ep", "r-1", "trained", TRAINED, FAST) == ("", "")
    paths = _replica_paths(endpoints)
    assert paths["r-2"] is None and paths["r-3"] is None  # not reported yet
    reported = paths["r-1"]
    assert reported is not None
    assert (reported.name, reported.max_rows, reported.refused) == ("onnxruntime", 2401, False)
    assert reported.reason == "verified on 2401 rows"
    assert not [event for event in _events(endpoints) if "fast path" in event]


def test_a_refused_fast_path_is_one_event_per_model_and_reason(
    hosting: tuple[Endpoints, ModelRegistry],
) -> None:
    endpoints, models = hosting
    runtimes = ReplicaRuntimes(endpoints, models)
    _, refusal = runtimes.report("ep", "r-1", "trained", TRAINED, REFUSED)
    assert refusal == (
        "fast path refused for model trained: onnxruntime: values differ from scikit-learn's "
        "by up to 0.0078 (> 1e-06); scikit-learn serves (replica r-1)"
    )
    assert _events(endpoints)[-1] == refusal
    # A second replica refusing the same model for the same reason is no news.
    assert runtimes.report("ep", "r-2", "trained", TRAINED, REFUSED) == ("", "")
    assert [event for event in _events(endpoints) if "fast path" in event] == [refusal]
    for replica in ("r-1", "r-2"):
        path = _replica_paths(endpoints)[replica]
        assert path is not None and path.refused and path.name == "scikit-learn"
        assert path.reason.startswith("onnxruntime: values differ")


def test_a_gone_replica_no_longer_shows_a_path(
    hosting: tuple[Endpoints, ModelRegistry], store: ControlStore
) -> None:
    endpoints, models = hosting
    ReplicaRuntimes(endpoints, models).report("ep", "r-1", "trained", TRAINED, FAST)
    EndpointStore(store).forget_replica("ep", "r-1")
    assert _replica_paths(endpoints)["r-1"] is None
