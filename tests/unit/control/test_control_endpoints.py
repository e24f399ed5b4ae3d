"""Endpoint status machine over a scripted `ReplicaBackend` (real processes: integration tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import prometheus_client
import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.backends import ReplicaBackend, ReplicaInfo, ReplicaState
from services.control.hosting.endpoint_values import EndpointStatus, ScalingPolicy
from services.control.hosting.endpoints import Endpoints
from services.control.hosting.model_registry import ModelRegistry
from services.control.hosting.model_values import Model
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from tests.unit.control.conftest import put_bytes

SERVING, STARTING, FAILED = ReplicaState.SERVING, ReplicaState.STARTING, ReplicaState.FAILED


class ScriptedBackend:
    """A `ReplicaBackend` whose replicas the test sets; records every call."""

    name = "scripted"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.targets: dict[str, tuple[str, int]] = {}
        self.listed: dict[str, list[ReplicaInfo]] = {}
        self.calls: list[tuple[object, ...]] = []
        self.deleted: list[str] = []

    def set(self, endpoint: str, *replicas: tuple[str, str, ReplicaState]) -> None:
        with self.lock:
            self.listed[endpoint] = [
                ReplicaInfo(rid, model, state, failure_reason="model_fn is missing")
                for rid, model, state in replicas
            ]

    def start(self, control_address: str) -> None:
        self.calls.append(("start", control_address))

    def ensure(self, endpoint: str, model: str, desired_replicas: int, address: str = "") -> str:
        self.calls.append(("ensure", endpoint, model, desired_replicas))
        with self.lock:
            self.targets[endpoint] = (model, desired_replicas)
        return address or "127.0.0.1:9999"

    def scale(self, endpoint: str, desired_replicas: int, remove_first: Sequence[str] = ()) -> None:
        self.calls.append(("scale", endpoint, desired_replicas))

    def replicas(self, endpoint: str) -> list[ReplicaInfo]:
        with self.lock:
            return list(self.listed.get(endpoint, []))

    def drain_replica(self, endpoint: str, replica_id: str) -> None:
        self.calls.append(("drain", endpoint, replica_id))

    def delete(self, endpoint: str) -> None:
        self.deleted.append(endpoint)
        with self.lock:
            self.listed.pop(endpoint, None)

    def begin_shutdown(self) -> None:
        pass

    def close(self) -> None:
        self.calls.append(("close",))


def _backend_type_check(backend: ScriptedBackend) -> ReplicaBackend:
    return backend  # mypy: the scripted backend implements the Protocol


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


def _build_endpoints(
    store: ControlStore, artifacts: LocalArtifactStore, backend: ScriptedBackend
) -> Endpoints:
    put_bytes(artifacts, "m/model.tar.gz", b"x")
    models = ModelRegistry(store, artifacts)
    for name in ("m1", "m2"):
        models.create(Model(name, "store://m/model.tar.gz", "inference.py"))
    metrics = ControlMetrics(prometheus_client.CollectorRegistry())
    return Endpoints(store, models, backend, metrics, max_replicas=4, reconcile_interval_s=0.01)


@pytest.fixture
def endpoints(
    store: ControlStore, artifacts: LocalArtifactStore, backend: ScriptedBackend
) -> Iterator[Endpoints]:
    service = _build_endpoints(store, artifacts, backend)
    service.start()
    yield service
    service.close()


@pytest.fixture
def stepped(
    store: ControlStore, artifacts: LocalArtifactStore, backend: ScriptedBackend
) -> Iterator[Endpoints]:
    """Endpoints whose reconciler runs only when the test calls `step()`."""
    service = _build_endpoints(store, artifacts, backend)
    yield service
    service.close()


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


def _status(endpoints: Endpoints, name: str = "ep") -> EndpointStatus:
    return endpoints.describe(name).endpoint.status


def test_creating_then_in_service_once_every_replica_serves(
    stepped: Endpoints, backend: ScriptedBackend
) -> None:
    view = stepped.create("ep", "m1", 2, None)
    assert view.endpoint.status is EndpointStatus.CREATING
    assert view.endpoint.address == "127.0.0.1:9999"
    assert ("ensure", "ep", "m1", 2) in backend.calls
    backend.set("ep", ("r-1", "m1", SERVING), ("r-2", "m1", STARTING))
    stepped.step()
    assert _status(stepped) is EndpointStatus.CREATING  # starting replicas are no capacity
    backend.set("ep", ("r-1", "m1", SERVING), ("r-2", "m1", SERVING))
    stepped.step()
    assert _status(stepped) is EndpointStatus.IN_SERVICE
    messages = [event.message for event in stepped.describe("ep").events]
    assert messages[0].startswith("endpoint created") and messages[-1].startswith("InService")


def test_a_replica_that_cannot_load_fails_a_creating_endpoint(
    endpoints: Endpoints, backend: ScriptedBackend
) -> None:
    endpoints.create("ep", "m1", 1, None)
    backend.set("ep", ("r-1", "m1", FAILED))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.FAILED)
    assert "model_fn" in endpoints.describe("ep").endpoint.failure_reason
    _wait_for(lambda: backend.deleted == ["ep"])  # replicas released, row kept
    with pytest.raises(FailedPrecondition):
        endpoints.update("ep", replicas=2)
    endpoints.delete("ep")  # only delete is allowed on Failed
    _wait_for(lambda: not endpoints.list(""))


def test_lost_replica_shows_system_updating_until_replaced(
    endpoints: Endpoints, backend: ScriptedBackend
) -> None:
    endpoints.create("ep", "m1", 2, None)
    backend.set("ep", ("r-1", "m1", SERVING), ("r-2", "m1", SERVING))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.IN_SERVICE)
    backend.set("ep", ("r-1", "m1", SERVING), ("r-3", "m1", STARTING))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.SYSTEM_UPDATING)
    backend.set("ep", ("r-1", "m1", SERVING), ("r-3", "m1", SERVING))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.IN_SERVICE)


def test_model_update_completes_only_when_old_replicas_are_gone(
    stepped: Endpoints, backend: ScriptedBackend
) -> None:
    stepped.create("ep", "m1", 1, None)
    backend.set("ep", ("r-1", "m1", SERVING))
    stepped.step()
    assert _status(stepped) is EndpointStatus.IN_SERVICE
    view = stepped.update("ep", model_name="m2")
    assert view.endpoint.status is EndpointStatus.UPDATING
    assert backend.targets["ep"] == ("m2", 1)
    backend.set("ep", ("r-1", "m1", SERVING), ("r-2", "m2", SERVING))
    stepped.step()
    assert _status(stepped) is EndpointStatus.UPDATING  # the old model still serves
    backend.set("ep", ("r-1", "m1", ReplicaState.DRAINING), ("r-2", "m2", SERVING))
    stepped.step()
    assert _status(stepped) is EndpointStatus.UPDATING  # draining: may still get connections
    backend.set("ep", ("r-2", "m2", SERVING))
    stepped.step()
    assert _status(stepped) is EndpointStatus.IN_SERVICE
    assert stepped.describe("ep").endpoint.model_name == "m2"


def test_a_failed_model_update_rolls_back(endpoints: Endpoints, backend: ScriptedBackend) -> None:
    endpoints.create("ep", "m1", 1, None)
    backend.set("ep", ("r-1", "m1", SERVING))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.IN_SERVICE)
    endpoints.update("ep", model_name="m2")
    backend.set("ep", ("r-1", "m1", SERVING), ("r-2", "m2", FAILED))
    _wait_for(lambda: backend.targets["ep"] == ("m1", 1))
    backend.set("ep", ("r-1", "m1", SERVING))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.IN_SERVICE)
    endpoint = endpoints.describe("ep").endpoint
    assert endpoint.model_name == "m1"
    assert "rolled back" in endpoint.failure_reason and "m2" in endpoint.failure_reason


def test_replica_count_change_scales_through_the_backend(
    endpoints: Endpoints, backend: ScriptedBackend
) -> None:
    endpoints.create("ep", "m1", 1, None)
    backend.set("ep", ("r-1", "m1", SERVING))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.IN_SERVICE)
    assert endpoints.update("ep", replicas=2).endpoint.status is EndpointStatus.UPDATING
    assert ("scale", "ep", 2) in backend.calls
    backend.set("ep", ("r-1", "m1", SERVING), ("r-2", "m1", SERVING))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.IN_SERVICE)


def test_delete_releases_replicas_then_forgets_the_endpoint(
    endpoints: Endpoints, backend: ScriptedBackend
) -> None:
    endpoints.create("ep", "m1", 1, None)
    endpoints.delete("ep")
    _wait_for(lambda: backend.deleted == ["ep"])

    def is_gone() -> bool:
        try:
            endpoints.describe("ep")
        except NotFound:
            return True
        return False

    _wait_for(is_gone)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("bad_name", "m1", 1, None), InvalidArgument),
        (("ep", "m1", 0, None), InvalidArgument),
        (("ep", "m1", 5, None), ResourceExhausted),
        (("ep", "nope", 1, None), NotFound),
        (("ep", "m1", 1, ScalingPolicy(0, 2)), InvalidArgument),
        (("ep", "m1", 1, ScalingPolicy(3, 2)), InvalidArgument),
    ],
)
def test_create_refuses(endpoints: Endpoints, args: tuple, error: type[Exception]) -> None:  # type: ignore[type-arg]
    with pytest.raises(error):
        endpoints.create(*args)


def test_names_are_unique_and_a_policy_is_stored_as_given(endpoints: Endpoints) -> None:
    policy = ScalingPolicy(1, 3, target_value=5.0, disable_scale_in=True)
    assert endpoints.create("ep", "m1", 1, policy).endpoint.scaling_policy == policy
    with pytest.raises(AlreadyExists):
        endpoints.create("ep", "m1", 1, None)


def test_without_a_backend_endpoints_are_refused(
    store: ControlStore, artifacts: LocalArtifactStore
) -> None:
    models = ModelRegistry(store, artifacts)
    service = Endpoints(store, models, None, ControlMetrics(prometheus_client.CollectorRegistry()))
    with pytest.raises(FailedPrecondition, match="--local"):
        service.create("ep", "m1", 1, None)


def test_a_restart_hands_live_endpoints_back_to_the_backend(
    store: ControlStore,
    artifacts: LocalArtifactStore,
    endpoints: Endpoints,
    backend: ScriptedBackend,
) -> None:
    endpoints.create("ep", "m1", 2, None)
    backend.set("ep", ("r-1", "m1", SERVING), ("r-2", "m1", SERVING))
    _wait_for(lambda: _status(endpoints) is EndpointStatus.IN_SERVICE)
    endpoints.close()
    fresh = ScriptedBackend()
    restarted = Endpoints(
        store,
        ModelRegistry(store, artifacts),
        fresh,
        ControlMetrics(prometheus_client.CollectorRegistry()),
        reconcile_interval_s=0.01,
    )
    restarted.start()
    try:
        assert ("ensure", "ep", "m1", 2) in fresh.calls
        assert _status(restarted) is EndpointStatus.SYSTEM_UPDATING
        fresh.set("ep", ("r-3", "m1", SERVING), ("r-4", "m1", SERVING))
        _wait_for(lambda: _status(restarted) is EndpointStatus.IN_SERVICE)
    finally:
        restarted.close()
