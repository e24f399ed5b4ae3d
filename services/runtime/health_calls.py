"""Typed grpc.health.v1 calls on a channel (Check, Watch).

The health package's generated stub declares no methods to a type checker; these callables are
the same RPCs, built from the method names and message codecs, so callers keep their types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import grpc
from grpc_health.v1 import health_pb2

# grpc's classes are generic only to a type checker (its stubs), not at run time.
if TYPE_CHECKING:
    HealthCheckCall: TypeAlias = grpc.UnaryUnaryMultiCallable[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ]

_CHECK = "/grpc.health.v1.Health/Check"
_WATCH = "/grpc.health.v1.Health/Watch"


def health_check(channel: grpc.Channel) -> HealthCheckCall:
    """grpc.health.v1.Health/Check on `channel`."""
    return channel.unary_unary(
        _CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


def health_watch(
    channel: grpc.Channel,
) -> grpc.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]:
    """grpc.health.v1.Health/Watch on `channel`."""
    return channel.unary_stream(
        _WATCH,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
