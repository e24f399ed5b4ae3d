"""Bearer-token check for every RPC: one interceptor, off when no token is configured.

People's tokens are named (`PeopleTokens`); a call with one of them that creates, updates,
stops or deletes something is written to the audit log (logger `skmaker.audit`): who, the
method, the resource's name and the outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
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

    def grant(self, token: str, scope: Scope) -> None:
        """Accepts `token` (one the operator made, e.g. a worker container's) within `scope`."""
        with self._lock:
            self._scopes[_digest(token.encode())] = scope

    def revoke(self, token: str) -> None:
        """Forgets `token`; a call with it is then UNAUTHENTICATED."""
        with self._lock:
            self._scopes.pop(_digest(token.encode()), None)

    def scope_of(self, token_digest: bytes) -> Scope | None:
        """The scope of the token whose digest this is, if any."""
        with self._lock:
            return self._scopes.get(token_digest)


def token_sha256(token: str) -> bytes:
    """The sha256 of `token` as bytes (`PeopleTokens.who` takes it)."""
    return _digest(token.encode())


def token_digest(token: str) -> str:
    """The hex sha256 a service can check callers against without holding `token`."""
    return _digest(token.encode()).hex()


# The name the single token (--auth-token-file or the environment) is known by.
ADMIN = "admin"
# The name of a caller known only by a digest (a replica checks callers that way).
DIGEST_CALLER = "caller"
_PERSON_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
audit_log = logging.getLogger("skmaker.audit")
log = logging.getLogger(__name__)


class PeopleTokens:
    """The tokens people call with, each with a name; only their digests are kept.

    Args:
        named: name -> token.
        digests: hex sha256 digests of further accepted tokens, whose holders have no name
            here (`DIGEST_CALLER`).
    """

    def __init__(self, named: Mapping[str, str] = {}, digests: Iterable[str] = ()) -> None:
        self._names: list[tuple[bytes, str]] = [
            (_digest(token.encode()), name) for name, token in named.items()
        ]
        # For a proxy that hashes the whole header (the gateway's HAProxy).
        self._headers = sorted(_digest(f"{_BEARER}{token}".encode()) for token in named.values())
        self._names += [(bytes.fromhex(d.strip()), DIGEST_CALLER) for d in digests if d.strip()]

    def __bool__(self) -> bool:
        return bool(self._names)

    def who(self, given: bytes) -> str | None:
        """The name of the token whose digest is `given`, if any.

        Every digest is compared, in constant time, whatever matched: how long it takes says
        nothing about which token was close.
        """
        found: str | None = None
        for expected, name in self._names:
            if hmac.compare_digest(given, expected) and found is None:
                found = name
        return found

    def header_digests(self) -> list[str]:
        """The hex digests of `Bearer <token>` for every named token."""
        return [digest.hex() for digest in self._headers]

    def digests(self) -> list[str]:
        """The hex digests of every accepted token (what a replica checks callers against)."""
        return sorted({expected.hex() for expected, _ in self._names})


def read_tokens_file(path: Path) -> dict[str, str]:
    """name -> token from a file of `name:token` lines (blank lines and `#` comments skipped).

    Raises:
        ValueError: a malformed line (the message names the line, never the token), a name
            given twice, a token given twice, or no token at all.
        OSError: the file cannot be read.
    """
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s can be read by other users: chmod 600 it", path)
    named: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, token = line.partition(":")
        name, token = name.strip(), token.strip()
        if not colon or not _PERSON_NAME.fullmatch(name) or not token:
            raise ValueError(
                f"{path} line {number}: expected 'name:token' (name: letters, digits, ._@-)"
            )
        if name in named:
            raise ValueError(f"{path} line {number}: {name!r} is named twice")
        if token in named.values():
            raise ValueError(f"{path} line {number}: {name!r} has another person's token")
        named[name] = token
    if not named:
        raise ValueError(f"{path} holds no token")
    return named


def people_tokens(token: str, tokens_file: str, digests: str) -> PeopleTokens:
    """The accepted people's tokens: `token` (named `ADMIN`), the file's, and the digests.

    With `digests`, `token` is not accepted from callers: it is the process's own credential
    for the calls it makes (a replica's, scoped to its model), checked against nothing here.

    Raises:
        ValueError, OSError: as `read_tokens_file`; also when the file names `ADMIN` while
            `token` is set too.
    """
    named = read_tokens_file(Path(tokens_file)) if tokens_file else {}
    if token and not digests:
        if ADMIN in named and named[ADMIN] != token:
            raise ValueError(f"{tokens_file} names {ADMIN!r}, which the single token is called")
        named[ADMIN] = token
    return PeopleTokens(named, digests.split(",") if digests else ())


# Methods whose calls are audited: those that change something a person owns.
_AUDITED_VERBS = ("Create", "Update", "Delete", "Stop")


def is_audited(method: str) -> bool:
    """True for `/pkg.Service/CreateX`, `UpdateX`, `DeleteX` and `StopX`."""
    return method.rsplit("/", 1)[-1].startswith(_AUDITED_VERBS)


def resource_name(request: Any, depth: int = 1) -> str:
    """The name of what `request` is about: its `name` or first non-empty `*_name` field,
    else that of a message field it holds (CreateModel's `model`); "-" when none.
    """
    try:
        fields = request.DESCRIPTOR.fields
    except AttributeError:
        return "-"
    for field in fields:
        if field.name == "name" or field.name.endswith("_name"):
            value = getattr(request, field.name, "")
            if isinstance(value, str) and value:
                return value
    if depth > 0:
        for field in fields:
            value = getattr(request, field.name, None)
            if hasattr(value, "DESCRIPTOR") and value is not None:
                found = resource_name(value, depth - 1)
                if found != "-":
                    return found
    return "-"


def _audited_handler(
    handler: grpc.RpcMethodHandler[Any, Any], method: str, who: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` logging one audit line per call: who, method, resource, outcome."""
    if handler.request_streaming or handler.response_streaming:
        return handler  # no such mutating call today; they would need their own wrapper
    behaviour = handler.unary_unary
    assert behaviour is not None
    short = method.rsplit("/", 1)[-1]

    def audited(request: Any, context: Any) -> Any:
        # context.code() is what the handler set (abort sets it before raising).
        outcome = "UNKNOWN"
        try:
            response = behaviour(request, context)
            code = context.code()
            outcome = code.name if isinstance(code, grpc.StatusCode) else "OK"
            return response
        except BaseException:
            code = context.code()
            outcome = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            raise
        finally:
            audit_log.info(
                "who=%s method=%s resource=%s outcome=%s",
                who,
                short,
                resource_name(request),
                outcome,
            )

    replaceable: Any = handler
    return replaceable._replace(unary_unary=audited)  # type: ignore[no-any-return]


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects RPCs whose `authorization` metadata is not `Bearer <token>` (UNAUTHENTICATED).

    A token issued by `scoped` is accepted too, for the calls its scope allows; any other call
    with it is PERMISSION_DENIED. Calls that create, update, stop or delete are audited.
    """

    def __init__(
        self,
        token: str = "",
        *,
        digest: str = "",
        scoped: ScopedTokens | None = None,
        people: PeopleTokens | None = None,
    ) -> None:
        """Checks callers against `people`, else `token`, or `digest` (`token_digest`).

        Only digests are kept: a process that runs user code in-process (a replica) then
        holds nothing a caller could present as the token.
        """
        if people is None:
            people = PeopleTokens({ADMIN: token} if token and not digest else {}, [digest])
        self._people = people
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
        who = self._people.who(given)
        if who is not None:
            handler = continuation(handler_call_details)
            if handler is not None and is_audited(method):
                return _audited_handler(handler, method, who)
            return handler
        scope = self._scoped.scope_of(given) if self._scoped is not None else None
        if scope is not None:
            return _scoped_handler(continuation(handler_call_details), method, scope)
        if is_audited(method):
            audit_log.info("who=? method=%s outcome=UNAUTHENTICATED", method.rsplit("/", 1)[-1])
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
