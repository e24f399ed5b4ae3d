"""The control's Prometheus metrics, built against an injected registry."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator

import prometheus_client

# The `direction` label values of skmaker_control_scaling_decisions_total.
SCALING_DIRECTIONS = ("up", "down")


class ControlMetrics:
    """Counters and gauges of the control service."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        """Registers every metric in `registry`."""
        self._registry = registry
        self.long_calls_refused = prometheus_client.Counter(
            "skmaker_control_long_calls_refused",
            "Long calls refused with RESOURCE_EXHAUSTED, by class and the limit they hit.",
            ["call_class", "limit"],
            registry=registry,
        )
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
        self.transform_jobs = prometheus_client.Counter(
            "skmaker_control_transform_jobs",
            "Transform jobs that entered a status (InProgress on create, then a terminal one).",
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

        self.scaling_decisions = prometheus_client.Counter(
            "skmaker_control_scaling_decisions",
            "Autoscaling decisions that changed an endpoint's desired replicas, by direction.",
            ["endpoint", "direction"],
            registry=registry,
        )

        self.artifact_rpc_bytes = prometheus_client.Counter(
            "skmaker_control_artifact_rpc_bytes",
            "Object bytes carried by UploadArtifact and DownloadArtifact, by direction: the "
            "bytes that went through the control instead of straight to the object store.",
            ["direction"],
            registry=registry,
        )
        for direction in ("upload", "download"):
            self.artifact_rpc_bytes.labels(direction)  # exported at 0 from the start

    def count_artifact_bytes(self, direction: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """`chunks` as they are, each one's size added to the artifact RPC bytes of `direction`."""
        counter = self.artifact_rpc_bytes.labels(direction)
        for chunk in chunks:
            counter.inc(len(chunk))
            yield chunk

    def track_long_calls(self, in_flight: Callable[[str], int], classes: list[str]) -> None:
        """Long calls (streams, long polls) in flight per class, read at each scrape, and a
        counter of the ones refused; `refused_long_call` counts one."""
        open_calls = prometheus_client.Gauge(
            "skmaker_control_long_calls",
            "Long calls (streams, workers' transfers, long polls) in flight, by class.",
            ["call_class"],
            registry=self._registry,
        )
        for name in classes:
            open_calls.labels(call_class=name).set_function(functools.partial(in_flight, name))

    def refused_long_call(self, class_name: str, limit: str) -> None:
        """Counts a long call refused at `limit` ("capacity" or "per caller")."""
        self.long_calls_refused.labels(call_class=class_name, limit=limit).inc()

    def forget_scaling_decisions(self, endpoint: str) -> None:
        """Drops a deleted endpoint's decision counters (label values stay bounded)."""
        for direction in SCALING_DIRECTIONS:
            with contextlib.suppress(KeyError):  # never incremented
                self.scaling_decisions.remove(endpoint, direction)

    def track_queue_depth(self, read_depth: Callable[[], int]) -> None:
        """Makes the queue-depth gauge read `read_depth()` at each scrape."""
        self.queue_depth.set_function(read_depth)
