"""One replica's serving state: the loaded model, readiness, draining, limits and request metrics.

`Replica.predict` is the Predict hot path below the servicer: it refuses what this replica
cannot serve (not loaded, draining, another endpoint's name, a payload over the limit), calls the
handler and records the request's outcome and latency on pre-bound metric children. It holds no
lock: the handler never changes once set, and the two flags are plain attribute writes read by
request threads (a request racing the drain flag either runs or is refused; both are correct).
Knows nothing of grpc or protobuf.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from services.inference import model_dtype
from services.inference.metrics import InferenceMetrics, outcome_of
from services.runtime.errors import NotFound, ResourceExhausted, Unavailable
from services.sagemaker.serving.handler import ModelHandler

_perf_counter = time.perf_counter
_monotonic = time.monotonic


class Replica:
    """The model a replica serves and the rules around serving it.

    Args:
        endpoint_name: The endpoint served; a request naming another is NOT_FOUND.
        model_name: The model served (a V2 client may address the model by it).
        replica_id: Returned with every answer, so a caller sees which replica served it.
        metrics: The replica's metrics, labelled with the endpoint.
        max_payload_bytes: Largest request body or input tensor accepted.
    """

    def __init__(
        self,
        endpoint_name: str,
        model_name: str,
        replica_id: str,
        metrics: InferenceMetrics,
        max_payload_bytes: int,
    ) -> None:
        self.endpoint_name = endpoint_name
        self.model_name = model_name
        self.replica_id = replica_id
        self.metrics = metrics
        self.max_payload_bytes = max_payload_bytes
        self._handler: ModelHandler | None = None
        self._draining = False
        self._last_refused = 0.0  # monotonic time a draining replica last refused a call
        self._predict_metrics = metrics.protocols["predict"]
        self._v2_metrics = metrics.protocols["v2"]
        # Names a V2 client may use for this model; an empty name means "the one model here".
        self._model_names = frozenset(
            name for name in (endpoint_name, model_name, self.display_name) if name
        )

    @property
    def handler(self) -> ModelHandler | None:
        """The loaded handler, or None while loading."""
        return self._handler

    @property
    def is_ready(self) -> bool:
        """True once the model is loaded and until draining starts."""
        return self._handler is not None and not self._draining

    @property
    def display_name(self) -> str:
        """The name this replica reports for its model: the endpoint's, else the model's."""
        return self.endpoint_name or self.model_name or "model"

    def set_loaded(self, handler: ModelHandler, load_seconds: float) -> None:
        """Starts serving `handler` (after its warm-up passed)."""
        self.metrics.model_load_seconds.set(load_seconds)
        self._handler = handler

    def drain(self) -> None:
        """Refuses new requests from now on (UNAVAILABLE); requests already running finish."""
        self._last_refused = _monotonic()
        self._draining = True

    def wait_until_quiet(self, quiet_s: float, timeout_s: float) -> bool:
        """After `drain`, waits until no call was refused for `quiet_s`, or for `timeout_s`.

        Callers that were refused go elsewhere (the client retries on another replica and
        re-reads the replica list), so quiet means none is still sending here. Only then
        should the gRPC server stop: it fails calls that reached it but no handler yet with
        CANCELLED rather than UNAVAILABLE (grpc/grpc#41785), and clients do not retry that.

        Returns:
            True once quiet; False when `timeout_s` passed first.
        """
        deadline = _monotonic() + timeout_s
        while True:
            now = _monotonic()
            quiet_for = now - self._last_refused
            if quiet_for >= quiet_s:
                return True
            if now >= deadline:
                return False
            time.sleep(min(quiet_s - quiet_for, deadline - now))

    def predict(
        self, body: bytes | str, content_type: str, accept: str, endpoint_name: str
    ) -> tuple[bytes, str]:
        """Serves one Predict request through the handler chain.

        Args:
            body: The request body (`str` when it came as text).
            content_type: The request's content type; empty means `application/json`.
            accept: The requested answer type; empty means the model's default accept.
            endpoint_name: The endpoint the caller meant; empty skips the check.

        Returns:
            The answer body and its content type.

        Raises:
            Unavailable: The model is not loaded yet, or the replica is draining.
            NotFound: `endpoint_name` names another endpoint.
            ResourceExhausted: The body is over `max_payload_bytes`.
            InvalidArgument: The payload, content type or accept cannot be served.
            ModelError: The user's code raised.
        """
        metrics = self._predict_metrics
        metrics.in_flight.inc()
        started = _perf_counter()
        try:
            handler = self._handler
            if handler is None or self._draining:
                raise self._unavailable()
            if endpoint_name and endpoint_name != self.endpoint_name:
                raise NotFound(
                    f"this replica serves endpoint {self.endpoint_name!r}, not {endpoint_name!r}"
                )
            # len(str) counts characters, at most the UTF-8 size; encode only when it matters.
            if len(body) > self.max_payload_bytes or (
                type(body) is str
                and len(body) * 4 > self.max_payload_bytes
                and len(body.encode()) > self.max_payload_bytes
            ):
                raise self._too_large()
            answer = handler.invoke(body, content_type, accept)
        except BaseException as err:
            metrics.by_outcome[outcome_of(err)].inc()
            raise
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(_perf_counter() - started)
        metrics.ok.inc()
        return answer

    def infer(self, model_name: str, data: np.ndarray[Any, Any]) -> Any:
        """Serves one Open Inference V2 request: the predict step on a decoded input tensor.

        `input_fn` and `output_fn` are skipped: the tensor is the decoded input already.

        Args:
            model_name: The model the caller meant (endpoint or model name; empty for this one).
            data: The input tensor, 2-D (rows by features).

        Returns:
            What `predict_fn` or `model.predict` returned.

        Raises:
            Unavailable: The model is not loaded yet, or the replica is draining.
            NotFound: `model_name` is not this replica's model.
            ResourceExhausted: The tensor is over `max_payload_bytes`.
            FailedPrecondition: The model defines transform_fn, which takes bodies, not tensors.
            InvalidArgument: Wrong number of features.
            ModelError: The user's code raised.
        """
        metrics = self._v2_metrics
        metrics.in_flight.inc()
        started = _perf_counter()
        try:
            handler = self._handler
            if handler is None or self._draining:
                raise self._unavailable()
            self.check_model_name(model_name)
            if data.nbytes > self.max_payload_bytes:
                raise self._too_large()
            prediction = handler.predict(data)
        except BaseException as err:
            metrics.by_outcome[outcome_of(err)].inc()
            raise
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(_perf_counter() - started)
        metrics.ok.inc()
        return prediction

    def model_signature(self, model_name: str) -> tuple[str, int | None, str | None, str]:
        """What V2 ModelMetadata reports: (name, input width, prediction dtype kind, input
        datatype: the one the model shows it was trained on, see `model_dtype`).

        Raises:
            NotFound: `model_name` is not this replica's model.
            Unavailable: The model is still loading.
        """
        self.check_model_name(model_name)
        handler = self._handler
        if handler is None:
            raise self._unavailable()
        return (
            self.display_name,
            handler.n_features_in,
            self.prediction_kind(),
            model_dtype.input_datatype(handler.model),
        )

    def prediction_kind(self) -> str | None:
        """NumPy dtype kind of what `infer` returns, when the model tells; None otherwise.

        Known only on the default predict path: a classifier's `classes_` give the labels'
        type, any other model's `predict` returns floats. A custom predict_fn may return
        anything.
        """
        handler = self._handler
        if handler is None or not handler.uses_default_handlers:
            return None
        classes = getattr(handler.model, "classes_", None)
        if classes is not None:
            return str(np.asarray(classes).dtype.kind)
        return "f"

    def check_model_name(self, model_name: str) -> None:
        """Raises NotFound unless `model_name` is empty or names this replica's model."""
        if model_name and model_name not in self._model_names:
            known = " or ".join(repr(name) for name in sorted(self._model_names)) or "none"
            raise NotFound(f"unknown model {model_name!r}; this replica serves {known}")

    def _unavailable(self) -> Unavailable:
        if self._draining:
            self._last_refused = _monotonic()
            return Unavailable("replica is draining; retry on another replica")
        return Unavailable("the model is still loading; retry shortly")

    def _too_large(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"payload exceeds the limit of {self.max_payload_bytes} bytes "
            "(--max-payload-bytes); split the request into smaller batches"
        )
