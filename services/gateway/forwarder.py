"""The gateway's request path: raw bytes in, one replica chosen, raw bytes out.

Predict (`skmaker.v1.InferenceService`) and the model-level calls of the Open Inference
Protocol V2 (`inference.GRPCInferenceService`: ModelInfer, ModelReady, ModelMetadata) are
forwarded as the bytes that came in, and the replica's answer goes back as it came.

A call goes to a serving replica of its endpoint chosen by `RoutingTable.acquire` (the least
outstanding of two at random), with the caller's remaining time as its deadline (or
`default_timeout_s` if the caller gave none or more). A replica that answers UNAVAILABLE (it
is draining, or unreachable) is ejected for a moment and the call is sent again to another
replica, up to `retries` times: Predict and the V2 calls have no side effects. Any other answer
goes back to the caller with the replica's own code and message. Nothing is logged per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from services.gateway.errors import ReplicaError
from services.gateway.metrics import EndpointMetrics, GatewayMetrics
from services.gateway.routing_table import Replica
from services.gateway.table_keeper import TableKeeper
from services.runtime.errors import SkmakerError, Unavailable
from services.runtime.health_calls import health_watch
from services.runtime.tls import ClientTls, open_channel
from skmaker.v1 import inference_pb2, open_inference_pb2

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
V2_SERVICE = open_inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PREDICT = f"/{INFERENCE_SERVICE}/Predict"
MODEL_INFER = f"/{V2_SERVICE}/ModelInfer"
MODEL_READY = f"/{V2_SERVICE}/ModelReady"
MODEL_METADATA = f"/{V2_SERVICE}/ModelMetadata"
FORWARDED_METHODS = (PREDICT, MODEL_INFER, MODEL_READY, MODEL_METADATA)
SERVER_NAME = "skmaker-gateway"

log = logging.getLogger(__name__)

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
# Pause before watching a replica's health again after the watch broke.
_WATCH_RETRY_S = 0.5

_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # The replica enforces its own payload limit with a message naming it.
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # Replicas accept data-less pings only every 5 minutes (grpc's default).
    ("grpc.keepalive_time_ms", 360_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # The gateway retries UNAVAILABLE itself, on another replica.
    ("grpc.enable_retries", 0),
)


class ReplicaChannel:
    """The gateway's connection to one replica: one channel, each forwarded method on raw bytes.

    Made once when the replica joins the routing table and closed once it left and its last
    call ended (`RoutingTable` decides when).

    With `on_health_change`, it also watches the replica's grpc.health.v1 status (one Watch
    stream, on a thread) and calls `on_health_change()` whenever `serving` flips: a draining
    replica says NOT_SERVING a moment before it starts refusing calls, which is how the HAProxy
    data plane stops sending to it in time. A broken watch counts as not serving until it is
    re-established (a watch that ended after answering, as on a connection the replica aged
    out, is simply opened again).
    """

    __slots__ = ("_channel", "_closed", "_on_health_change", "calls", "serving")

    def __init__(
        self,
        address: str,
        on_health_change: Callable[[], None] | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self._channel = open_channel(address, _CHANNEL_OPTIONS, tls)
        # No serializers: bytes go out and come back untouched.
        self.calls: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = {
            method: self._channel.unary_unary(method) for method in FORWARDED_METHODS
        }
        # The control listed it SERVING; the watch corrects that within milliseconds.
        self.serving = True
        self._closed = threading.Event()
        self._on_health_change = on_health_change
        if on_health_change is not None:
            threading.Thread(
                target=self._watch_health, args=(address,), name="replica-health", daemon=True
            ).start()

    def _set_serving(self, serving: bool) -> None:
        if serving != self.serving:
            self.serving = serving
            assert self._on_health_change is not None
            self._on_health_change()

    def _watch_health(self, address: str) -> None:
        watch = health_watch(self._channel)
        while not self._closed.is_set():
            answered = False
            try:
                for answer in watch(health_pb2.HealthCheckRequest(service="")):
                    answered = True
                    self._set_serving(answer.status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.RpcError as err:
                if self._closed.is_set():
                    return
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.warning("replica %s has no health Watch; assumed serving", address)
                    return
            # A replica closes aged connections (--max-connection-age-s), which ends the watch
            # too: watch again at once. Only a watch that ends unanswered means it is gone.
            if not answered:
                self._set_serving(False)
                self._closed.wait(_WATCH_RETRY_S)

    def close(self) -> None:
        """Closes the channel (calls still on it are cancelled; the table waits for them)."""
        self._closed.set()
        self._channel.close()


class Forwarder:
    """Routes forwarded calls to replicas and counts them.

    Args:
        keeper: the routing table and its lookups.
        metrics: the gateway's metrics.
        retries: how many times a call answered UNAVAILABLE is sent to another replica.
        eject_s: how long a replica that answered UNAVAILABLE gets no new call.
        default_timeout_s: the deadline when the caller set none (or a longer one).
        metadata: sent with every forwarded call (the bearer token replicas expect).
    """

    def __init__(
        self,
        keeper: TableKeeper[ReplicaChannel],
        metrics: GatewayMetrics,
        *,
        retries: int,
        eject_s: float,
        default_timeout_s: float,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._keeper = keeper
        self._table = keeper.table
        self._metrics = metrics
        self._retries = retries
        self._eject_s = eject_s
        self._default_timeout_s = default_timeout_s
        self._metadata = tuple(metadata)

    def forward(
        self, method: str, endpoint: str, request: bytes, context: grpc.ServicerContext
    ) -> bytes:
        """Sends `request` to a serving replica of `endpoint`; returns the replica's answer.

        Raises:
            NotFound: no such endpoint.
            Unavailable: no serving replica, or every replica tried answered UNAVAILABLE.
            ReplicaError: the replica's own failure (code and message as it answered).
        """
        started = time.perf_counter()
        remaining = context.time_remaining()
        if remaining is None or remaining > self._default_timeout_s:
            remaining = self._default_timeout_s
        deadline = started + remaining
        try:
            route = self._keeper.route(endpoint)
        except SkmakerError as err:
            self._count_failure(endpoint, err.code, started)
            raise
        stats = self._metrics.for_endpoint(endpoint)
        tried: list[Replica[ReplicaChannel]] = []
        while True:
            replica = self._table.acquire(route, tried)
            if replica is None:
                # Only after an UNAVAILABLE: every replica was tried.
                stats.failed(_UNAVAILABLE)
                stats.latency.observe(time.perf_counter() - started)
                raise Unavailable(
                    f"every replica of endpoint {endpoint!r} answered UNAVAILABLE; retry shortly"
                )
            try:
                response: bytes = replica.upstream.calls[method](
                    request,
                    timeout=max(0.0, deadline - time.perf_counter()),
                    metadata=self._metadata,
                )
            except grpc.RpcError as err:
                code = err.code()
                if (
                    code is _UNAVAILABLE
                    and len(tried) < self._retries
                    and time.perf_counter() < deadline
                ):
                    self._table.eject(replica, self._eject_s)
                    tried.append(replica)
                    stats.retries.inc()
                    # The table may have moved on (a replacement replica) since the first try.
                    route = self._table.get(endpoint) or route
                    continue
                stats.failed(code)
                stats.latency.observe(time.perf_counter() - started)
                raise ReplicaError(code, err.details() or code.name) from None
            finally:
                self._table.release(replica)
            stats.ok.inc()
            stats.latency.observe(time.perf_counter() - started)
            return response

    def _count_failure(self, endpoint: str, code: grpc.StatusCode, started: float) -> None:
        stats: EndpointMetrics = (
            self._metrics.for_endpoint(endpoint)
            if self._table.get(endpoint) is not None
            else self._metrics.unrouted
        )
        stats.failed(code)
        stats.latency.observe(time.perf_counter() - started)

    def reject(self, error: SkmakerError) -> SkmakerError:
        """Counts a call refused before routing (no or malformed name); returns the error."""
        self._metrics.unrouted.failed(error.code)
        return error

    @property
    def is_ready(self) -> bool:
        """True once the routing table has been read (V2 ServerReady)."""
        return self._keeper.is_ready

    def has_endpoint(self, endpoint: str) -> bool:
        """True when `endpoint` is in the routing table (serving replicas or not)."""
        return self._table.get(endpoint) is not None
