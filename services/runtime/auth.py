"""Bearer-token check for every RPC: one interceptor, off when no token is configured."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

# Health checks stay open so orchestrators can probe without credentials.
_OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
_BEARER = "Bearer "


@dataclass(frozen=True)
class Scope:
    """What one issued credential may do.

    Attributes:
        name: who holds it, for messages and logs (e.g. ``replica r-1 of endpoint iris``).
        allows: ``(method, request) -> bool``, asked for every call it makes; `method` is the
            full gRPC name (``/skmaker.v1.ModelService/DescribeModel``). For client-streaming
            calls (uploads) `request` is None: the method alone decides.
    """

    name: str
    allows: Callable[[str, Any], bool]


class ScopedTokens:
    """Credentials a service issues to the processes it starts, each limited to a `Scope`.

    Only digests are kept. Tokens live as long as the issuing process (a restarted control
    restarts the replicas it had, with new tokens) or until revoked.
    """

    def __init__(self) -> None:
        self._scopes: dict[bytes, Scope] = {}
        self._lock = threading.Lock()

    def issue(self, scope: Scope) -> str:
        """A new token for `scope`."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._scopes[_digest(token.encode())] = scope
        return token

    def revoke(self, token: str) -> None:
        """Forgets `token`; a call with it is then UNAUTHENTICATED."""
        with self._lock:
            self._scopes.pop(_digest(token.encode()), None)

    def scope_of(self, token_digest: bytes) -> Scope | None:
        """The scope of the token whose digest this is, if any."""
        with self._lock:
            return self._scopes.get(token_digest)


def token_digest(token: str) -> str:
    """The hex sha256 a service can check callers against without holding `token`."""
    return _digest(token.encode()).hex()


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects RPCs whose `authorization` metadata is not `Bearer <token>` (UNAUTHENTICATED).

    A token issued by `scoped` is accepted too, for the calls its scope allows; any other call
    with it is PERMISSION_DENIED.
    """

    def __init__(
        self, token: str = "", *, digest: str = "", scoped: ScopedTokens | None = None
    ) -> None:
        """Checks callers against `token`, or against `digest` (`token_digest`) when given.

        Only a digest is kept: a process that runs user code in-process (a replica) then
        holds nothing a caller could present as the token.
        """
        self._expected = bytes.fromhex(digest) if digest else _digest(token.encode())
        self._scoped = scoped

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method.startswith(_OPEN_METHOD_PREFIXES):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = str(metadata.get("authorization", ""))
        if not header.startswith(_BEARER):
            return _deny_handler(continuation(handler_call_details))
        given = _digest(header[len(_BEARER) :].encode())
        if hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        scope = self._scoped.scope_of(given) if self._scoped is not None else None
        if scope is not None:
            return _scoped_handler(continuation(handler_call_details), method, scope)
        return _deny_handler(continuation(handler_call_details))


def _scoped_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None, method: str, scope: Scope
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """`handler` with each request checked against `scope` first."""
    if handler is None:
        return None

    def refuse(context: grpc.ServicerContext) -> None:
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED, f"the credential of {scope.name} may not do this"
        )

    if handler.request_streaming:
        # Uploads and other client streams: granted by method alone (`allows(method, None)`).
        try:
            granted = scope.allows(method, None)
        except Exception:
            granted = False
        if granted:
            return handler

        def refuse_stream(request_iterator: Any, context: grpc.ServicerContext) -> Any:
            refuse(context)

        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse_stream)
        return grpc.stream_unary_rpc_method_handler(refuse_stream)
    behaviour: Any = handler.unary_stream if handler.response_streaming else handler.unary_unary

    def checked(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            allowed = scope.allows(method, request)
        except Exception:  # a scope that cannot decide says no
            allowed = False
        if not allowed:
            refuse(context)
        return behaviour(request, context)

    # grpc's handlers are namedtuples at run time; its stubs declare only the abstract class.
    replaceable: Any = handler
    if handler.response_streaming:
        return replaceable._replace(unary_stream=checked)  # type: ignore[no-any-return]
    return replaceable._replace(unary_unary=checked)  # type: ignore[no-any-return]


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _deny_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    if handler is not None and handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that authenticates a client or worker; empty when no token is set."""
    return (("authorization", f"Bearer {token}"),) if token else ()
