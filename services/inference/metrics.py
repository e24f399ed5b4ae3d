"""The inference replica's Prometheus metrics, built against an injected registry.

Labels are bounded: the endpoint name, the protocol (`predict`, `v2`) and an outcome from a
fixed set, never anything taken from a request. The autoscaler reads `requests_in_flight` and
`requests_total`; children are bound once here so that the hot path never looks labels up.
"""

from __future__ import annotations

from dataclasses import dataclass

import prometheus_client

from services.runtime.errors import (
    InvalidArgument,
    ModelError,
    NotFound,
    ResourceExhausted,
    SkmakerError,
    Unavailable,
)

PROTOCOLS = ("predict", "v2")
OK = "ok"
# Outcome label of a failed request, by exception class (first match wins); anything else,
# including a bug, is "error".
_OUTCOME_BY_ERROR: tuple[tuple[type[SkmakerError], str], ...] = (
    (InvalidArgument, "invalid_argument"),
    (NotFound, "not_found"),
    (ResourceExhausted, "payload_too_large"),
    (ModelError, "model_error"),
    (Unavailable, "unavailable"),
)
OUTCOMES = (OK, *(label for _, label in _OUTCOME_BY_ERROR), "error")

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


def outcome_of(error: BaseException) -> str:
    """The `outcome` label of a request that raised `error`."""
    for kind, label in _OUTCOME_BY_ERROR:
        if isinstance(error, kind):
            return label
    return "error"


@dataclass(frozen=True)
class RequestMetrics:
    """Pre-bound children for one (endpoint, protocol): what a request updates."""

    latency: prometheus_client.metrics.Histogram
    in_flight: prometheus_client.metrics.Gauge
    ok: prometheus_client.metrics.Counter
    by_outcome: dict[str, prometheus_client.metrics.Counter]


class InferenceMetrics:
    """Metric families of one replica and the children each protocol updates.

    Args:
        registry: The process's registry (never the global one).
        endpoint: The endpoint label; the model name or "standalone" when there is none.
    """

    def __init__(self, registry: prometheus_client.CollectorRegistry, endpoint: str) -> None:
        self.requests = prometheus_client.Counter(
            "skmaker_inference_requests_total",
            "Inference requests answered, by protocol and outcome.",
            ["endpoint", "protocol", "outcome"],
            registry=registry,
        )
        self.latency = prometheus_client.Histogram(
            "skmaker_inference_request_latency_seconds",
            "Time from request decoded to response encoded, in seconds.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = prometheus_client.Gauge(
            "skmaker_inference_requests_in_flight",
            "Inference requests being served now.",
            ["endpoint"],
            registry=registry,
        )
        self.model_load_seconds = prometheus_client.Gauge(
            "skmaker_inference_model_load_seconds",
            "Seconds the last model load took (download, install, model_fn, warm-up).",
            registry=registry,
        )
        self.predict_path = prometheus_client.Gauge(
            "skmaker_inference_predict_path",
            "1 for the path serving the model's predict step (scikit-learn, onnxruntime, "
            "treelite-gtil; see services/sagemaker/serving/fast_path.py), 0 for the others.",
            ["endpoint", "path"],
            registry=registry,
        )
        self.micro_batching = prometheus_client.Gauge(
            "skmaker_inference_micro_batching",
            "1 when concurrent predict calls are stacked into one (micro-batching), else 0.",
            ["endpoint"],
            registry=registry,
        )
        self.stacked_calls = prometheus_client.Counter(
            "skmaker_inference_stacked_calls_total",
            "Predict calls answered by a stacked (micro-batched) predict with other calls.",
            ["endpoint"],
            registry=registry,
        )
        self.stacked_predicts = prometheus_client.Counter(
            "skmaker_inference_stacked_predicts_total",
            "Stacked (micro-batched) predict calls made.",
            ["endpoint"],
            registry=registry,
        )
        self._endpoint = endpoint
        latency = self.latency.labels(endpoint)
        in_flight = self.in_flight.labels(endpoint)
        # Every series exists from the start (at 0), so rates and absent() behave in PromQL.
        self.protocols = {
            protocol: RequestMetrics(
                latency=latency,
                in_flight=in_flight,
                ok=self.requests.labels(endpoint, protocol, OK),
                by_outcome={
                    outcome: self.requests.labels(endpoint, protocol, outcome)
                    for outcome in OUTCOMES
                },
            )
            for protocol in PROTOCOLS
        }

    def set_predict_path(self, path: str, paths: tuple[str, ...], micro_batching: bool) -> None:
        """Records which path serves the model and whether calls are micro-batched."""
        for name in paths:
            self.predict_path.labels(self._endpoint, name).set(1 if name == path else 0)
        self.micro_batching.labels(self._endpoint).set(1 if micro_batching else 0)

    def count_stacked(self, calls: int) -> None:
        """One stacked predict answered `calls` calls."""
        self.stacked_predicts.labels(self._endpoint).inc()
        self.stacked_calls.labels(self._endpoint).inc(calls)
