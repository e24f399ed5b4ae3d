"""Bounded capacity for long calls, so streams and long polls cannot starve unary calls.

A synchronous grpcio server runs every call on one thread of its pool for as long as the call
lasts: a log follower holds its thread until the job ends, an upload that sent its header and
then nothing holds one forever. With one shared pool, enough of those take every thread, and
Describe, health checks and the heartbeats that keep leases alive wait behind them.

`CallLimiter` is a server interceptor that sorts methods into `CallClass`es (e.g. "stream":
log follows, uploads, downloads; "long poll": task leases that wait). Each class has its own
capacity, and the server's pool is sized as the unary threads plus every class's capacity, so
calls outside any class always find a thread. A call of a class that is full, or whose caller
already holds `per_caller` of its calls, is refused at once with RESOURCE_EXHAUSTED and a
message naming the limit and the flag that sets it. Callers are told apart by their bearer
token (a digest of it) or, without one, by their address.

A client-streaming call (an upload) of a class with `idle_timeout_s` is also watched: when no
message arrived for that long, the call is ended with DEADLINE_EXCEEDED; the handler's request
iterator then fails, so what it had stored so far is discarded (the artifact store removes its
temporary file). `IdleCallWatchdog.step()` does one check; its `loop` runs it periodically.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from services.runtime.components import StepLoop

log = logging.getLogger(__name__)

# Call metadata with which skmaker's own workers mark their calls (`DispatchLink`), so that a
# service without tokens can still keep their transfers apart from users' streams.
WORKER_MARKER = ("x-skmaker-caller", "worker")


def has_worker_marker(metadata: Sequence[tuple[str, Any]]) -> bool:
    """Whether the call carries `WORKER_MARKER`."""
    return WORKER_MARKER in [(key, value) for key, value in metadata]


@dataclass(frozen=True)
class CallClass:
    """Methods that share one bounded capacity.

    Attributes:
        name: for messages and logs ("stream", "long poll").
        methods: full gRPC method names (``/skmaker.v1.TrainingService/GetTrainingJobLogs``).
        capacity: calls of the class in flight at once, over all callers.
        per_caller: calls of the class one caller may have in flight at once.
        idle_timeout_s: a client stream with no message for this long is ended; 0: never.
        flags: the flags that set capacity and per_caller, named in refusals.
        callers: which calls of `methods` belong to the class, by their metadata; None: all.
            A method may be in several classes: the first whose `callers` accepts it wins.
    """

    name: str
    methods: frozenset[str]
    capacity: int
    per_caller: int
    idle_timeout_s: float = 0.0
    flags: tuple[str, str] = ("", "")
    callers: Callable[[Sequence[tuple[str, Any]]], bool] | None = None


class _Occupancy:
    """In-flight calls of one class, overall and per caller."""

    def __init__(self, call_class: CallClass) -> None:
        self.call_class = call_class
        self.total = 0
        self.by_caller: dict[str, int] = {}


class WatchedCall:
    """A client stream the watchdog may end: when it last received a message."""

    def __init__(self, context: grpc.ServicerContext, idle_timeout_s: float, what: str) -> None:
        self.context = context
        self.idle_timeout_s = idle_timeout_s
        self.what = what
        self.last_message = time.monotonic()
        self.expired = False

    def touch(self) -> None:
        """Records that a message arrived."""
        self.last_message = time.monotonic()


class IdleCallWatchdog:
    """Ends client streams that sent nothing for their class's idle timeout."""

    def __init__(self, interval_s: float = 1.0) -> None:
        """Checks every `interval_s` once `loop` is started."""
        self._calls: set[WatchedCall] = set()
        self._lock = threading.Lock()
        self.loop = StepLoop("idle-stream-watchdog", self.step, interval_s)

    def watch(self, call: WatchedCall) -> None:
        """Starts watching `call`."""
        with self._lock:
            self._calls.add(call)

    def forget(self, call: WatchedCall) -> None:
        """Stops watching `call` (it ended)."""
        with self._lock:
            self._calls.discard(call)

    def step(self) -> int:
        """Ends every watched call idle past its timeout; returns how many it ended."""
        now = time.monotonic()
        with self._lock:
            idle = [c for c in self._calls if now - c.last_message > c.idle_timeout_s]
            for call in idle:
                self._calls.discard(call)
        for call in idle:
            call.expired = True
            message = (
                f"{call.what}: no message for {call.idle_timeout_s:g} s; the call is ended and "
                "its partial data discarded (--stream-idle-timeout-s)"
            )
            log.warning("ending idle call: %s", message)
            end_call(call.context, grpc.StatusCode.DEADLINE_EXCEEDED, message)
        return len(idle)


def end_call(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """Ends a call from outside its handler's thread, sending `code` and `details`.

    `context.abort` only works in the handler's own thread, and `context.cancel()` sends
    CANCELLED without a message. grpcio's call object accepts a status to cancel with; it is
    reached through the context's private `_rpc_event` (grpcio 1.85). Where that is missing
    the call is cancelled plainly, which still frees the handler.
    """
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    if call is not None:
        try:
            call.cancel(code.value[0], details)
            return
        except (TypeError, AttributeError):  # another grpcio: fall back to a plain cancel
            pass
    context.cancel()


def caller_of(metadata: Sequence[tuple[str, Any]] | None, peer: str) -> str:
    """Who makes a call: a digest of its bearer token, else the host part of `peer`."""
    for key, value in metadata or ():
        if key == "authorization" and value:
            text = value if isinstance(value, str) else bytes(value).decode("latin-1")
            return "token " + hashlib.sha256(text.encode()).hexdigest()[:12]
    # "ipv4:127.0.0.1:53211", "ipv6:[::1]:53211", "unix:/path": drop the port.
    host = peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
    return "address " + host


class CallLimiter(grpc.ServerInterceptor):
    """Admits the calls of each `CallClass` up to its capacity and per-caller limit."""

    def __init__(
        self,
        classes: Sequence[CallClass],
        watchdog: IdleCallWatchdog,
        on_refused: Callable[[str, str], object] | None = None,
    ) -> None:
        """Limits the methods of `classes`; `watchdog` ends idle client streams.

        `on_refused(class name, "capacity" or "per caller")` hears of every refusal.
        """
        self._on_refused = on_refused
        self._by_method: dict[str, list[_Occupancy]] = {}
        for call_class in classes:
            occupancy = _Occupancy(call_class)
            for method in call_class.methods:
                self._by_method.setdefault(method, []).append(occupancy)
        self._classes = tuple(classes)
        self._lock = threading.Lock()
        self.watchdog = watchdog

    @property
    def reserved_threads(self) -> int:
        """Threads the server's pool needs beyond its unary ones: every class's capacity."""
        return sum(call_class.capacity for call_class in self._classes)

    def in_flight(self, class_name: str) -> int:
        """Calls of the class `class_name` in flight now."""
        with self._lock:
            occupancies = {o for each in self._by_method.values() for o in each}
            return sum(o.total for o in occupancies if o.call_class.name == class_name)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        metadata = tuple(handler_call_details.invocation_metadata or ())
        occupancy = next(
            (
                o
                for o in self._by_method.get(handler_call_details.method, ())
                if o.call_class.callers is None or o.call_class.callers(metadata)
            ),
            None,
        )
        if handler is None or occupancy is None:
            return handler
        return self._limited(handler, occupancy, handler_call_details.method, metadata)

    def _admit(self, occupancy: _Occupancy, caller: str) -> str:
        """Takes a slot for `caller`; returns "" or why it was refused."""
        refused, limit = self._try_admit(occupancy, caller)
        if refused and self._on_refused is not None:
            self._on_refused(occupancy.call_class.name, limit)
        return refused

    def _try_admit(self, occupancy: _Occupancy, caller: str) -> tuple[str, str]:
        call_class = occupancy.call_class
        with self._lock:
            held = occupancy.by_caller.get(caller, 0)
            if occupancy.total >= call_class.capacity:
                return (
                    f"the server has {occupancy.total} {call_class.name} calls open, its limit "
                    f"({call_class.flags[0]}={call_class.capacity}); retry later"
                ), "capacity"
            if held >= call_class.per_caller:
                return (
                    f"this caller ({caller.split(' ')[0]}) has {held} {call_class.name} calls "
                    f"open, the limit per caller ({call_class.flags[1]}={call_class.per_caller})"
                    "; end some first"
                ), "per caller"
            occupancy.total += 1
            occupancy.by_caller[caller] = held + 1
            return "", ""

    def _release(self, occupancy: _Occupancy, caller: str) -> None:
        with self._lock:
            occupancy.total -= 1
            left = occupancy.by_caller[caller] - 1
            if left:
                occupancy.by_caller[caller] = left
            else:
                del occupancy.by_caller[caller]

    def _limited(
        self,
        handler: grpc.RpcMethodHandler[Any, Any],
        occupancy: _Occupancy,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` with admission first and release when the call ends."""
        idle_timeout_s = occupancy.call_class.idle_timeout_s

        def admit(context: grpc.ServicerContext) -> str:
            caller = caller_of(metadata, context.peer())
            refused = self._admit(occupancy, caller)
            if refused:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
            return caller

        def watched(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            if not idle_timeout_s:
                yield from requests
                return
            call = WatchedCall(context, idle_timeout_s, method.rsplit("/", 1)[-1])
            self.watchdog.watch(call)
            try:
                for request in requests:
                    call.touch()
                    yield request
            finally:
                self.watchdog.forget(call)

        def unary_response(behaviour: Callable[..., Any], streaming_in: bool) -> Any:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                caller = admit(context)
                try:
                    if streaming_in:
                        request = watched(request, context)
                    return behaviour(request, context)
                finally:
                    self._release(occupancy, caller)

            return run

        def stream_response(behaviour: Callable[..., Any], streaming_in: bool) -> Any:
            def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                caller = admit(context)
                try:
                    if streaming_in:
                        request = watched(request, context)
                    yield from behaviour(request, context)
                finally:
                    self._release(occupancy, caller)

            return run

        # grpc's handlers are namedtuples at run time; its stubs declare only the abstract class.
        replaceable: Any = handler
        if handler.request_streaming and handler.response_streaming:
            return replaceable._replace(  # type: ignore[no-any-return]
                stream_stream=stream_response(replaceable.stream_stream, True)
            )
        if handler.request_streaming:
            return replaceable._replace(  # type: ignore[no-any-return]
                stream_unary=unary_response(replaceable.stream_unary, True)
            )
        if handler.response_streaming:
            return replaceable._replace(  # type: ignore[no-any-return]
                unary_stream=stream_response(replaceable.unary_stream, False)
            )
        return replaceable._replace(  # type: ignore[no-any-return]
            unary_unary=unary_response(replaceable.unary_unary, False)
        )
