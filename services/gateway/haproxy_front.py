"""HaproxyFront: the HAProxy data plane's life, from bind to soft stop, and its route sync.

The gateway's lifecycle hooks call it in order: `bind` (in `app.build`, so the port file names
HAProxy's port), `start` once the Python gateway listens on its loopback port, `drain` when
SIGTERM arrives (HAProxy stops listening and lets calls in flight finish while the Python
gateway still answers what it forwards), `stop` last. A sync thread mirrors the routing table
into HAProxy whenever the table changed or a replica's health flipped (see `ReplicaChannel`),
and at least every second (to retry what HAProxy refused).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import tempfile
from pathlib import Path

from services.gateway.forwarder import ReplicaChannel
from services.gateway.haproxy import HaproxyOptions, HaproxyProcess, bind_listener
from services.gateway.haproxy_routes import HaproxyRoutes
from services.gateway.routing_table import RoutingTable
from services.runtime.components import StepLoop

log = logging.getLogger(__name__)

_SYNC_INTERVAL_S = 1.0
_READY_TIMEOUT_S = 10.0


class HaproxyFront:
    """HAProxy in front of the Python gateway, routing by the gateway's table.

    Args:
        binary: the haproxy executable.
        table: the gateway's routing table (read, never changed here).
        options: HAProxy's configuration; its `listen_fd` and `fallback_port` are filled in by
            `bind` and `set_fallback_port`.
    """

    def __init__(
        self, binary: str, table: RoutingTable[ReplicaChannel], options: HaproxyOptions
    ) -> None:
        self._table = table
        self._options = options
        self._listener: socket.socket | None = None
        self._folder = tempfile.TemporaryDirectory(prefix="skmaker-gateway-haproxy-")
        self._process = HaproxyProcess(binary, Path(self._folder.name))
        self.routes = HaproxyRoutes(
            self._process.command,
            self._process.map_path,
            options.endpoint_slots,
            options.replica_slots,
        )
        # Syncs when the table changes and every second; `start` did the first sync itself.
        self._loop = StepLoop("haproxy-sync", self.step, _SYNC_INTERVAL_S, step_at_start=False)
        self.failed = False

    @property
    def process(self) -> HaproxyProcess:
        """The HAProxy process (its runtime API, for metrics and tests)."""
        return self._process

    def bind(self, host: str, port: int) -> int:
        """Binds the callers' port now (HAProxy takes it over at `start`); returns it."""
        self._listener = bind_listener(host, port)
        self._options = dataclasses.replace(self._options, listen_fd=self._listener.fileno())
        return int(self._listener.getsockname()[1])

    def set_fallback_port(self, port: int) -> None:
        """The Python gateway's own (loopback) gRPC port, where HAProxy sends the rest."""
        self._options = dataclasses.replace(self._options, fallback_port=port)

    def table_changed(self) -> None:
        """Wakes the sync thread (the routing table was just replaced, maybe changed)."""
        self._loop.wake()

    def start(self) -> None:
        """Starts HAProxy on the bound port, routes the current table, starts the sync thread.

        Raises:
            RuntimeError: HAProxy did not start.
        """
        assert self._listener is not None, "bind() first"
        self._process.start(
            self._options,
            ready_timeout_s=_READY_TIMEOUT_S,
            on_unexpected_exit=self._on_haproxy_exit,
        )
        # HAProxy holds the socket now; ours would keep accepting into a backlog nobody reads
        # once HAProxy stops listening.
        self._listener.close()
        self.step()
        self._loop.start()

    def exit_code(self) -> int:
        """The gateway's exit code: 1 when HAProxy died under it, else 0."""
        return 1 if self.failed else 0

    def _on_haproxy_exit(self, code: int) -> None:
        # Without HAProxy nobody answers on the callers' port: drain and exit 1, so that the
        # supervisor restarts the gateway rather than it looking healthy.
        self.failed = True
        os.kill(os.getpid(), signal.SIGTERM)

    def step(self) -> None:
        """One sync: routes HAProxy to the table's serving replicas (the loop's body)."""
        wanted = {
            route.name: [r.address for r in route.replicas if r.upstream.serving]
            for route in self._table.routes()
        }
        self.routes.apply(wanted)

    def drain(self) -> None:
        """Soft-stops HAProxy: its port closes, calls in flight finish (within the grace)."""
        self._loop.stop(timeout_s=_SYNC_INTERVAL_S + 5)
        self._process.stop(self._options.hard_stop_after_s)

    def stop(self) -> None:
        """Releases what `bind`/`start` took (idempotent)."""
        if self._listener is not None:
            self._listener.close()
        self._process.stop(0)
        self._folder.cleanup()
