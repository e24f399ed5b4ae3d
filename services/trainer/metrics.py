"""The trainer's Prometheus metrics, built against the process's injected registry."""

from __future__ import annotations

from dataclasses import dataclass

import prometheus_client


@dataclass(frozen=True)
class TrainerMetrics:
    """Jobs by outcome and how long they took."""

    jobs: prometheus_client.Counter
    job_seconds: prometheus_client.Histogram

    @classmethod
    def create(cls, registry: prometheus_client.CollectorRegistry) -> TrainerMetrics:
        """Registers the metrics in `registry`."""
        return cls(
            jobs=prometheus_client.Counter(
                "skmaker_trainer_jobs",
                "Training attempts by outcome",
                ["outcome"],
                registry=registry,
            ),
            job_seconds=prometheus_client.Histogram(
                "skmaker_trainer_job_duration_seconds",
                "Wall time of a training attempt",
                buckets=(1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
                registry=registry,
            ),
        )
