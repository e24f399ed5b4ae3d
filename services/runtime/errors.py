"""Exceptions that carry their gRPC status code, and the interceptor that turns them into statuses.

Domain code raises a subclass of `SkmakerError`; the servicer never catches it. The
`ErrorInterceptor` aborts the RPC with the exception's code and message. Any other exception
is a bug: it becomes INTERNAL with a short request id, and the traceback goes to the log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)


class SkmakerError(Exception):
    """Base of every error a caller should see; `code` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(SkmakerError):
    """The request is malformed or a parameter is out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SkmakerError):
    """A named resource (job, model, endpoint, artifact) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SkmakerError):
    """A resource with this name exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SkmakerError):
    """The resource is in the wrong state for this call."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SkmakerError):
    """A size or capacity limit was hit (payload too large, queue full)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SkmakerError):
    """Not ready, or draining; the caller may retry elsewhere or later."""

    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(SkmakerError):
    """The work was cancelled by a user or by shutdown."""

    code = grpc.StatusCode.CANCELLED


class Unimplemented(SkmakerError):
    """This server does not serve the called method (e.g. Predict sent to the control)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class ModelError(SkmakerError):
    """The user's model code raised; the message carries its error (SageMaker's ModelError)."""

    code = grpc.StatusCode.UNKNOWN


# The most a status message may take on the wire (grpc-message, percent-encoded): callers'
# metadata limit is 8 KiB by default, and a message echoing a 10,000-character name would make
# the caller drop the answer ("metadata size exceeds soft limit") and see no status of ours.
MAX_STATUS_MESSAGE_BYTES = 2048
_CUT_MARK = " [...]"


def status_message(text: str) -> str:
    """`text`, cut (with a mark) where it would take over `MAX_STATUS_MESSAGE_BYTES` once
    percent-encoded as gRPC does: printable ASCII but `%` as is, every other UTF-8 byte as 3."""
    budget = MAX_STATUS_MESSAGE_BYTES - len(_CUT_MARK)
    used = 0
    for index, char in enumerate(text):
        used += (
            1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "replace"))
        )
        if used > budget:
            return text[:index] + _CUT_MARK
    return text


def _wrap_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except SkmakerError as err:
            context.abort(err.code, status_message(str(err)))
        except Exception:
            request_id = uuid.uuid4().hex[:12]
            log.exception("internal error (request id %s)", request_id)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error; request id {request_id}")

    return wrapped


def _wrap_streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from behavior(request, context)
        except SkmakerError as err:
            context.abort(err.code, status_message(str(err)))
        except Exception:
            request_id = uuid.uuid4().hex[:12]
            log.exception("internal error (request id %s)", request_id)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error; request id {request_id}")

    return wrapped


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps `SkmakerError` to its status and any other exception to INTERNAL.

    The wrapped handler of each method is built once and reused: a server's handlers are fixed
    when it starts, and building them per call would sit on the Predict hot path.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        found = continuation(handler_call_details)
        if found is None:
            return None
        # grpc's handlers are namedtuples at run time; its stubs declare only the abstract class.
        handler: Any = found
        wrapped: grpc.RpcMethodHandler[Any, Any]
        if handler.unary_unary:
            wrapped = handler._replace(unary_unary=_wrap_unary(handler.unary_unary))
        elif handler.stream_unary:
            wrapped = handler._replace(stream_unary=_wrap_unary(handler.stream_unary))
        elif handler.unary_stream:
            wrapped = handler._replace(unary_stream=_wrap_streaming(handler.unary_stream))
        elif handler.stream_stream:
            wrapped = handler._replace(stream_stream=_wrap_streaming(handler.stream_stream))
        else:
            return found
        # A plain dict is enough: racing threads build equal wrappers and one of them wins.
        self._wrapped[method] = wrapped
        return wrapped
