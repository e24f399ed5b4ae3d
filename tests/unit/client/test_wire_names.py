"""The wire contract's name rules (skmaker.v1.names), and the client applying them.

The control enforces the same module (tests/integration/control/test_control_names.py).
"""

from __future__ import annotations

import pytest

from skmaker import naming
from skmaker.inputs import channels_from_inputs
from skmaker.tuner import tuning_job_name_from_base
from skmaker.v1 import names

LIMITS = {
    names.Resource.TRAINING_JOB: 63,
    names.Resource.TRANSFORM_JOB: 63,
    names.Resource.MODEL: 63,
    names.Resource.ENDPOINT: 63,
    names.Resource.TUNING_JOB: 32,
}


def over_the_limit(limit: int) -> list[str]:
    lengths = [limit + 1, 300, 10_000]
    return ["x" * n for n in lengths] + ["a" + "-" * (n - 2) + "b" for n in lengths]


@pytest.mark.parametrize("resource", list(names.Resource))
def test_each_resource_has_sagemakers_limit(resource: names.Resource) -> None:
    assert resource.max_name_length == LIMITS[resource]


@pytest.mark.parametrize("resource", list(names.Resource))
def test_names_up_to_the_limit_are_accepted(resource: names.Resource) -> None:
    limit = LIMITS[resource]
    for name in ["a", "A1--b2", "x" * limit, "a" + "-" * (limit - 2) + "b"]:
        assert names.resource_name_error(resource, name) is None, name


@pytest.mark.parametrize("resource", list(names.Resource))
def test_names_over_the_limit_are_refused_with_the_limit(resource: names.Resource) -> None:
    limit = LIMITS[resource]
    for name in over_the_limit(limit):
        problem = names.resource_name_error(resource, name)
        assert problem is not None, len(name)
        assert f"invalid {resource.value} name" in problem
        assert f"{len(name)} characters long, over the limit of {limit}" in problem
        assert len(problem) < 300, "a long name is repeated only in part"


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "a.b", "sp ace", "ä", None, 7])
def test_names_breaking_the_pattern_are_refused(name: object) -> None:
    problem = names.resource_name_error(names.Resource.MODEL, name)
    assert problem is not None
    assert "use 1-63 letters, digits and hyphens" in problem


def test_channel_names() -> None:
    for good in ["train", "a.b_c-d", "c" * 64]:
        assert names.channel_name_error(good) is None
    for bad in ["", ".", "..", "a b", "a/b", "c" * 65, "c" * 300, "c" * 10_000, None]:
        problem = names.channel_name_error(bad)
        assert problem is not None and "use 1-64 characters" in problem, bad


@pytest.mark.parametrize(
    ("kind", "limit"), [("job", 63), ("model", 63), ("endpoint", 63), ("tuning job", 32)]
)
def test_the_client_refuses_what_the_control_refuses(kind: str, limit: int) -> None:
    assert naming.validate_name("x" * limit, kind=kind) == "x" * limit
    for name in over_the_limit(limit):
        with pytest.raises(ValueError, match=f"invalid {kind} name .*over the limit of {limit}"):
            naming.validate_name(name, kind=kind)


def test_the_client_refuses_long_channel_names() -> None:
    with pytest.raises(ValueError, match="invalid channel name"):
        channels_from_inputs({"c" * 65: "store://data"})


def test_generated_tuning_job_names_fit_the_limit() -> None:
    name = tuning_job_name_from_base("a-very-long-base-name-for-a-tuning-job")
    assert len(name) <= 32
    assert names.resource_name_error(names.Resource.TUNING_JOB, name) is None
