"""ModelRegistry validation and lifecycle, and the serving tables of migration 2."""

from __future__ import annotations

import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.backends import RecordedReplica
from services.control.hosting.endpoint_store import MAX_EVENTS_KEPT, EndpointStore
from services.control.hosting.endpoint_values import (
    Endpoint,
    EndpointEvent,
    EndpointStatus,
    ScalingPolicy,
)
from services.control.hosting.model_registry import ModelRegistry
from services.control.hosting.model_values import Model
from services.control.state import ControlStore
from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound
from tests.unit.control.conftest import FakeClock, put_bytes

MODEL_URI = "store://models/iris/model.tar.gz"


@pytest.fixture
def registry(store: ControlStore, artifacts: LocalArtifactStore, clock: FakeClock) -> ModelRegistry:
    put_bytes(artifacts, "models/iris/model.tar.gz", b"not really a tarball")
    return ModelRegistry(store, artifacts, clock=clock)


def _model(**changes: object) -> Model:
    values: dict[str, object] = {
        "name": "iris-tree",
        "model_data_uri": MODEL_URI,
        "entry_point": "inference.py",
    }
    values.update(changes)
    return Model(**values)  # type: ignore[arg-type]


def test_create_describe_list_delete(registry: ModelRegistry, clock: FakeClock) -> None:
    created = registry.create(_model(environment={"SAGEMAKER_PROGRAM": "inference.py"}))
    assert created.creation_time == clock.now
    assert registry.describe("iris-tree") == created
    registry.create(_model(name="other"))
    assert [m.name for m in registry.list("")] == ["other", "iris-tree"]
    assert [m.name for m in registry.list("iris")] == ["iris-tree"]
    registry.delete("iris-tree")
    with pytest.raises(NotFound):
        registry.describe("iris-tree")
    with pytest.raises(NotFound):
        registry.delete("iris-tree")


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"name": "-bad"}, InvalidArgument, "model name"),
        ({"name": "a" * 64}, InvalidArgument, "model name"),
        ({"entry_point": ""}, InvalidArgument, "entry_point is empty"),
        ({"entry_point": "../x.py"}, InvalidArgument, "relative"),
        ({"model_data_uri": ""}, InvalidArgument, "model_data_uri is empty"),
        ({"model_data_uri": "s3://b/k"}, InvalidArgument, "not a store://"),
        ({"model_data_uri": "store://nope/model.tar.gz"}, NotFound, "model_data_uri"),
        ({"source_uri": "store://nope/src.tar.gz"}, NotFound, "source_uri"),
        ({"training_job_name": "never-ran"}, NotFound, "training job"),
        ({"environment": {f"K{i}": "v" for i in range(101)}}, InvalidArgument, "at most 100"),
        ({"environment": {"1BAD": "v"}}, InvalidArgument, "name '1BAD'"),
        ({"environment": {"K": "v" * 1025}}, InvalidArgument, "1024 bytes"),
        ({"environment": {f"K{i}": "v" * 1000 for i in range(40)}}, InvalidArgument, "bytes"),
    ],
)
def test_create_refuses(
    registry: ModelRegistry, changes: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        registry.create(_model(**changes))


def test_names_are_unique(registry: ModelRegistry) -> None:
    registry.create(_model())
    with pytest.raises(AlreadyExists):
        registry.create(_model())


def test_a_model_deleted_while_served_stays_for_its_endpoints_only(
    registry: ModelRegistry, store: ControlStore
) -> None:
    created = registry.create(_model())
    endpoints = EndpointStore(store)
    endpoints.insert(Endpoint("ep", "iris-tree", EndpointStatus.IN_SERVICE, 1, 1.0, 1.0))
    endpoints.insert(Endpoint("other", "m2", EndpointStatus.IN_SERVICE, 1, 1.0, 1.0))
    registry.delete("iris-tree")  # as SageMaker: allowed, the endpoint keeps serving it
    # Gone for users: describe, list and a second delete say so.
    with pytest.raises(NotFound):
        registry.describe("iris-tree")
    assert registry.list("") == []
    with pytest.raises(NotFound):
        registry.delete("iris-tree")
    # Its endpoint's replicas (a scale-out, a replacement) still load it; no other endpoint's.
    assert registry.describe("iris-tree", endpoint_name="ep") == created
    with pytest.raises(NotFound):
        registry.describe("iris-tree", endpoint_name="other")
    assert "model iris-tree deleted" in endpoints.recent_events("ep", 1)[0].message
    # The name stays taken while the endpoint serves the model, and frees once it does not.
    with pytest.raises(AlreadyExists, match="endpoints still serve it"):
        registry.create(_model())
    endpoints.delete("ep")
    with pytest.raises(NotFound):
        registry.describe("iris-tree", endpoint_name="ep")
    assert registry.create(_model()).name == "iris-tree"
    assert [m.name for m in registry.list("")] == ["iris-tree"]


def test_a_model_an_endpoint_may_roll_back_to_stays_for_it(
    registry: ModelRegistry, store: ControlStore
) -> None:
    created = registry.create(_model())
    endpoints = EndpointStore(store)
    endpoints.insert(
        Endpoint(
            "ep",
            "m2",
            EndpointStatus.UPDATING,
            1,
            1.0,
            1.0,
            previous_model_name="iris-tree",
        )
    )
    registry.delete("iris-tree")
    assert registry.describe("iris-tree", endpoint_name="ep") == created


def test_endpoint_rows_round_trip_with_policy_events_and_replicas(store: ControlStore) -> None:
    endpoints = EndpointStore(store)
    policy = ScalingPolicy(min_replicas=1, max_replicas=3, target_value=4.0)
    endpoint = Endpoint(
        "ep",
        "m",
        EndpointStatus.CREATING,
        2,
        1.0,
        1.0,
        address="127.0.0.1:1",
        scaling_policy=policy,
    )
    endpoints.insert(endpoint)
    with pytest.raises(AlreadyExists):
        endpoints.insert(endpoint)
    assert endpoints.get("ep") == endpoint
    for index in range(MAX_EVENTS_KEPT + 5):
        endpoints.append_event("ep", EndpointEvent(float(index), f"event {index}"))
    recent = endpoints.recent_events("ep", 3)
    assert [e.message for e in recent] == [f"event {MAX_EVENTS_KEPT + i}" for i in (2, 3, 4)]
    replica = RecordedReplica("ep", "r-1", "local", "1234", "m", 5.0)
    endpoints.record_replica(replica)
    assert endpoints.recorded_replicas("ep", "local") == [replica]
    assert endpoints.recorded_replicas("ep", "docker") == []
    endpoints.forget_replica("ep", "r-1")
    assert endpoints.recorded_replicas("ep", "local") == []
    endpoints.delete("ep")
    assert endpoints.get("ep") is None
    assert endpoints.recent_events("ep", 10) == []


def test_serving_tables_survive_a_reopen(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = ControlStore(tmp_path / "c.db")
    EndpointStore(first).insert(Endpoint("ep", "m", EndpointStatus.IN_SERVICE, 1, 1.0, 1.0))
    version = first.schema_version()
    first.close()
    second = ControlStore(tmp_path / "c.db")
    try:
        assert second.schema_version() == version >= 2
        stored = EndpointStore(second).get("ep")
        assert stored is not None and stored.status is EndpointStatus.IN_SERVICE
    finally:
        second.close()


def test_a_model_keeps_its_training_jobs_runtime(
    registry: ModelRegistry, store: ControlStore
) -> None:
    from services.control.training.values import (
        RuntimeVersions,
        TrainingJob,
        TrainingJobSpec,
        TrainingJobStatus,
    )

    runtime = RuntimeVersions(python="3.11.7", sklearn="1.9.1", numpy="2.4.6", joblib="1.6.0")
    store.insert_training_job(
        TrainingJob(
            name="trained",
            spec=TrainingJobSpec(entry_point="train.py", source_uri="store://s.tar.gz"),
            status=TrainingJobStatus.COMPLETED,
            secondary_status="Completed",
            creation_time=1.0,
            runtime_versions=runtime,
        )
    )
    assert registry.create(_model(training_job_name="trained")).runtime_versions == runtime
    assert registry.describe("iris-tree").runtime_versions == runtime
    # A model of an artifact trained elsewhere has no known runtime.
    assert registry.create(_model(name="elsewhere")).runtime_versions == RuntimeVersions()


def test_a_transform_snapshot_from_before_model_runtimes_reads_as_not_known() -> None:
    import json

    from services.control.training.values import RuntimeVersions
    from services.control.transform.values import model_from_json, model_to_json

    runtime = RuntimeVersions(python="3.11.7", sklearn="1.9.1", numpy="2.4.6", joblib="1.6.0")
    older = json.loads(
        model_to_json(Model("m", MODEL_URI, "inference.py", runtime_versions=runtime))
    )
    del older["runtime_versions"]  # as stored before migration 8
    assert model_from_json(json.dumps(older)).runtime_versions == RuntimeVersions()
