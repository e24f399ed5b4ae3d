"""Server reflection that also resolves method names (`grpcurl describe pkg.Service.Method`).

grpcio-reflection answers `file_containing_symbol` with the descriptor pool's
`FindFileContainingSymbol`. With protobuf's upb backend (the default since protobuf 4) that
lookup knows messages, fields, enums and services but not methods, so every method name was
answered NOT_FOUND and grpcurl said "Symbol not found". A method lives in its service's file:
when the pool's lookup misses, the name is resolved with `FindMethodByName` (and, should that
miss too, as `<service>.<method>` through the service) and that file is returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

SERVICE_NAME = reflection.SERVICE_NAME


def _file_of_method(pool: Any, name: str) -> Any:
    """The file descriptor defining method `name` (`pkg.Service.Method`).

    Raises:
        KeyError: no service in `pool` has such a method.
    """
    try:
        return pool.FindMethodByName(name).containing_service.file
    except (KeyError, AttributeError):
        pass
    service_name, _, method_name = name.rpartition(".")
    if not service_name:
        raise KeyError(name)
    service = pool.FindServiceByName(service_name)
    if method_name not in service.methods_by_name:
        raise KeyError(name)
    return service.file


class MethodAwareReflectionServicer(reflection.ReflectionServicer):
    """grpcio-reflection's servicer, with method names resolved to their service's file."""

    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        # The servicer's private helpers are not in grpcio-reflection's type stubs.
        answer: reflection_pb2.ServerReflectionResponse = super()._file_containing_symbol(  # type: ignore[misc]
            request, fully_qualified_name
        )
        if not answer.HasField("error_response"):
            return answer
        try:
            file = _file_of_method(self._pool, fully_qualified_name)  # type: ignore[attr-defined]
        except KeyError:
            return answer
        return self._file_by_filename(request, file.name)  # type: ignore[attr-defined,no-any-return]


def enable_server_reflection(
    service_names: Iterable[str], server: grpc.Server, pool: Any = None
) -> None:
    """Adds reflection for `service_names` to `server` (method names resolve too)."""
    servicer = MethodAwareReflectionServicer(
        list(service_names), pool=pool if pool is not None else descriptor_pool.Default()
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
