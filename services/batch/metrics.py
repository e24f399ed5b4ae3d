"""The batch worker's Prometheus metrics, built against the process's injected registry."""

from __future__ import annotations

from dataclasses import dataclass

import prometheus_client


@dataclass(frozen=True)
class BatchMetrics:
    """Shards by outcome, how long they took, and records scored."""

    shards: prometheus_client.Counter
    shard_seconds: prometheus_client.Histogram
    records: prometheus_client.Counter

    @classmethod
    def create(cls, registry: prometheus_client.CollectorRegistry) -> BatchMetrics:
        """Registers the metrics in `registry`."""
        return cls(
            shards=prometheus_client.Counter(
                "skmaker_batch_shards",
                "Transform shards by outcome (succeeded, failed, stopped, abandoned)",
                ["outcome"],
                registry=registry,
            ),
            shard_seconds=prometheus_client.Histogram(
                "skmaker_batch_shard_duration_seconds",
                "Wall time of a shard: model load, download, scoring, upload",
                buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
                registry=registry,
            ),
            records=prometheus_client.Counter(
                "skmaker_batch_records",
                "Records scored in shards that succeeded",
                registry=registry,
            ),
        )
