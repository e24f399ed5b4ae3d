"""The scrape metric source against real prometheus-client HTTP exporters on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import prometheus_client
import pytest

from services.control.hosting.autoscaling_policy import CONCURRENT_REQUESTS, INVOCATIONS_PER_MINUTE
from services.control.hosting.load_metrics import ReplicaTarget, ScrapeSource, parse_replica_metrics


@dataclass
class Exporter:
    """A replica's metrics as the inference service exports them."""

    target: ReplicaTarget
    in_flight: prometheus_client.Gauge
    requests: prometheus_client.Counter
    httpd: object


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    started = []
    for index in range(2):
        registry = prometheus_client.CollectorRegistry()
        in_flight = prometheus_client.Gauge(
            "skmaker_inference_requests_in_flight", "in flight", ["endpoint"], registry=registry
        )
        requests = prometheus_client.Counter(
            "skmaker_inference_requests",
            "requests",
            ["endpoint", "protocol", "outcome"],
            registry=registry,
        )
        httpd, _ = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
        target = ReplicaTarget(f"r-{index}", f"127.0.0.1:{httpd.server_port}")
        started.append(Exporter(target, in_flight, requests, httpd))
    yield started
    for exporter in started:
        exporter.httpd.shutdown()  # type: ignore[attr-defined]
        exporter.httpd.server_close()  # type: ignore[attr-defined]


def test_parse_sums_the_endpoints_series_only() -> None:
    text = (
        "# TYPE skmaker_inference_requests_in_flight gauge\n"
        'skmaker_inference_requests_in_flight{endpoint="a"} 3\n'
        'skmaker_inference_requests_in_flight{endpoint="b"} 9\n'
        "# TYPE skmaker_inference_requests counter\n"
        'skmaker_inference_requests_total{endpoint="a",protocol="skmaker",outcome="ok"} 10\n'
        'skmaker_inference_requests_total{endpoint="a",protocol="v2",outcome="ok"} 5\n'
        'skmaker_inference_requests_total{endpoint="b",protocol="v2",outcome="ok"} 99\n'
    )
    assert parse_replica_metrics(text, "a") == (3.0, 15.0)
    with pytest.raises(ValueError, match="no skmaker_inference_requests_in_flight"):
        parse_replica_metrics(text, "c")


def test_concurrent_requests_are_averaged_over_replicas(exporters: list[Exporter]) -> None:
    exporters[0].in_flight.labels("ep").set(6)
    exporters[1].in_flight.labels("ep").set(2)
    sample = ScrapeSource().sample("ep", CONCURRENT_REQUESTS, [e.target for e in exporters])
    assert sample.value == 4.0


def test_invocations_per_minute_need_two_scrapes(exporters: list[Exporter]) -> None:
    source = ScrapeSource()
    targets = [e.target for e in exporters]
    for exporter in exporters:
        exporter.in_flight.labels("ep").set(0)
    first = source.sample("ep", INVOCATIONS_PER_MINUTE, targets)
    assert first.value is None and "no rate yet" in first.detail
    exporters[0].requests.labels("ep", "skmaker", "ok").inc(30)
    second = source.sample("ep", INVOCATIONS_PER_MINUTE, targets)
    assert second.value is not None and second.value > 0


def test_an_unreachable_replica_makes_the_sample_missing(exporters: list[Exporter]) -> None:
    for exporter in exporters:
        exporter.in_flight.labels("ep").set(1)
    targets = [exporters[0].target, ReplicaTarget("gone", "127.0.0.1:9")]
    sample = ScrapeSource(timeout_s=0.5).sample("ep", CONCURRENT_REQUESTS, targets)
    assert sample.value is None
    assert "gone" in sample.detail
