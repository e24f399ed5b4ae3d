"""`python -m services.runtime.healthcheck`: exit 0 only when the server says SERVING."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.runtime import healthcheck


@pytest.fixture
def served() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None).wait()


def test_serving_exits_0(served: tuple[str, health.HealthServicer]) -> None:
    address, servicer = served
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main([address]) == 0


def test_not_serving_exits_1(served: tuple[str, health.HealthServicer]) -> None:
    address, servicer = served
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([address]) == 1


def test_a_named_service_is_checked_on_its_own(served: tuple[str, health.HealthServicer]) -> None:
    address, servicer = served
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("skmaker.v1.X", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([address, "--service", "skmaker.v1.X"]) == 1
    assert healthcheck.main([address, "--service", "skmaker.v1.Unknown"]) == 1


def test_nothing_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # A bound socket that never listens: connections are refused, and no one else can take it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        assert healthcheck.main([address, "--timeout-s", "0.5"]) == 1
    assert address in capsys.readouterr().err
