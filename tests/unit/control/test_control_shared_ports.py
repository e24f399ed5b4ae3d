"""The stable-address trick: a bound, never-listening SO_REUSEPORT socket reserves the port."""

from __future__ import annotations

import socket
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.control.backends.shared_ports import reserve_shared_port

HOST = "127.0.0.1"


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, port))
    sock.listen(64)
    return sock


def _grpc_server(port: int) -> tuple[grpc.Server, int]:
    """A health server bound like a replica binds the shared port (grpc.so_reuseport=1)."""
    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.so_reuseport", 1)])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    bound = server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    return server, bound


def test_connections_are_refused_while_only_the_reservation_holds_the_port() -> None:
    reservation = reserve_shared_port(HOST)
    try:
        port = reservation.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=2)
    finally:
        reservation.close()


def test_a_socket_without_so_reuseport_cannot_take_the_reserved_port() -> None:
    reservation = reserve_shared_port(HOST)
    intruder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(OSError):
            intruder.bind((HOST, reservation.getsockname()[1]))
    finally:
        intruder.close()
        reservation.close()


def test_port_zero_reservations_never_share_a_port() -> None:
    reservations = [reserve_shared_port(HOST) for _ in range(20)]
    try:
        ports = {sock.getsockname()[1] for sock in reservations}
        assert len(ports) == len(reservations)
    finally:
        for sock in reservations:
            sock.close()


def test_every_connection_reaches_a_listening_socket_never_the_reservation() -> None:
    reservation = reserve_shared_port(HOST)
    port = reservation.getsockname()[1]
    listener = _listener(port)
    listener.settimeout(2)
    clients = []
    try:
        for _ in range(50):
            clients.append(socket.create_connection((HOST, port), timeout=2))
        accepted = [listener.accept()[0] for _ in clients]
        assert len(accepted) == len(clients)
        for conn in accepted:
            conn.close()
    finally:
        for client in clients:
            client.close()
        listener.close()
        reservation.close()


def test_grpc_replicas_bind_the_reserved_port_and_serve_until_the_last_one_leaves() -> None:
    reservation = reserve_shared_port(HOST)
    port = reservation.getsockname()[1]
    first, bound_first = _grpc_server(port)
    second, bound_second = _grpc_server(port)
    try:
        assert bound_first == bound_second == port
        for _ in range(10):
            # A fresh channel per call: each is a new connection the kernel places.
            with grpc.insecure_channel(f"{HOST}:{port}") as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
        first.stop(None).wait()
        second.stop(None).wait()
        # Both replicas gone, the reservation still there: refused, not hanging.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=2)
    finally:
        first.stop(None)
        second.stop(None)
        reservation.close()


def test_a_port_can_be_reserved_again_while_replicas_still_hold_it() -> None:
    """A restarted control re-reserves the recorded port next to surviving replicas."""
    reservation = reserve_shared_port(HOST)
    port = reservation.getsockname()[1]
    listener = _listener(port)
    reservation.close()  # the control died
    try:
        again = reserve_shared_port(HOST, port)
        assert again.getsockname()[1] == port
        again.close()
    finally:
        listener.close()
