"""`EndpointRouter`: sends Predict calls straight to an endpoint's replicas, balanced per request.

The control is never on the request path. The router learns where the replicas are from a
resolver (in practice DescribeEndpoint through the session) and opens one gRPC channel over all
of them with client-side `round_robin`, so consecutive requests go to different replicas even
over one long-lived channel. When every replica address is an IP literal the channel targets
them directly (`ipv4:10.0.0.1:5001,10.0.0.1:5002`); otherwise (host names, or no replica
serving yet) it targets the endpoint's stable address, where the platform balances.

The list is kept fresh without waiting on the control: a background thread re-resolves every
`refresh_interval_s` while the router is in use — every `SETTLING_REFRESH_INTERVAL_S` while the
last answer said the replica set is changing (a replica starting, the endpoint not InService),
so a replica the autoscaler adds gets calls as soon as it serves — and a call that meets
UNAVAILABLE wakes it at once. A changed list gets a new channel; the old one is closed when its
last in-flight call ends.

Every call has a deadline covering its retries. Only UNAVAILABLE is retried (a replica that is
draining, restarting or gone answers it, so the retry lands on another replica), a few times
with a short backoff; every other failure raises at once as the client's error for its code.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from skmaker.errors import SkmakerClientError, Unavailable, error_for_rpc
from skmaker.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger("skmaker")

# SageMaker's InvokeEndpoint answers within 60 s or fails (contract §2.5).
DEFAULT_TIMEOUT_S = 60.0
# The steady pace: one describe every 2 s per endpoint in use is cheap for the control, and
# it notices an autoscaler's scale-out while the new replica is still starting (a second or
# two), from when on the settling pace below applies.
DEFAULT_REFRESH_INTERVAL_S = 2.0
# While replicas start (a scale-out, a replacement, a model update) the list is re-read this
# often, so a new replica gets calls within about half a second of serving.
SETTLING_REFRESH_INTERVAL_S = 0.5
_SETTLING_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating"})

# UNAVAILABLE is retried this many times in all, backing off from 0.1 s and doubling to at most
# 1 s (about 2.5 s in all): long enough for the address list to be refreshed and for a retry to
# reach another replica, short enough to report an endpoint that is really down.
RETRY_ATTEMPTS = 6
RETRY_FIRST_BACKOFF_S = 0.1
RETRY_MAX_BACKOFF_S = 1.0

# A router whose endpoint gets no calls for this long stops its refresh thread; the next call
# starts it again (and refreshes at once), so idle notebooks do not poll the control forever.
IDLE_STOP_S = 60.0

# Refreshes are at least this far apart, so a burst of failing calls costs one describe (an
# UNAVAILABLE that comes sooner after a refresh gets the next one at the end of the gap).
MIN_REFRESH_GAP_S = 0.5

_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.lb_policy_name", "round_robin"),
    # Answers may be as large as the replica allows (6 MiB by default, configurable); grpc's
    # default 4 MiB receive limit would cut them off on the caller's side.
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # Replicas accept data-less pings only every 5 minutes (grpc's default).
    ("grpc.keepalive_time_ms", 360_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)

Resolver = Callable[[], str]
"""Returns the channel target for an endpoint's current replicas (see `routing_target`)."""


class RoutingTarget(str):
    """A channel target that also tells whether the endpoint's replica set is still changing.

    It is a `str`, so a resolver may return plain strings (they never count as settling).
    """

    is_settling: bool

    def __new__(cls, target: str, *, is_settling: bool = False) -> RoutingTarget:
        value = super().__new__(cls, target)
        value.is_settling = is_settling
        return value


def _ip_literal_version(address: str) -> int | None:
    """4 or 6 when `address` is `ip:port` / `[ip6]:port` with a literal IP, else None."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def addresses_target(addresses: Sequence[str]) -> str:
    """The channel target that balances over `addresses` (host:port strings).

    All IPv4 literals give `ipv4:a:p,b:q`, all IPv6 literals `ipv6:[a]:p,[b]:q`; a single
    address of another form is returned as is (resolved by DNS, balanced over its records).

    Raises:
        ValueError: for no address, or several that are not all IPv4 or all IPv6 literals
            (one channel cannot name several host names).
    """
    unique = sorted(set(addresses))
    if not unique:
        raise ValueError("no replica address to connect to")
    versions = {_ip_literal_version(address) for address in unique}
    if versions == {4}:
        return "ipv4:" + ",".join(unique)
    if versions == {6}:
        return "ipv6:" + ",".join(unique)
    if len(unique) == 1:
        return unique[0]
    raise ValueError(f"cannot balance over {unique}: give IP literals (ip:port) or one address")


def routing_target(description: Mapping[str, Any]) -> RoutingTarget:
    """Where Predict calls for a described endpoint (a DescribeEndpoint dict) should go.

    The Serving replicas' own addresses when they are all IP literals; otherwise the
    endpoint's stable `Address`. The target is settling while a replica is Starting or the
    endpoint is Creating, Updating or SystemUpdating.

    Raises:
        Unavailable: when no replica is serving and the endpoint has no stable address.
    """
    is_settling = description.get("EndpointStatus") in _SETTLING_STATUSES or any(
        replica.get("State") == "Starting" for replica in description.get("Replicas", [])
    )
    return RoutingTarget(_target_of(description), is_settling=is_settling)


def _target_of(description: Mapping[str, Any]) -> str:
    serving = [
        replica["Address"]
        for replica in description.get("Replicas", [])
        if replica.get("State") == "Serving" and replica.get("Address")
    ]
    if serving:
        try:
            return addresses_target(serving)
        except ValueError:
            pass  # host names: the stable address balances over them
    if description.get("Address"):
        return str(description["Address"])
    if serving:
        return str(serving[0])
    raise Unavailable(
        f"endpoint {description.get('EndpointName', '?')} has no serving replica "
        f"(status {description.get('EndpointStatus', 'Unknown')})"
    )


def _backoff_s(attempt: int) -> float:
    base = min(RETRY_MAX_BACKOFF_S, RETRY_FIRST_BACKOFF_S * 2**attempt)
    return float(base * random.uniform(0.8, 1.2))


def _is_unavailable(err: grpc.RpcError) -> bool:
    return callable(getattr(err, "code", None)) and err.code() == grpc.StatusCode.UNAVAILABLE


@dataclass
class _ChannelGeneration:
    """One channel to one target, closed once replaced and no call is using it."""

    target: str
    channel: grpc.Channel
    predict: grpc.UnaryUnaryMultiCallable[Any, Any]
    in_flight: int = 0
    retired: bool = False


class EndpointRouter:
    """Calls Predict on one endpoint's replicas, balancing per request; thread-safe.

    Args:
        endpoint_name: sent in every request, so a replica of another endpoint (an address
            reused after a change) answers NOT_FOUND instead of a wrong prediction; empty
            skips that check.
        resolve: returns the current channel target (`routing_target` of a fresh
            DescribeEndpoint); called once before the first call and then in the background.
            None for a fixed target.
        target: a fixed channel target (see `addresses_target`), when `resolve` is None.
        metadata: sent with every call (the bearer token).
        credentials: TLS credentials for the replicas; None for plaintext.
        timeout_s: default deadline of a call, retries included.
        refresh_interval_s: how often the background thread re-resolves while in use.

    Raises:
        ValueError: when neither or both of `resolve` and `target` are given.
    """

    def __init__(
        self,
        endpoint_name: str = "",
        *,
        resolve: Resolver | None = None,
        target: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
    ) -> None:
        if (resolve is None) == (target is None):
            raise ValueError("give exactly one of resolve and target")
        self.endpoint_name = endpoint_name
        self.timeout_s = timeout_s
        self.refresh_interval_s = refresh_interval_s
        self._resolve = resolve
        self._metadata = tuple(metadata)
        self._credentials = credentials
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._current: _ChannelGeneration | None = None
        self._closed = False
        self._last_call = 0.0
        self._last_refresh = 0.0
        self._is_settling = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        if target is not None:
            self._current = self._open(target)

    def __repr__(self) -> str:
        target = self._current.target if self._current else None
        return f"EndpointRouter({self.endpoint_name!r}, target={target!r})"

    @property
    def next_refresh_s(self) -> float:
        """How long the background thread waits before re-resolving (unless woken)."""
        if self._is_settling:
            return min(self.refresh_interval_s, SETTLING_REFRESH_INTERVAL_S)
        return self.refresh_interval_s

    @property
    def target(self) -> str | None:
        """The channel target calls go to now (None before the first resolve)."""
        current = self._current
        return current.target if current else None

    # -- channels ------------------------------------------------------------------------------

    def _open(self, target: str) -> _ChannelGeneration:
        if self._credentials is not None:
            channel = grpc.secure_channel(target, self._credentials, _CHANNEL_OPTIONS)
        else:
            channel = grpc.insecure_channel(target, _CHANNEL_OPTIONS)
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return _ChannelGeneration(target=target, channel=channel, predict=stub.Predict)

    def _switch_to(self, target: str) -> None:
        """Makes `target` current; the previous channel closes after its in-flight calls."""
        with self._lock:
            if self._closed or (self._current and self._current.target == target):
                return
            previous, self._current = self._current, self._open(target)
            to_close = None
            if previous is not None:
                previous.retired = True
                if previous.in_flight == 0:
                    to_close = previous
        log.debug("endpoint %s: calls now go to %s", self.endpoint_name, target)
        if to_close is not None:
            to_close.channel.close()

    def _acquire(self) -> _ChannelGeneration:
        with self._lock:
            if self._closed:
                raise ValueError(f"the router of endpoint {self.endpoint_name!r} is closed")
            current = self._current
            assert current is not None, "resolved before the first call"
            current.in_flight += 1
            return current

    def _release(self, generation: _ChannelGeneration) -> None:
        with self._lock:
            generation.in_flight -= 1
            close = generation.retired and generation.in_flight == 0
        if close:
            generation.channel.close()

    # -- resolving -----------------------------------------------------------------------------

    def refresh(self) -> str | None:
        """Re-resolves the target now and switches to it if it changed; returns it.

        Raises:
            SkmakerClientError: what the resolver raised (e.g. NotFound for a deleted endpoint).
        """
        if self._resolve is None:
            return self.target
        with self._refresh_lock:
            self._last_refresh = time.monotonic()
            target = self._resolve()
            self._is_settling = bool(getattr(target, "is_settling", False))
            self._switch_to(str(target))
            return target

    def _ensure_resolved(self) -> None:
        self._last_call = time.monotonic()
        if self._current is None:
            self.refresh()
        elif self._resolve is not None and self._refresher is None:
            # The thread stopped while the endpoint was idle: the list may be old, refresh now.
            self._wake.set()
        if self._resolve is not None and self._refresher is None:
            self._start_refresher()

    def _start_refresher(self) -> None:
        with self._lock:
            if self._closed or self._refresher is not None:
                return
            self._refresher = threading.Thread(
                target=_refresh_loop,
                args=(weakref.ref(self), self._stop, self._wake),
                name=f"skmaker-router-{self.endpoint_name}",
                daemon=True,
            )
            self._refresher.start()

    def _refresh_in_background(self) -> bool:
        """One background round; returns False when the thread should end (idle or closed)."""
        if self._closed:
            return False
        if time.monotonic() - self._last_call > IDLE_STOP_S:
            with self._lock:
                self._refresher = None
            return False
        try:
            self.refresh()
        except SkmakerClientError as err:
            # The control being down must not disturb calls: keep the last known replicas.
            log.debug("endpoint %s: keeping the replica list: %s", self.endpoint_name, err)
        return True

    def _wake_refresher(self) -> None:
        if self._resolve is None:
            return
        self._wake.set()
        if self._refresher is None:
            self._start_refresher()

    def _refresh_pause_s(self) -> float:
        """What is left of MIN_REFRESH_GAP_S since the last refresh."""
        return MIN_REFRESH_GAP_S - (time.monotonic() - self._last_refresh)

    # -- calls ---------------------------------------------------------------------------------

    def invoke(
        self,
        payload: bytes | str,
        content_type: str,
        accept: str = "",
        custom_attributes: str = "",
        timeout_s: float | None = None,
    ) -> tuple[bytes, str]:
        """Calls Predict once (retrying UNAVAILABLE) and returns the answer and its type.

        Args:
            payload: the request body; `str` travels as Predict's `text`, `bytes` as `body`.
            content_type: its MIME type.
            accept: the MIME type wanted back; empty for the endpoint's default.
            custom_attributes: SageMaker's CustomAttributes, passed to the handler.
            timeout_s: deadline of the whole call, retries included (default `timeout_s`).

        Returns:
            The answer's bytes and its content type.

        Raises:
            SkmakerClientError: the subclass for the failure's status code (InvalidArgument,
                ModelError, ResourceExhausted, Unavailable after the retries, ...).
        """
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        request = inference_pb2.PredictRequest(
            endpoint_name=self.endpoint_name,
            content_type=content_type,
            accept=accept,
            custom_attributes=custom_attributes,
        )
        if isinstance(payload, str):
            request.text = payload
        else:
            request.body = bytes(payload)
        self._ensure_resolved()
        attempt = 0
        while True:
            generation = self._acquire()
            try:
                response = generation.predict(
                    request,
                    timeout=max(0.0, deadline - time.monotonic()),
                    metadata=self._metadata,
                )
            except grpc.RpcError as err:
                attempt += 1
                backoff = _backoff_s(attempt - 1)
                if (
                    not _is_unavailable(err)
                    or attempt >= RETRY_ATTEMPTS
                    or time.monotonic() + backoff >= deadline
                ):
                    raise error_for_rpc(err) from None
                self._wake_refresher()
            else:
                if response.WhichOneof("payload") == "text":
                    return response.text.encode("utf-8"), response.content_type
                return response.body, response.content_type
            finally:
                self._release(generation)
            time.sleep(backoff)

    def close(self) -> None:
        """Stops the refresh thread and closes the channels (in-flight calls are cancelled)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            current, self._current = self._current, None
        self._stop.set()
        self._wake.set()
        if current is not None:
            current.channel.close()


def _refresh_loop(
    router_ref: weakref.ref[EndpointRouter], stop: threading.Event, wake: threading.Event
) -> None:
    """The refresh thread: holds the router weakly, so a dropped router is collected."""
    while not stop.is_set():
        router = router_ref()
        if router is None:
            return
        interval_s = router.next_refresh_s
        del router
        wake.wait(interval_s)
        wake.clear()
        router = router_ref()
        if router is None or stop.is_set():
            return
        pause_s = router._refresh_pause_s()
        del router
        if pause_s > 0 and stop.wait(pause_s):
            return
        router = router_ref()
        if router is None or not router._refresh_in_background():
            return
        del router
