"""The autoscaling loop over real SQLite, the real policy and the real scrape source.

Replicas are in-process prometheus-client exporters (the numbers the test sets are what the
loop scrapes over HTTP); the replica backend is a small in-test implementation of the
`ReplicaBackend` Protocol that records `scale` calls and lists the replicas the test sets.
"""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.backends import ReplicaBackend, ReplicaInfo, ReplicaState
from services.control.hosting import autoscaling_policy as autoscaler
from services.control.hosting.autoscaling_loop import (
    DEFAULT_SCALE_IN_WINDOW_S,
    DEFAULT_SCALE_OUT_WINDOW_S,
    Autoscaling,
    policy_for,
)
from services.control.hosting.endpoint_store import EndpointStore
from services.control.hosting.endpoint_values import EndpointStatus, ScalingMetric, ScalingPolicy
from services.control.hosting.endpoints import Endpoints
from services.control.hosting.load_metrics import ScrapeSource
from services.control.hosting.model_registry import ModelRegistry
from services.control.hosting.model_values import Model
from services.control.hosting.scrape_targets import ScrapeTarget, ScrapeTargetsFile
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.runtime.errors import InvalidArgument, ResourceExhausted
from tests.unit.control.conftest import put_bytes

SERVING, STARTING = ReplicaState.SERVING, ReplicaState.STARTING
# 127.0.0.1:9 (discard) has no listener here: a scrape is refused at once.
UNREACHABLE = "127.0.0.1:9"


class FakeMonotonic:
    """The loop's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Exporter:
    """One replica's /metrics, as the inference service exports it."""

    in_flight: prometheus_client.Gauge
    address: str
    httpd: Any


class RecordingBackend:
    """A `ReplicaBackend` whose replicas the test lists; `scale` calls are recorded."""

    name = "recording"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listed: dict[str, list[ReplicaInfo]] = {}
        self.scaled: list[tuple[str, int, tuple[str, ...]]] = []

    def set(self, endpoint: str, *replicas: ReplicaInfo) -> None:
        with self.lock:
            self.listed[endpoint] = list(replicas)

    def start(self, control_address: str) -> None:
        pass

    def ensure(self, endpoint: str, model: str, desired_replicas: int, address: str = "") -> str:
        return address or "127.0.0.1:9999"

    def scale(self, endpoint: str, desired_replicas: int, remove_first: Sequence[str] = ()) -> None:
        self.scaled.append((endpoint, desired_replicas, tuple(remove_first)))

    def replicas(self, endpoint: str) -> list[ReplicaInfo]:
        with self.lock:
            return list(self.listed.get(endpoint, []))

    def drain_replica(self, endpoint: str, replica_id: str) -> None:
        raise AssertionError("the loop scales through scale(), never drain_replica()")

    def delete(self, endpoint: str) -> None:
        with self.lock:
            self.listed.pop(endpoint, None)

    def begin_shutdown(self) -> None:
        pass

    def close(self) -> None:
        pass


def _backend_type_check(backend: RecordingBackend) -> ReplicaBackend:
    return backend  # mypy: the recording backend implements the Protocol


@pytest.fixture(scope="module")
def exporter_pool() -> Iterator[list[Exporter]]:
    # Module-wide: stopping an exporter waits for its serve loop's 0.5 s poll.
    started = []
    for _ in range(3):
        registry = prometheus_client.CollectorRegistry()
        in_flight = prometheus_client.Gauge(
            "skmaker_inference_requests_in_flight", "in flight", ["endpoint"], registry=registry
        )
        prometheus_client.Counter(
            "skmaker_inference_requests",
            "requests",
            ["endpoint", "protocol", "outcome"],
            registry=registry,
        )
        httpd, _ = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
        started.append(Exporter(in_flight, f"127.0.0.1:{httpd.server_port}", httpd))
    yield started
    for exporter in started:
        exporter.httpd.shutdown()
        exporter.httpd.server_close()


@pytest.fixture
def exporters(exporter_pool: list[Exporter]) -> list[Exporter]:
    for exporter in exporter_pool:
        exporter.in_flight.clear()
    return exporter_pool


@dataclass
class Rig:
    """Endpoints, the loop and what they talk to."""

    endpoints: Endpoints
    stored: EndpointStore
    loop: Autoscaling
    backend: RecordingBackend
    metrics: ControlMetrics
    registry: prometheus_client.CollectorRegistry
    clock: FakeMonotonic
    exporters: list[Exporter]
    published: list[list[ScrapeTarget]]

    def serve(self, endpoint: str, *replicas: tuple[str, ReplicaState, float]) -> None:
        """Lists (id, state, in flight) replicas of model m1, each on its own exporter."""
        infos = []
        for index, (replica_id, state, in_flight) in enumerate(replicas):
            exporter = self.exporters[index]
            exporter.in_flight.labels(endpoint).set(in_flight)
            infos.append(ReplicaInfo(replica_id, "m1", state, metrics_address=exporter.address))
        self.backend.set(endpoint, *infos)

    def in_service(self, name: str, replicas: int, policy: ScalingPolicy | None) -> None:
        """Creates `name` and marks it InService (the reconciler is not running)."""
        self.endpoints.create(name, "m1", replicas, policy)
        endpoint = self.stored.get(name)
        assert endpoint is not None
        self.stored.update(replace(endpoint, status=EndpointStatus.IN_SERVICE))

    def events(self, name: str = "ep") -> list[str]:
        return [event.message for event in self.endpoints.describe(name).events]

    def decisions(self, direction: str, name: str = "ep") -> float:
        value = self.registry.get_sample_value(
            "skmaker_control_scaling_decisions_total",
            {"endpoint": name, "direction": direction},
        )
        return value or 0.0

    def desired_gauge(self, name: str = "ep") -> float | None:
        return self.registry.get_sample_value(
            "skmaker_control_endpoint_desired_replicas", {"endpoint": name}
        )


@pytest.fixture
def rig(
    store: ControlStore, artifacts: LocalArtifactStore, exporters: list[Exporter]
) -> Iterator[Rig]:
    put_bytes(artifacts, "m/model.tar.gz", b"x")
    models = ModelRegistry(store, artifacts)
    for name in ("m1", "m2"):
        models.create(Model(name, "store://m/model.tar.gz", "inference.py"))
    registry = prometheus_client.CollectorRegistry()
    metrics = ControlMetrics(registry)
    backend = RecordingBackend()
    # No reconciler thread: the test alone moves statuses, so every assertion is exact.
    endpoints = Endpoints(store, models, backend, metrics, max_replicas=4)
    clock = FakeMonotonic()
    published: list[list[ScrapeTarget]] = []
    loop = Autoscaling(
        endpoints,
        ScrapeSource(timeout_s=2.0),
        metrics,
        on_scrape_targets=published.append,
        clock=clock,
        hold_event_interval_s=60.0,
    )
    yield Rig(
        endpoints,
        EndpointStore(store),
        loop,
        backend,
        metrics,
        registry,
        clock,
        exporters,
        published,
    )


def _policy(**fields: Any) -> ScalingPolicy:
    values: dict[str, Any] = {"min_replicas": 1, "max_replicas": 3, "target_value": 4.0}
    values.update(fields)
    return ScalingPolicy(**values)


# ----------------------------------------------------------------- the policy mapping


def test_zero_fields_take_defaults_per_metric() -> None:
    concurrent = policy_for(ScalingPolicy(min_replicas=1, max_replicas=2))
    assert concurrent.metric == autoscaler.CONCURRENT_REQUESTS
    assert concurrent.target_value == 4.0
    assert concurrent.scale_out_window_s == DEFAULT_SCALE_OUT_WINDOW_S
    assert concurrent.scale_in_window_s == DEFAULT_SCALE_IN_WINDOW_S
    invocations = policy_for(
        ScalingPolicy(1, 2, metric=ScalingMetric.INVOCATIONS_PER_REPLICA_PER_MINUTE)
    )
    assert invocations.metric == autoscaler.INVOCATIONS_PER_MINUTE
    assert invocations.target_value == 1000.0


def test_given_fields_are_kept() -> None:
    policy = policy_for(
        ScalingPolicy(
            min_replicas=2,
            max_replicas=5,
            metric=ScalingMetric.INVOCATIONS_PER_REPLICA_PER_MINUTE,
            target_value=600.0,
            scale_out_window_seconds=1.5,
            scale_in_window_seconds=90.0,
            disable_scale_in=True,
        )
    )
    assert policy == autoscaler.ScalingPolicy(
        min_replicas=2,
        max_replicas=5,
        metric=autoscaler.INVOCATIONS_PER_MINUTE,
        target_value=600.0,
        scale_out_window_s=1.5,
        scale_in_window_s=90.0,
        disable_scale_in=True,
    )


def test_a_broken_stored_policy_raises() -> None:
    with pytest.raises(ValueError, match="max_replicas"):
        policy_for(ScalingPolicy(min_replicas=3, max_replicas=2))


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (_policy(max_replicas=5), ResourceExhausted),  # above --max-endpoint-replicas (4)
        (_policy(scale_in_window_seconds=-1.0), InvalidArgument),
    ],
)
def test_create_refuses_a_policy_the_loop_could_not_follow(
    rig: Rig, policy: ScalingPolicy, error: type[Exception]
) -> None:
    with pytest.raises(error):
        rig.endpoints.create("ep", "m1", 1, policy)


# ----------------------------------------------------------------- decisions carried out


def test_a_burst_scales_out_at_once_and_says_why(rig: Rig) -> None:
    rig.in_service("ep", 1, _policy())
    rig.serve("ep", ("r-1", SERVING, 10))
    [evaluation] = rig.loop.step()
    assert evaluation.decision.direction == autoscaler.UP and evaluation.applied
    assert rig.backend.scaled == [("ep", 3, ())]
    endpoint = rig.endpoints.describe("ep").endpoint
    assert endpoint.desired_replicas == 3
    assert endpoint.status is EndpointStatus.SYSTEM_UPDATING  # until the new replicas serve
    event = rig.events()[-1]
    assert event.startswith("autoscaling out to 3 replica(s): burst:")
    assert "concurrent_requests_per_replica=10" in event and "(scraped)" in event
    assert rig.decisions("up") == 1.0 and rig.decisions("down") == 0.0
    assert rig.desired_gauge() == 3.0


def test_a_moderate_rise_waits_for_the_scale_out_window(rig: Rig) -> None:
    rig.in_service("ep", 1, _policy(scale_out_window_seconds=2.0))
    rig.serve("ep", ("r-1", SERVING, 6))  # 1.5x target: not a burst
    # The first 2 s agree on 2 replicas, but a fresh history also holds the current count
    # as recommended at the start: the window must pass it.
    for _ in range(3):
        [evaluation] = rig.loop.step()
        assert evaluation.decision.direction == autoscaler.HOLD
        rig.clock.now += 1.0
    [evaluation] = rig.loop.step()
    assert evaluation.decision.direction == autoscaler.UP
    assert rig.backend.scaled == [("ep", 2, ())]
    assert "-> 2" in rig.events()[-1]


def test_scale_in_waits_the_window_then_drains_the_idlest_replicas(rig: Rig) -> None:
    rig.in_service("ep", 3, _policy(scale_in_window_seconds=5.0))
    rig.serve("ep", ("r-1", SERVING, 1), ("r-2", SERVING, 0), ("r-3", SERVING, 2))
    for _ in range(6):  # a fresh history counts the current 3 as recommended at t=0
        [evaluation] = rig.loop.step()
        assert evaluation.decision.direction == autoscaler.HOLD, evaluation.decision.reason
        rig.clock.now += 1.0
    [evaluation] = rig.loop.step()
    assert evaluation.decision.direction == autoscaler.DOWN and evaluation.applied
    assert rig.backend.scaled == [("ep", 1, ("r-2", "r-1", "r-3"))]
    endpoint = rig.endpoints.describe("ep").endpoint
    assert endpoint.desired_replicas == 1
    assert endpoint.status is EndpointStatus.IN_SERVICE  # capacity never dipped below desired
    assert rig.events()[-1].startswith("autoscaling in to 1 replica(s):")
    assert rig.decisions("down") == 1.0


def test_starting_replicas_are_not_capacity(rig: Rig) -> None:
    rig.in_service("ep", 2, _policy(scale_out_window_seconds=0.5))
    # 6 in flight on the one serving replica: 2 replicas are right once r-2 serves; counting
    # the starting one would ask for ceil(2 x 6 / 4) = 3.
    rig.serve("ep", ("r-1", SERVING, 6), ("r-2", STARTING, 0))
    for _ in range(3):
        [evaluation] = rig.loop.step()
        assert evaluation.decision.direction == autoscaler.HOLD
        rig.clock.now += 1.0
    assert rig.backend.scaled == []


def test_missing_metrics_hold_with_one_event_per_interval(rig: Rig) -> None:
    rig.in_service("ep", 2, _policy())
    rig.exporters[0].in_flight.labels("ep").set(1)
    rig.backend.set(
        "ep",
        ReplicaInfo("r-1", "m1", SERVING, metrics_address=rig.exporters[0].address),
        ReplicaInfo("r-2", "m1", SERVING, metrics_address=UNREACHABLE),
    )
    for _ in range(5):
        [evaluation] = rig.loop.step()
        assert evaluation.decision.direction == autoscaler.HOLD
        assert evaluation.sample.value is None
        rig.clock.now += 1.0
    holds = [m for m in rig.events() if m.startswith("autoscaling holding")]
    assert len(holds) == 1
    assert holds[0].startswith("autoscaling holding at 2 replica(s): cannot scrape replica r-2")
    rig.clock.now += 60.0
    rig.loop.step()
    assert len([m for m in rig.events() if m.startswith("autoscaling holding")]) == 2
    assert rig.backend.scaled == [] and rig.decisions("down") == 0.0


def test_only_in_service_endpoints_with_a_policy_are_scaled(rig: Rig) -> None:
    rig.in_service("fixed", 1, None)
    rig.serve("fixed", ("r-1", SERVING, 50))
    rig.endpoints.create("creating", "m1", 1, _policy())
    rig.serve("creating", ("r-1", SERVING, 50))
    assert rig.loop.step() == []
    assert rig.backend.scaled == []


def test_an_update_under_way_wins_over_a_stale_decision(rig: Rig) -> None:
    rig.in_service("ep", 1, _policy())
    rig.serve("ep", ("r-1", SERVING, 10))
    [view] = rig.endpoints.list("ep")
    rig.endpoints.update("ep", model_name="m2")  # Updating from here on
    evaluation = rig.loop.evaluate(view)  # the loop had listed it InService
    assert evaluation is not None and evaluation.decision.direction == autoscaler.UP
    assert not evaluation.applied
    assert rig.backend.scaled == [] and rig.decisions("up") == 0.0
    assert rig.endpoints.describe("ep").endpoint.desired_replicas == 1


def test_a_policy_update_applies_at_the_next_pass(rig: Rig) -> None:
    rig.in_service("ep", 1, _policy())
    rig.serve("ep", ("r-1", SERVING, 4))
    [evaluation] = rig.loop.step()
    assert evaluation.decision.direction == autoscaler.HOLD
    rig.endpoints.update("ep", policy=_policy(min_replicas=2, max_replicas=4))
    [evaluation] = rig.loop.step()
    assert evaluation.decision.direction == autoscaler.UP
    assert rig.backend.scaled == [("ep", 2, ())]
    assert "outside [2, 4]" in rig.events()[-1]


def test_a_count_set_by_update_endpoint_lasts_a_scale_in_window(rig: Rig) -> None:
    rig.in_service("ep", 1, _policy(scale_in_window_seconds=5.0))
    rig.serve("ep", ("r-1", SERVING, 0))
    for _ in range(8):  # idle for longer than the window at one replica
        [evaluation] = rig.loop.step()
        rig.clock.now += 1.0
    rig.endpoints.update("ep", replicas=2)
    endpoint = rig.stored.get("ep")
    assert endpoint is not None
    rig.stored.update(replace(endpoint, status=EndpointStatus.IN_SERVICE))
    rig.serve("ep", ("r-1", SERVING, 0), ("r-2", SERVING, 0))
    for _ in range(5):  # the user's 2 holds for the window although the load says 1
        [evaluation] = rig.loop.step()
        assert evaluation.decision.direction == autoscaler.HOLD, evaluation.decision.reason
        rig.clock.now += 1.0
    rig.clock.now += 1.0
    [evaluation] = rig.loop.step()
    assert evaluation.decision.direction == autoscaler.DOWN


def test_every_replica_with_metrics_is_published_for_prometheus(rig: Rig) -> None:
    rig.in_service("fixed", 1, None)
    rig.backend.set(
        "fixed",
        ReplicaInfo("r-1", "m1", SERVING, metrics_address="127.0.0.1:7001"),
        ReplicaInfo("r-2", "m1", STARTING, metrics_address="127.0.0.1:7002"),
        ReplicaInfo("r-3", "m1", STARTING),  # no port file yet
    )
    rig.loop.step()
    assert sorted(rig.published[-1]) == [
        ScrapeTarget("fixed", "r-1", "127.0.0.1:7001"),
        ScrapeTarget("fixed", "r-2", "127.0.0.1:7002"),
    ]


def test_deleted_endpoints_lose_their_decision_counters(rig: Rig) -> None:
    rig.in_service("ep", 1, _policy())
    rig.serve("ep", ("r-1", SERVING, 10))
    rig.loop.step()
    assert rig.decisions("up") == 1.0
    rig.endpoints.delete("ep")
    rig.endpoints.close()  # waits for the release, which removes the row and the series
    assert (
        rig.registry.get_sample_value(
            "skmaker_control_scaling_decisions_total", {"endpoint": "ep", "direction": "up"}
        )
        is None
    )


# ----------------------------------------------------------------- the Prometheus SD file


def test_the_sd_file_is_replaced_atomically_and_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "inference.json"
    targets_file = ScrapeTargetsFile(path)
    targets = [
        ScrapeTarget("iris", "r-2", "127.0.0.1:7002"),
        ScrapeTarget("iris", "r-1", "127.0.0.1:7001"),
    ]
    assert targets_file.write(targets)
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:7001"], "labels": {"endpoint": "iris", "replica": "r-1"}},
        {"targets": ["127.0.0.1:7002"], "labels": {"endpoint": "iris", "replica": "r-2"}},
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # Prometheus may run as another user
    inode = path.stat().st_ino
    assert not targets_file.write(reversed(targets))  # same set: untouched
    assert path.stat().st_ino == inode
    assert targets_file.write([])
    assert json.loads(path.read_text()) == []
    assert [p.name for p in path.parent.iterdir()] == ["inference.json"]  # no temp file left
