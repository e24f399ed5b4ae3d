"""grpc status codes -> the client's exception tree."""

from __future__ import annotations

import grpc
import pytest

from skmaker import errors


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.CANCELLED, errors.Cancelled),
        (grpc.StatusCode.UNKNOWN, errors.ModelError),
        (grpc.StatusCode.INTERNAL, errors.InternalError),
        (grpc.StatusCode.UNIMPLEMENTED, errors.InternalError),
    ],
)
def test_each_code_maps_to_its_class(code: grpc.StatusCode, expected: type) -> None:
    error = errors.error_for_rpc(_FakeRpcError(code, "what happened"))
    assert type(error) is expected
    assert isinstance(error, errors.SkmakerClientError)
    assert str(error) == "what happened"
    assert error.code == code
    assert error.details == "what happened"


def test_missing_details_fall_back_to_the_code_name() -> None:
    error = errors.error_for_rpc(_FakeRpcError(grpc.StatusCode.INTERNAL, ""))
    assert "INTERNAL" in str(error)


def test_unexpected_status_has_sagemakers_wording() -> None:
    error = errors.UnexpectedStatusException("job-1", "Failed", "AlgorithmError: boom")
    assert str(error) == "Error for Training job job-1: Failed. Reason: AlgorithmError: boom"
    assert (error.job_name, error.status, error.failure_reason) == (
        "job-1",
        "Failed",
        "AlgorithmError: boom",
    )
    assert isinstance(error, errors.SkmakerClientError)
