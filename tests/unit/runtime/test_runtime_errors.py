"""The error interceptor through a real in-process gRPC server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from services.runtime.auth import BearerTokenInterceptor, token_metadata
from services.runtime.errors import ErrorInterceptor, NotFound, ResourceExhausted

SERVICE = "skmaker.test.Echo"


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"missing":
        raise NotFound("no such thing: 'missing'")
    if request == b"bug":
        raise ValueError("an unexpected bug")
    return request


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise ResourceExhausted("the stream hit its limit")


def _start(interceptors: list[Any]) -> tuple[grpc.Server, grpc.Channel]:
    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    server, channel = _start([ErrorInterceptor()])
    yield channel
    channel.close()
    server.stop(None)


def test_skmaker_errors_keep_their_code_and_message(channel: grpc.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Unary")
    assert call(b"hello", timeout=5) == b"hello"
    for _ in range(2):  # the second call goes through the cached wrapper
        with pytest.raises(grpc.RpcError) as raised:
            call(b"missing", timeout=5)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert raised.value.details() == "no such thing: 'missing'"


def test_other_exceptions_are_internal_with_a_request_id(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(f"/{SERVICE}/Unary")(b"bug", timeout=5)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details().startswith("internal error; request id ")
    assert "unexpected bug" not in raised.value.details()


def test_streams_end_with_the_errors_code(channel: grpc.Channel) -> None:
    answers = channel.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5)
    assert next(answers) == b"first"
    with pytest.raises(grpc.RpcError) as raised:
        next(answers)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_token_is_checked_before_any_handler_runs() -> None:
    server, channel = _start([BearerTokenInterceptor("s3cret"), ErrorInterceptor()])
    try:
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"hello", timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as wrong:
            call(b"hello", timeout=5, metadata=token_metadata("wrong"))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert call(b"hello", timeout=5, metadata=token_metadata("s3cret")) == b"hello"
    finally:
        channel.close()
        server.stop(None)
