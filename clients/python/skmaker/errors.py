"""The client's exceptions: one class per gRPC status a caller can act on.

Every failed RPC surfaces as a subclass of `SkmakerClientError`, chosen by its status code
(never by its message text). The tree:

    SkmakerClientError
    ├── InvalidArgument        INVALID_ARGUMENT: bad parameter or payload
    ├── NotFound               NOT_FOUND: unknown job, model, endpoint or artifact
    ├── AlreadyExists          ALREADY_EXISTS: a resource with that name exists
    ├── FailedPrecondition     FAILED_PRECONDITION: wrong state (stop a finished job, ...)
    ├── ResourceExhausted      RESOURCE_EXHAUSTED: size limit, queue or replica cap
    ├── Unavailable            UNAVAILABLE: server down, draining or not ready (retried)
    ├── Unauthenticated        UNAUTHENTICATED: missing or wrong token ($SKMAKER_TOKEN)
    ├── PermissionDenied       PERMISSION_DENIED: the token may not do this
    ├── DeadlineExceeded       DEADLINE_EXCEEDED: the call's deadline passed
    ├── Cancelled              CANCELLED: cancelled by a user or by shutdown
    ├── ModelError             UNKNOWN: the user's model code raised
    ├── InternalError          INTERNAL and any other status: a bug on the server
    └── UnexpectedStatusException   a job or endpoint ended Failed (not an RPC error); also a
                                    ValueError, as the SageMaker SDK's
"""

from __future__ import annotations

import grpc


class SkmakerClientError(Exception):
    """Base of every error the skmaker client raises for a failed call or job.

    Attributes:
        code: the gRPC status code behind the error (None when not from an RPC).
        details: the server's message (empty when not from an RPC).
    """

    code: grpc.StatusCode | None = None

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class InvalidArgument(SkmakerClientError):
    """The request was malformed or a parameter was out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SkmakerClientError):
    """A named resource (training job, model, endpoint, artifact) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SkmakerClientError):
    """A resource with this name exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SkmakerClientError):
    """The resource is in the wrong state for this call (e.g. stopping a finished job)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SkmakerClientError):
    """A size or capacity limit was hit (payload too large, queue full, replica cap)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SkmakerClientError):
    """The server is unreachable, draining or not ready; idempotent calls were retried."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(SkmakerClientError):
    """The call carried no token or a wrong one (set $SKMAKER_TOKEN)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SkmakerClientError):
    """The caller is authenticated but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceeded(SkmakerClientError):
    """The call did not finish before its deadline (`Session(timeout_s=...)`)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(SkmakerClientError):
    """The work was cancelled by a user or by a server shutdown."""

    code = grpc.StatusCode.CANCELLED


class ModelError(SkmakerClientError):
    """The user's model code raised (SageMaker's ModelError); the message carries its error."""

    code = grpc.StatusCode.UNKNOWN


class InternalError(SkmakerClientError):
    """The server hit a bug (INTERNAL, or a status the client does not know)."""

    code = grpc.StatusCode.INTERNAL


class UnexpectedStatusException(SkmakerClientError, ValueError):
    """A training or transform job, or an endpoint, ended in a status its waiter did not expect.

    A `ValueError` too, as the SageMaker SDK's, so notebooks' `except ValueError` catch it.

    Raised by `fit()`/`wait()` when a training job ends Failed, by `Transformer.transform()`/
    `wait()` when a transform job ends Failed, and by `deploy()`/`wait_for_endpoint()` when an
    endpoint ends Failed (or is deleted) instead of InService. The messages follow the
    SageMaker SDK: "Error for Training job <name>: Failed. Reason: <reason>",
    "Error for Transform job <name>: Failed. Reason: <reason>" and
    "Error hosting endpoint <name>: Failed. Reason: <reason>".

    Attributes:
        job_name: the job's or the endpoint's name (SageMaker's attribute name).
        status: the status it ended in ("Failed").
        actual_status: the same (the SageMaker SDK's attribute name).
        allowed_statuses: the statuses the waiter expected (SageMaker's attribute).
        failure_reason: the server's FailureReason.
    """

    def __init__(
        self,
        job_name: str,
        status: str,
        failure_reason: str,
        *,
        message: str | None = None,
        allowed_statuses: tuple[str, ...] = ("Completed", "Stopped"),
    ) -> None:
        super().__init__(
            message or f"Error for Training job {job_name}: {status}. Reason: {failure_reason}"
        )
        self.job_name = job_name
        self.status = status
        self.actual_status = status
        self.allowed_statuses = allowed_statuses
        self.failure_reason = failure_reason

    @classmethod
    def for_endpoint(
        cls, endpoint_name: str, status: str, failure_reason: str
    ) -> UnexpectedStatusException:
        """The error of an endpoint that ended `status` instead of InService."""
        return cls(
            endpoint_name,
            status,
            failure_reason,
            message=f"Error hosting endpoint {endpoint_name}: {status}. Reason: {failure_reason}",
            allowed_statuses=("InService",),
        )

    @classmethod
    def for_transform_job(
        cls, job_name: str, status: str, failure_reason: str
    ) -> UnexpectedStatusException:
        """The error of a transform job that ended `status` instead of Completed."""
        return cls(
            job_name,
            status,
            failure_reason,
            message=f"Error for Transform job {job_name}: {status}. Reason: {failure_reason}",
        )


_ERROR_BY_CODE: dict[grpc.StatusCode, type[SkmakerClientError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        Unauthenticated,
        PermissionDenied,
        DeadlineExceeded,
        Cancelled,
        ModelError,
        InternalError,
    )
    if cls.code is not None
}


def error_for_rpc(err: grpc.RpcError) -> SkmakerClientError:
    """The client exception for a failed RPC, chosen by its status code alone.

    Args:
        err: what grpcio raised; a `grpc.Call` in practice, with `code()` and `details()`.

    Returns:
        An instance of the matching subclass (`InternalError` for codes without one), whose
        message is the server's details, or the code's name when the server sent none.
    """
    code_of = getattr(err, "code", None)
    details_of = getattr(err, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details = (details_of() if callable(details_of) else "") or ""
    cls = _ERROR_BY_CODE.get(code, InternalError)
    message = details or f"{code.name} (no details from the server)"
    error = cls(message, details=details)
    error.code = code
    return error
