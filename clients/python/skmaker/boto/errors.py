"""The boto3-shaped clients' errors: `ClientError`, `WaiterError`, and the mapping to them.

A failed skmaker call becomes a `ClientError` with boto3's `response["Error"]["Code"]` that is
also an instance of skmaker's own error class for the gRPC status (and of botocore's
`ClientError` when botocore is installed), so any of those except clauses catches it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from skmaker import errors as skmaker_errors
from skmaker.errors import SkmakerClientError

try:  # botocore is not a dependency; when present, its except clauses catch ours too.
    from botocore.exceptions import ClientError as _BotocoreClientError
    from botocore.exceptions import WaiterError as _BotocoreWaiterError

    _CLIENT_ERROR_BASES: tuple[type[Exception], ...] = (_BotocoreClientError,)
    _WAITER_ERROR_BASES: tuple[type[Exception], ...] = (_BotocoreWaiterError,)
except ImportError:  # pragma: no cover - depends on the environment
    _CLIENT_ERROR_BASES = ()
    _WAITER_ERROR_BASES = ()


# boto3's error code and HTTP status for each skmaker error class.
_CODE_OF: dict[type[SkmakerClientError], tuple[str, int]] = {
    skmaker_errors.InvalidArgument: ("ValidationException", 400),
    skmaker_errors.NotFound: ("ValidationException", 400),
    skmaker_errors.AlreadyExists: ("ResourceInUse", 400),
    skmaker_errors.FailedPrecondition: ("ValidationException", 400),
    skmaker_errors.ResourceExhausted: ("ResourceLimitExceeded", 400),
    skmaker_errors.Unavailable: ("ServiceUnavailable", 503),
    skmaker_errors.Unauthenticated: ("UnrecognizedClientException", 400),
    skmaker_errors.PermissionDenied: ("AccessDeniedException", 400),
    skmaker_errors.DeadlineExceeded: ("RequestTimeout", 408),
    skmaker_errors.Cancelled: ("RequestCanceled", 400),
    skmaker_errors.ModelError: ("ModelError", 424),
    skmaker_errors.InternalError: ("InternalFailure", 500),
}
# SageMaker answers ResourceNotFound (not ValidationException) for these operations' unknown
# resources.
_RESOURCE_NOT_FOUND_OPERATIONS = frozenset(
    {
        "DescribeHyperParameterTuningJob",
        "StopHyperParameterTuningJob",
        "ListTrainingJobsForHyperParameterTuningJob",
    }
)


def response_metadata(status: int = 200) -> dict[str, Any]:
    """A response's `ResponseMetadata`: a fresh request id and the HTTP status."""
    return {
        "RequestId": str(uuid.uuid4()),
        "HTTPStatusCode": status,
        "HTTPHeaders": {},
        "RetryAttempts": 0,
    }


class ClientError(SkmakerClientError, *_CLIENT_ERROR_BASES):  # type: ignore[misc]
    """A failed call of a boto3-shaped client, shaped like botocore's `ClientError`.

    Attributes:
        response: `{"Error": {"Code", "Message"}, "ResponseMetadata": {...}}` (plus
            `OriginalStatusCode`/`OriginalMessage` for a ModelError, as SageMaker Runtime).
        operation_name: the API operation, e.g. "DescribeTrainingJob".
    """

    def __init__(self, error_response: Mapping[str, Any], operation_name: str) -> None:
        error = error_response.get("Error", {})
        message = (
            f"An error occurred ({error.get('Code', 'Unknown')}) when calling the "
            f"{operation_name} operation: {error.get('Message', '')}"
        )
        Exception.__init__(self, message)
        self.details = str(error.get("Message", ""))
        self.response = dict(error_response)
        self.operation_name = operation_name


class WaiterError(SkmakerClientError, *_WAITER_ERROR_BASES):  # type: ignore[misc]
    """A waiter saw a failure state (botocore's `WaiterError` shape: `name`, `reason`,
    `last_response`)."""

    def __init__(self, name: str, reason: str, last_response: Mapping[str, Any]) -> None:
        Exception.__init__(self, f"Waiter {name} failed: {reason}")
        self.details = reason
        self.name = name
        self.reason = reason
        self.last_response = dict(last_response)


def client_error(
    err: SkmakerClientError, operation: str, *, from_model: bool = False
) -> ClientError:
    """The boto3-shaped error of a failed skmaker call, also an instance of `type(err)`.

    With `from_model` (an invocation's answer), a refused payload or a handler's exception is
    SageMaker Runtime's ModelError, carrying the status the model server answered.
    """
    code, status = _CODE_OF.get(type(err), ("InternalFailure", 500))
    if isinstance(err, skmaker_errors.NotFound) and operation in _RESOURCE_NOT_FOUND_OPERATIONS:
        code = "ResourceNotFound"
    message = err.details or str(err)
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": response_metadata(status),
    }
    if from_model and isinstance(err, skmaker_errors.ModelError | skmaker_errors.InvalidArgument):
        # SageMaker Runtime reports a container's own error as ModelError with its status.
        original = 400 if isinstance(err, skmaker_errors.InvalidArgument) else 500
        kind = "client" if original < 500 else "server"
        response["Error"] = {
            "Code": "ModelError",
            "Message": f'Received {kind} error ({original}) from primary with message "{message}".',
        }
        response["OriginalStatusCode"] = original
        response["OriginalMessage"] = message
        response["ResponseMetadata"]["HTTPStatusCode"] = 424
    # Exception classes hash by identity; typeshed's Hashable protocol does not see it.
    error_class = _client_error_class(type(err), response["Error"]["Code"])  # type: ignore[arg-type]
    error = error_class(response, operation)
    error.code = err.code
    return error


# boto3's modeled exceptions (`client.exceptions.<Code>`), raised for errors of that code.
_MODELED_CODES = (
    "ResourceNotFound",
    "ResourceInUse",
    "ResourceLimitExceeded",
    "ConflictException",
    "ModelError",
    "ValidationError",
    "ServiceUnavailable",
    "InternalFailure",
)
_MODELED: dict[str, type[ClientError]] = {
    code: type(code, (ClientError,), {"__module__": __name__}) for code in _MODELED_CODES
}


@functools.cache
def _client_error_class(kind: type[SkmakerClientError], code: str) -> type[ClientError]:
    """`ClientError` (boto3's modeled class for `code`, if any) that is also a `kind`
    (NotFound, ...), so any of those except clauses catches it."""
    base = _MODELED.get(code, ClientError)
    return type(f"{base.__name__}[{kind.__name__}]", (base, kind), {"__module__": __name__})


class ClientExceptions:
    """`client.exceptions`: `ClientError` and boto3's modeled exception classes."""

    ClientError = ClientError

    def __init__(self, codes: Sequence[str]) -> None:
        for code in codes:
            setattr(self, code, _MODELED[code])
