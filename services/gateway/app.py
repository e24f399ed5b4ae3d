"""Wires the gateway: settings -> endpoint source, routing table, forwarder, handlers, lifecycle.

`build(settings)` does no I/O, except that with the HAProxy data plane it binds the callers'
port (HAProxy takes it over at start; the Python gateway then listens on a loopback port of
its own, see `haproxy`). Its components (services.runtime.components): the table keeper reads
the routing table once when started (a control that is not up yet is logged, and the table is
read again every `refresh_interval_s`), then HAProxy's front starts routing from it; at drain
HAProxy soft-stops first, and once the server has finished its calls both stop and `on_stop`
closes the channels to the replicas.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import prometheus_client

from services.gateway.config import GatewaySettings
from services.gateway.endpoint_source import (
    ControlEndpointSource,
    EndpointSource,
    StaticEndpointSource,
    parse_routes,
)
from services.gateway.forwarder import INFERENCE_SERVICE, V2_SERVICE, Forwarder, ReplicaChannel
from services.gateway.haproxy import HaproxyOptions, HaproxyTls
from services.gateway.haproxy_front import HaproxyFront
from services.gateway.haproxy_metrics import HaproxyStatsCollector
from services.gateway.metrics import GatewayMetrics
from services.gateway.routing_table import RoutingTable
from services.gateway.servicer import inference_handler, open_inference_handler
from services.gateway.table_keeper import TableKeeper
from services.runtime import lifecycle
from services.runtime.auth import people_tokens, token_metadata
from services.runtime.tls import ClientTls
from services.runtime.version import services_version

# A replica's gRPC message limit sits this far above its payload limit (services.inference: the
# rest of a Predict call, so its own check can name the payload limit).
REPLICA_MESSAGE_HEADROOM = 1024 * 1024


def _add_generic(handler: grpc.GenericRpcHandler, server: grpc.Server) -> None:
    server.add_generic_rpc_handlers((handler,))


def endpoint_source(settings: GatewaySettings) -> EndpointSource:
    """The control's EndpointService, or the fixed `--routes` table.

    Raises:
        ValueError: for a malformed `--routes`.
    """
    if settings.routes:
        return StaticEndpointSource(parse_routes(settings.routes))
    return ControlEndpointSource(
        settings.control,
        token=settings.auth_token,
        timeout_s=settings.control_timeout_s,
        tls=ClientTls.from_settings(settings),
    )


def haproxy_tls(settings: GatewaySettings) -> HaproxyTls | None:
    """HAProxy's TLS from the gateway's settings; None when the gateway serves plaintext."""
    if not settings.tls_cert_file:
        return None
    return HaproxyTls(
        cert_file=str(Path(settings.tls_cert_file).resolve()),
        key_file=str(Path(settings.tls_key_file).resolve()),
        client_ca_file=(
            str(Path(settings.tls_client_ca_file).resolve()) if settings.tls_client_ca_file else ""
        ),
        ca_file=str(Path(settings.tls_ca_file).resolve()) if settings.tls_ca_file else "",
        server_name=settings.tls_server_name,
    )


def build(
    settings: GatewaySettings,
    *,
    source: EndpointSource | None = None,
    connect: Callable[[str], ReplicaChannel] | None = None,
) -> lifecycle.Service:
    """Builds the gateway service.

    Args:
        settings: the gateway's settings (already `check()`ed).
        source: where the routing table comes from; default from the settings.
        connect: makes the channel to a replica address (tests may wrap it).

    Raises:
        ValueError: for a malformed `--routes`.

    Long because it is the one place where the gateway's parts (routing table, forwarders,
    HAProxy front, servicers, hooks) are made and connected, in dependency order.
    """
    registry = prometheus_client.CollectorRegistry()
    metrics = GatewayMetrics(registry)
    front: HaproxyFront | None = None

    def table_changed() -> None:
        if front is not None:
            front.table_changed()

    if connect is None:
        # HAProxy must learn within milliseconds that a replica stopped serving.
        connect = functools.partial(
            ReplicaChannel,
            on_health_change=table_changed if settings.uses_haproxy else None,
            tls=ClientTls.from_settings(settings),
        )
    table: RoutingTable[ReplicaChannel] = RoutingTable(
        connect, on_removed=metrics.forget, on_replaced=table_changed
    )
    if settings.uses_haproxy:
        front = HaproxyFront(
            settings.haproxy_binary,
            table,
            HaproxyOptions(
                listen_fd=-1,  # bound below, before the lifecycle starts
                fallback_port=0,  # known once the Python gateway listens (on_bound)
                endpoint_slots=settings.haproxy_endpoint_slots,
                replica_slots=settings.haproxy_replica_slots,
                header_digests=tuple(
                    people_tokens(
                        settings.auth_token, settings.auth_tokens_file, settings.auth_token_sha256
                    ).header_digests()
                ),
                retries=settings.retries,
                server_timeout_s=settings.default_timeout_s,
                hard_stop_after_s=settings.shutdown_grace_s,
                max_message_bytes=settings.replica_max_payload_bytes + REPLICA_MESSAGE_HEADROOM,
                max_message_reason=(
                    f" (the replicas' payload limit, {settings.replica_max_payload_bytes} bytes,"
                    " plus 1 MiB: the gateway's --replica-max-payload-bytes)"
                ),
                tls=haproxy_tls(settings),
            ),
        )
        registry.register(HaproxyStatsCollector(front.process.command, front.routes))
    keeper = TableKeeper(
        table,
        source if source is not None else endpoint_source(settings),
        refresh_interval_s=settings.refresh_interval_s,
        miss_gap_s=settings.miss_gap_s,
    )
    metrics.watch(keeper, time.monotonic)
    forwarder = Forwarder(
        keeper,
        metrics,
        retries=settings.retries,
        eject_s=settings.eject_s,
        default_timeout_s=settings.default_timeout_s,
        metadata=token_metadata(settings.auth_token),
    )

    def on_stop() -> None:
        table.close()

    servicers: list[lifecycle.Servicer] = [
        lifecycle.Servicer(_add_generic, inference_handler(forwarder), INFERENCE_SERVICE),
        lifecycle.Servicer(
            _add_generic, open_inference_handler(forwarder, services_version()), V2_SERVICE
        ),
    ]
    service = lifecycle.Service(
        name="gateway",
        servicers=servicers,
        registry=registry,
        on_stop=on_stop,
        # The table is read before HAProxy starts routing from it; HAProxy drains first.
        components=[keeper] if front is None else [keeper, front],
    )
    if front is not None:
        service.advertised_grpc_port = front.bind(settings.host, settings.grpc_port)
        service.grpc_address = "127.0.0.1:0"
        service.on_bound = front.set_fallback_port
        service.exit_code = front.exit_code
    return service
