"""The gateway's Prometheus metrics, built against an injected registry.

Labels stay bounded: `endpoint` is a name from the routing table (a call naming no known
endpoint counts under `endpoint=""`), `outcome` is a gRPC status code in lower case (`ok`,
`not_found`, `unavailable`, ...). Children are bound once per endpoint, so a call updates them
without a label lookup. Outstanding calls and replica counts are read from the routing table
when Prometheus scrapes, which costs the request path nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any

import grpc
import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.gateway.routing_table import RoutingTable
from services.gateway.table_keeper import TableKeeper

OK = "ok"
UNROUTED = ""

# From a few hundred microseconds (one iris row) to a large batch or a slow model.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def outcome_of(code: grpc.StatusCode) -> str:
    """The `outcome` label of a call that ended with `code`."""
    return str(code.name).lower()


class EndpointMetrics:
    """The children one endpoint's calls update, bound once."""

    __slots__ = ("_endpoint", "_outcomes", "_requests", "latency", "ok", "retries")

    def __init__(self, owner: GatewayMetrics, endpoint: str) -> None:
        self._requests = owner.requests
        self.ok = owner.requests.labels(endpoint, OK)
        self.latency = owner.latency.labels(endpoint)
        self.retries = owner.retries.labels(endpoint)
        self._outcomes: dict[grpc.StatusCode, Any] = {}
        self._endpoint = endpoint

    def failed(self, code: grpc.StatusCode) -> None:
        """Counts a call that ended with `code` (not OK)."""
        child = self._outcomes.get(code)
        if child is None:
            # At most one child per status code: bounded, and bound once.
            child = self._outcomes[code] = self._requests.labels(self._endpoint, outcome_of(code))
        child.inc()


class GatewayMetrics:
    """The gateway's metric families and the per-endpoint children.

    Args:
        registry: the process's registry (never the global one).
    """

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        self.requests = prometheus_client.Counter(
            "skmaker_gateway_requests_total",
            "Calls answered by the gateway, by endpoint and outcome (gRPC status).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.latency = prometheus_client.Histogram(
            "skmaker_gateway_request_latency_seconds",
            "Time from a call's arrival to its answer, forwarding and retries included.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = prometheus_client.Counter(
            "skmaker_gateway_retries_total",
            "Calls sent again to another replica after UNAVAILABLE (a draining replica).",
            ["endpoint"],
            registry=registry,
        )
        self._registry = registry
        self._by_endpoint: dict[str, EndpointMetrics] = {}
        self._lock = threading.Lock()
        self.unrouted = EndpointMetrics(self, UNROUTED)

    def for_endpoint(self, endpoint: str) -> EndpointMetrics:
        """The children of `endpoint` (a name from the routing table), bound on first use."""
        found = self._by_endpoint.get(endpoint)
        if found is not None:
            return found
        with self._lock:
            found = self._by_endpoint.get(endpoint)
            if found is None:
                found = self._by_endpoint[endpoint] = EndpointMetrics(self, endpoint)
            return found

    def forget(self, endpoints: Collection[str]) -> None:
        """Drops the series of endpoints that left the routing table."""
        with self._lock:
            for endpoint in endpoints:
                if self._by_endpoint.pop(endpoint, None) is None:
                    continue
                for family in (self.latency, self.retries):
                    _remove(family, endpoint)
                for code in grpc.StatusCode:
                    _remove(self.requests, endpoint, outcome_of(code))

    def watch(self, keeper: TableKeeper[Any], clock: Callable[[], float]) -> None:
        """Exports the routing table's state (read at scrape time) from `keeper`."""
        self._registry.register(_TableCollector(keeper, clock))


def _remove(family: Any, *labels: str) -> None:
    try:
        family.remove(*labels)
    except KeyError:
        pass  # never bound: nothing to drop


class _TableCollector(Collector):
    """Outstanding calls, serving replicas and the table's freshness, read when scraped."""

    def __init__(self, keeper: TableKeeper[Any], clock: Callable[[], float]) -> None:
        self._keeper = keeper
        self._table: RoutingTable[Any] = keeper.table
        self._clock = clock

    def collect(self) -> Iterator[Any]:
        outstanding = GaugeMetricFamily(
            "skmaker_gateway_replica_outstanding",
            "Calls the gateway has in flight to an endpoint's replicas.",
            labels=["endpoint"],
        )
        replicas = GaugeMetricFamily(
            "skmaker_gateway_replicas",
            "Serving replicas of an endpoint in the gateway's routing table.",
            labels=["endpoint"],
        )
        for route in self._table.routes():
            outstanding.add_metric([route.name], sum(r.outstanding for r in route.replicas))
            replicas.add_metric([route.name], len(route.replicas))
        refreshes = CounterMetricFamily(
            "skmaker_gateway_table_refreshes",
            "Reads of the whole routing table from its source, by outcome.",
            labels=["outcome"],
        )
        refreshes.add_metric(["ok"], self._keeper.refreshes_ok)
        refreshes.add_metric(["error"], self._keeper.refreshes_failed)
        yield outstanding
        yield replicas
        yield refreshes
        last = self._keeper.last_success
        if last is not None:
            yield GaugeMetricFamily(
                "skmaker_gateway_table_age_seconds",
                "Seconds since the routing table was last read successfully.",
                value=self._clock() - last,
            )
