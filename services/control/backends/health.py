"""grpc.health.v1 probes of replicas, made by the control over one cached channel per address."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2

from services.runtime.health_calls import health_check
from services.runtime.tls import ClientTls, open_channel

if TYPE_CHECKING:
    from services.runtime.health_calls import HealthCheckCall

_SERVING = health_pb2.HealthCheckResponse.SERVING
_CHANNEL_OPTIONS = (
    # A replica that restarts on the same address is probed again within a fraction of a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)


class HealthProber:
    """Checks many replicas at once: each probe is a Check("") with a short deadline."""

    def __init__(self, timeout_s: float, tls: ClientTls | None = None) -> None:
        """Probes must answer within `timeout_s`. Health is open without a token (runtime.auth).

        `tls`: how replicas serving TLS are reached; None for plaintext.
        """
        self._timeout_s = timeout_s
        self._tls = tls
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[grpc.Channel, HealthCheckCall]] = {}

    def check_all(self, addresses: Iterable[str]) -> dict[str, bool]:
        """True for each address that answered SERVING within the deadline; all in parallel."""
        futures = {}
        for address in set(addresses):
            stub = self._stub(address)
            futures[address] = stub.future(
                health_pb2.HealthCheckRequest(service=""), timeout=self._timeout_s
            )
        results: dict[str, bool] = {}
        for address, future in futures.items():
            try:
                results[address] = future.result().status == _SERVING
            except grpc.RpcError:
                results[address] = False
        return results

    def forget(self, address: str) -> None:
        """Closes the channel to an address no replica uses any more."""
        with self._lock:
            entry = self._channels.pop(address, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        """Closes every channel."""
        with self._lock:
            entries = list(self._channels.values())
            self._channels.clear()
        for channel, _stub in entries:
            channel.close()

    def _stub(self, address: str) -> HealthCheckCall:
        with self._lock:
            entry = self._channels.get(address)
            if entry is None:
                channel = open_channel(address, _CHANNEL_OPTIONS, self._tls)
                entry = (channel, health_check(channel))
                self._channels[address] = entry
            return entry[1]
