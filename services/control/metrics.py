"""The control's Prometheus metrics, built against an injected registry."""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client


class ControlMetrics:
    """Counters and gauges of the control service."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        """Registers every metric in `registry`."""
        self.training_jobs = prometheus_client.Counter(
            "skmaker_control_training_jobs",
            "Training jobs that entered a status (InProgress on create, then a terminal one).",
            ["status"],
            registry=registry,
        )
        self.tuning_jobs = prometheus_client.Counter(
            "skmaker_control_tuning_jobs",
            "Tuning jobs that entered a status (InProgress on create, then a terminal one).",
            ["status"],
            registry=registry,
        )
        self.queue_depth = prometheus_client.Gauge(
            "skmaker_control_queue_depth",
            "Tasks queued and waiting for a worker.",
            registry=registry,
        )
        self.lease_expirations = prometheus_client.Counter(
            "skmaker_control_lease_expirations",
            "Leases that expired because their worker stopped heartbeating.",
            registry=registry,
        )

        self.endpoint_replicas = prometheus_client.Gauge(
            "skmaker_control_endpoint_replicas",
            "Replicas of the endpoint's current model that answer health checks SERVING.",
            ["endpoint"],
            registry=registry,
        )
        self.endpoint_desired_replicas = prometheus_client.Gauge(
            "skmaker_control_endpoint_desired_replicas",
            "Replicas the endpoint wants now.",
            ["endpoint"],
            registry=registry,
        )

    def track_queue_depth(self, read_depth: Callable[[], int]) -> None:
        """Makes the queue-depth gauge read `read_depth()` at each scrape."""
        self.queue_depth.set_function(read_depth)
