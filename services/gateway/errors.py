"""Exceptions of the gateway, each carrying its gRPC status code.

Request-time errors of its own reuse `services.runtime.errors` (`InvalidArgument` for a call
without an endpoint name, `NotFound`, `Unavailable`); what a replica answered goes back to the
caller unchanged as `ReplicaError`.
"""

from __future__ import annotations

import grpc

from services.runtime.errors import SkmakerError


class ReplicaError(SkmakerError):
    """A replica's answer to a forwarded call, passed through with its own code and message.

    Args:
        code: the status the replica answered.
        details: its message.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
