"""Where the autoscaler's load numbers come from: replicas' /metrics, or a Prometheus server.

Both sources answer the same question — the policy's metric averaged over an endpoint's
serving replicas — so the policy cannot tell them apart:

- `ScrapeSource` (default) reads each replica's Prometheus text exposition over HTTP and parses
  it with prometheus-client's parser. Invocations per minute are the counter's increase between
  two scrapes of the same replica.
- `PromQLSource` asks a Prometheus server over its HTTP API (`/api/v1/query`), for deployments
  where Prometheus already scrapes everything (docker compose, Kubernetes).

A replica that cannot be read makes the whole sample missing (None): missing load is never
zero load, and the policy holds rather than scaling in on a blind spot.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from services.control.hosting.autoscaling_policy import CONCURRENT_REQUESTS, INVOCATIONS_PER_MINUTE

log = logging.getLogger(__name__)

IN_FLIGHT_METRIC = "skmaker_inference_requests_in_flight"
REQUESTS_METRIC = "skmaker_inference_requests_total"


@dataclass(frozen=True)
class ReplicaTarget:
    """One serving replica as the metric sources need it."""

    replica_id: str
    metrics_address: str


@dataclass(frozen=True)
class LoadSample:
    """The policy's metric for one endpoint at one moment; `value` None means unknown.

    Attributes:
        value: the metric averaged over the serving replicas; None when missing or stale.
        detail: a phrase for events and logs naming the value and its source.
        in_flight: requests in flight per replica id, where the source read them (the
            autoscaler drains the idlest replicas first); empty when unknown.
    """

    value: float | None
    detail: str
    in_flight: Mapping[str, float] = field(default_factory=dict)


class LoadSource(Protocol):
    """Produces the per-replica average of a policy metric for an endpoint."""

    def sample(self, endpoint: str, metric: str, replicas: Sequence[ReplicaTarget]) -> LoadSample:
        """Reads the metric now."""


@dataclass(frozen=True)
class _Reading:
    in_flight: float
    requests_total: float
    at: float


def parse_replica_metrics(text: str, endpoint: str) -> tuple[float, float]:
    """(requests in flight, requests served in total) for `endpoint` from exposition text.

    Raises:
        ValueError: the text has no in-flight gauge for the endpoint (not an skmaker replica).
    """
    in_flight: float | None = None
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("endpoint") != endpoint:
                continue
            if sample.name == IN_FLIGHT_METRIC:
                in_flight = (in_flight or 0.0) + sample.value
            elif sample.name == REQUESTS_METRIC:
                total += sample.value
    if in_flight is None:
        raise ValueError(f"no {IN_FLIGHT_METRIC} for endpoint {endpoint!r}")
    return in_flight, total


class ScrapeSource:
    """Scrapes replicas' /metrics directly (no Prometheus server needed).

    With `ssl_context` (replicas serving TLS) the scrape is HTTPS; with `token`, it carries
    `Authorization: Bearer <token>` (replicas asking for a metrics token).
    """

    def __init__(
        self,
        timeout_s: float = 1.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        token: str = "",
    ) -> None:
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._previous: dict[tuple[str, str], _Reading] = {}
        self._lock = threading.Lock()

    def _read(self, endpoint: str, target: ReplicaTarget) -> _Reading:
        scheme = "https" if self._ssl_context is not None else "http"
        request = urllib.request.Request(
            f"{scheme}://{target.metrics_address}/metrics", headers=self._headers
        )
        with urllib.request.urlopen(
            request, timeout=self._timeout_s, context=self._ssl_context
        ) as response:
            text = response.read().decode("utf-8")
        in_flight, total = parse_replica_metrics(text, endpoint)
        return _Reading(in_flight, total, time.monotonic())

    def sample(self, endpoint: str, metric: str, replicas: Sequence[ReplicaTarget]) -> LoadSample:
        """Scrapes every replica; None when any of them could not be read."""
        if not replicas:
            return LoadSample(None, "no serving replica to scrape")
        readings: dict[str, _Reading] = {}
        for target in replicas:
            try:
                readings[target.replica_id] = self._read(endpoint, target)
            except (OSError, ValueError, urllib.error.URLError) as err:
                return LoadSample(None, f"cannot scrape replica {target.replica_id}: {err}")
        with self._lock:
            previous = {rid: self._previous.get((endpoint, rid)) for rid in readings}
            for rid, reading in readings.items():
                self._previous[(endpoint, rid)] = reading
            live = {(endpoint, t.replica_id) for t in replicas}
            for key in [k for k in self._previous if k[0] == endpoint and k not in live]:
                del self._previous[key]
        in_flight = {rid: reading.in_flight for rid, reading in readings.items()}
        if metric == CONCURRENT_REQUESTS:
            value = sum(in_flight.values()) / len(in_flight)
            return LoadSample(value, f"{value:.3g} in flight per replica (scraped)", in_flight)
        if metric == INVOCATIONS_PER_MINUTE:
            rates = []
            for rid, reading in readings.items():
                before = previous[rid]
                if before is None or reading.at <= before.at:
                    return LoadSample(
                        None, f"first scrape of replica {rid}; no rate yet", in_flight
                    )
                # A restarted replica resets its counter: count from zero, as PromQL's rate().
                increase = reading.requests_total - before.requests_total
                if increase < 0:
                    increase = reading.requests_total
                rates.append(increase * 60.0 / (reading.at - before.at))
            value = sum(rates) / len(rates)
            return LoadSample(
                value, f"{value:.3g} invocations per replica per minute (scraped)", in_flight
            )
        raise ValueError(f"unknown metric {metric!r}")


class PromQLSource:
    """Queries a Prometheus server's HTTP API for the same numbers."""

    def __init__(self, base_url: str, *, rate_window_s: int = 15, timeout_s: float = 2.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._rate_window_s = rate_window_s
        self._timeout_s = timeout_s

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Runs an instant query; returns (labels, value) per series.

        Raises:
            OSError: Prometheus is unreachable or answered with an error.
        """
        url = f"{self._base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=self._timeout_s) as response:
            answer = json.loads(response.read().decode("utf-8"))
        if answer.get("status") != "success":
            raise OSError(f"Prometheus answered {answer.get('error', answer)!r}")
        return [
            (series.get("metric", {}), float(series["value"][1]))
            for series in answer["data"]["result"]
        ]

    def sample(self, endpoint: str, metric: str, replicas: Sequence[ReplicaTarget]) -> LoadSample:
        """Per-replica average over `replicas`, as Prometheus last scraped them.

        Series are matched to replicas by their `replica` target label (the control's
        `--prometheus-sd-file` sets it), so replicas that are starting or draining do not
        dilute the average. Without that label (Prometheus finds replicas some other way),
        each scrape target of the endpoint counts as one replica.
        """
        if not replicas:
            return LoadSample(None, "no serving replica")
        selector = f'{{endpoint="{endpoint}"}}'
        by_target = "sum by (instance, replica)"
        try:
            in_flight = _per_replica(
                self.query(f"{by_target} ({IN_FLIGHT_METRIC}{selector})"), replicas
            )
            if metric == CONCURRENT_REQUESTS:
                values = in_flight
            elif metric == INVOCATIONS_PER_MINUTE:
                rate = f"rate({REQUESTS_METRIC}{selector}[{self._rate_window_s}s])"
                values = _per_replica(self.query(f"{by_target} ({rate}) * 60"), replicas)
            else:
                raise ValueError(f"unknown metric {metric!r}")
        except (OSError, KeyError) as err:
            return LoadSample(None, f"Prometheus query failed: {err}")
        if len(values) < len(replicas):
            return LoadSample(
                None, f"Prometheus has {len(values)} of {len(replicas)} replicas' samples yet"
            )
        value = sum(values.values()) / len(values)
        unit = "in flight" if metric == CONCURRENT_REQUESTS else "invocations per minute"
        known = {target.replica_id for target in replicas}
        by_replica = in_flight if set(in_flight) <= known else {}
        return LoadSample(value, f"{value:.3g} {unit} per replica (PromQL)", by_replica)


def _per_replica(
    series: list[tuple[dict[str, str], float]], replicas: Sequence[ReplicaTarget]
) -> dict[str, float]:
    """Values keyed by replica id (only `replicas`' series), or by instance without the label."""
    known = {target.replica_id for target in replicas}
    if any("replica" in labels for labels, _value in series):
        return {
            labels["replica"]: value for labels, value in series if labels.get("replica") in known
        }
    return {
        labels.get("instance", str(index)): value for index, (labels, value) in enumerate(series)
    }
