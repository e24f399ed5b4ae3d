"""CallLimiter on a real in-process gRPC server: classes, per-caller limits, idle streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from services.runtime.call_limits import (
    WORKER_MARKER,
    CallClass,
    CallLimiter,
    IdleCallWatchdog,
    caller_of,
    has_worker_marker,
)

SERVICE = "test.Limited"
UPLOAD = f"/{SERVICE}/Upload"
ECHO = f"/{SERVICE}/Echo"


@pytest.fixture
def served() -> Iterator[tuple[grpc.Channel, CallLimiter, threading.Event]]:
    release = threading.Event()

    def upload(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        received = b"".join(requests)
        return received

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    workers = CallClass(
        "worker transfer", frozenset({UPLOAD}), 1, 1, 0.2, ("--w", "--w"), has_worker_marker
    )
    users = CallClass("stream", frozenset({UPLOAD}), 3, 2, 3.0, ("--max", "--per-caller"))
    limiter = CallLimiter([workers, users], IdleCallWatchdog(0.05))
    server = grpc.server(
        futures.ThreadPoolExecutor(2 + limiter.reserved_threads), interceptors=[limiter]
    )
    handlers = {
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    limiter.watchdog.loop.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, limiter, release
    finally:
        release.set()
        channel.close()
        server.stop(0).wait()
        limiter.watchdog.loop.stop()


def _held(release: threading.Event) -> Iterator[bytes]:
    yield b"header"
    release.wait(10)


def test_a_caller_beyond_its_limit_is_refused_and_unary_calls_still_answer(
    served: tuple[grpc.Channel, CallLimiter, threading.Event],
) -> None:
    channel, limiter, release = served
    upload = channel.stream_unary(UPLOAD)
    held = [upload.future(_held(release)) for _ in range(2)]
    deadline = time.monotonic() + 5
    while limiter.in_flight("stream") < 2:
        assert time.monotonic() < deadline and not any(call.done() for call in held)
        time.sleep(0.01)
    with pytest.raises(grpc.RpcError) as refused:
        upload(_held(release), timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--per-caller=2" in str(refused.value.details())
    assert channel.unary_unary(ECHO)(b"still here", timeout=2) == b"still here"
    # A worker's transfer has capacity of its own.
    assert upload(iter([b"a", b"b"]), metadata=[WORKER_MARKER], timeout=5) == b"ab"


def test_an_idle_upload_is_ended_with_deadline_exceeded_and_its_slot_freed(
    served: tuple[grpc.Channel, CallLimiter, threading.Event],
) -> None:
    channel, limiter, release = served
    upload = channel.stream_unary(UPLOAD)
    with pytest.raises(grpc.RpcError) as ended:
        upload(_held(release), timeout=15)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no message for 3 s" in str(ended.value.details())
    # The handler lets go of its slot as it unwinds, which may be just after the status left.
    deadline = time.monotonic() + 5
    while limiter.in_flight("stream"):
        assert time.monotonic() < deadline, "the ended upload kept its slot"
        time.sleep(0.01)
    assert upload(iter([b"x"]), timeout=5) == b"x"


def test_callers_are_told_by_token_else_by_address() -> None:
    by_token = caller_of([("authorization", "Bearer a")], "ipv4:127.0.0.1:5000")
    assert by_token.startswith("token ") and "Bearer" not in by_token
    assert by_token != caller_of([("authorization", "Bearer b")], "ipv4:127.0.0.1:5000")
    assert caller_of([], "ipv4:127.0.0.1:5000") == caller_of([], "ipv4:127.0.0.1:6000")
    assert caller_of([], "ipv6:[::1]:5000") == "address ipv6:[::1]"
