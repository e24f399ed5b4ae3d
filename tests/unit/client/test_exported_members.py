"""Pins the public surface of the `skmaker` package (as httpx's test_exported_members)."""

import skmaker


def test_all_exports_exist() -> None:
    for name in skmaker.__all__:
        assert hasattr(skmaker, name), name


def test_public_surface_is_pinned() -> None:
    assert set(skmaker.__all__) == {
        "AlreadyExists",
        "Cancelled",
        "DeadlineExceeded",
        "FailedPrecondition",
        "InternalError",
        "InvalidArgument",
        "ModelError",
        "NotFound",
        "PermissionDenied",
        "ResourceExhausted",
        "SKLearn",
        "Session",
        "SkmakerClientError",
        "TrainingInput",
        "Unauthenticated",
        "Unavailable",
        "UnexpectedStatusException",
        "__version__",
    }


def test_every_error_is_a_client_error() -> None:
    for name in skmaker.__all__:
        member = getattr(skmaker, name)
        if isinstance(member, type) and issubclass(member, Exception):
            assert issubclass(member, skmaker.SkmakerClientError), name
