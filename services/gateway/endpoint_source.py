"""Where the routing table comes from: the control's EndpointService, or a fixed table.

`ControlEndpointSource` lists and describes endpoints on the control (each call with a
deadline) and keeps of each endpoint only what routing needs: its status and the addresses of
its SERVING replicas. `StaticEndpointSource` serves a table given on the command line
(`parse_routes`), for benchmarks and tests without a control.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc

from services.gateway.routing_table import EndpointState
from services.runtime.auth import token_metadata
from services.runtime.tls import ClientTls, open_channel
from skmaker.v1 import model_pb2, serving_pb2, serving_pb2_grpc

_STATUS_PREFIX = "ENDPOINT_STATUS_"


class SourceUnavailable(Exception):
    """The table's source could not be read (the control is down, slow or refusing)."""


class EndpointSource(Protocol):
    """Reads endpoints for the routing table."""

    def list_endpoints(self) -> list[EndpointState]:
        """Every endpoint.

        Raises:
            SourceUnavailable: when the source cannot be read.
        """

    def describe(self, name: str) -> EndpointState | None:
        """One endpoint, or None when it does not exist.

        Raises:
            SourceUnavailable: when the source cannot be read.
        """

    def close(self) -> None:
        """Releases the source's connection."""


def _status_name(status: int) -> str:
    """SageMaker's spelling of an endpoint status: ENDPOINT_STATUS_IN_SERVICE -> InService."""
    words = (
        model_pb2.EndpointStatus.Name(model_pb2.EndpointStatus.ValueType(status))
        .removeprefix(_STATUS_PREFIX)
        .split("_")
    )
    return "".join(word.capitalize() for word in words)


def endpoint_state(endpoint: model_pb2.Endpoint) -> EndpointState:
    """The routing view of an Endpoint message: status and SERVING replica addresses."""
    return EndpointState(
        name=endpoint.name,
        status=_status_name(endpoint.status),
        addresses=tuple(
            replica.address
            for replica in endpoint.replicas
            if replica.state == model_pb2.REPLICA_STATE_SERVING and replica.address
        ),
    )


class ControlEndpointSource:
    """Reads endpoints from the control's EndpointService.

    Args:
        address: the control's gRPC address.
        token: bearer token, empty when the control has none.
        timeout_s: deadline of each call.
        tls: TLS towards the control; None for plaintext.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str = "",
        timeout_s: float = 2.0,
        tls: ClientTls | None = None,
    ) -> None:
        self._channel = open_channel(
            address,
            tls=tls,
            options=[
                # Reconnect quickly after a control restart: the table goes stale meanwhile.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self._stub = serving_pb2_grpc.EndpointServiceStub(self._channel)
        self._metadata = token_metadata(token)
        self._timeout_s = timeout_s

    def list_endpoints(self) -> list[EndpointState]:
        """Every endpoint on the control (ListEndpoints).

        Raises:
            SourceUnavailable: the call failed, with its status in the message.
        """
        try:
            response = self._stub.ListEndpoints(
                serving_pb2.ListEndpointsRequest(),
                timeout=self._timeout_s,
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            raise SourceUnavailable(f"ListEndpoints: {err.code().name}: {err.details()}") from None
        return [endpoint_state(endpoint) for endpoint in response.endpoints]

    def describe(self, name: str) -> EndpointState | None:
        """One endpoint (DescribeEndpoint); None when the control answers NOT_FOUND.

        Raises:
            SourceUnavailable: the call failed otherwise, with its status in the message.
        """
        try:
            response = self._stub.DescribeEndpoint(
                serving_pb2.DescribeEndpointRequest(name=name),
                timeout=self._timeout_s,
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise SourceUnavailable(
                f"DescribeEndpoint: {err.code().name}: {err.details()}"
            ) from None
        return endpoint_state(response.endpoint)

    def close(self) -> None:
        """Closes the channel to the control."""
        self._channel.close()


def parse_routes(text: str) -> list[EndpointState]:
    """Parses `--routes`: `endpoint=host:port[,host:port...][;endpoint=...]`.

    Raises:
        ValueError: for an entry without a name or an address, or a name given twice.
    """
    states: dict[str, EndpointState] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        name, _, addresses_text = entry.partition("=")
        name = name.strip()
        addresses = tuple(a.strip() for a in addresses_text.split(",") if a.strip())
        if not name or not addresses:
            raise ValueError(f"route {entry!r} is not 'endpoint=host:port[,host:port...]'")
        if name in states:
            raise ValueError(f"endpoint {name!r} is given twice in --routes")
        states[name] = EndpointState(name=name, status="InService", addresses=addresses)
    return list(states.values())


class StaticEndpointSource:
    """A fixed table, as given by `--routes`; every replica counts as serving."""

    def __init__(self, states: Sequence[EndpointState]) -> None:
        self._states = {state.name: state for state in states}

    def list_endpoints(self) -> list[EndpointState]:
        """The fixed table."""
        return list(self._states.values())

    def describe(self, name: str) -> EndpointState | None:
        """One endpoint of the fixed table, or None."""
        return self._states.get(name)

    def close(self) -> None:
        """Nothing to release."""
