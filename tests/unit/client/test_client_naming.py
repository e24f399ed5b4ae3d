"""Job names as the SageMaker SDK makes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from skmaker import naming

MOMENT = datetime(2024, 3, 5, 7, 8, 9, 123456, tzinfo=UTC)


def test_name_is_base_plus_utc_timestamp_with_milliseconds() -> None:
    assert naming.name_from_base("sagemaker-scikit-learn", MOMENT) == (
        "sagemaker-scikit-learn-2024-03-05-07-08-09-123"
    )


def test_timestamp_is_converted_to_utc() -> None:
    local = MOMENT.astimezone(timezone(timedelta(hours=5)))
    assert naming.timestamp(local) == "2024-03-05-07-08-09-123"


def test_long_base_is_trimmed_to_63_characters() -> None:
    name = naming.name_from_base("b" * 80, MOMENT)
    assert len(name) == 63
    assert name.endswith("-2024-03-05-07-08-09-123")


def test_trimmed_base_never_ends_in_a_double_hyphen() -> None:
    name = naming.name_from_base("a" * 38 + "-x", MOMENT)
    assert "--" not in name


def test_default_name_matches_sagemaker_pattern() -> None:
    name = naming.name_from_base(naming.DEFAULT_BASE_NAME)
    assert re.fullmatch(r"sagemaker-scikit-learn-\d{4}(-\d{2}){5}-\d{3}", name)


@pytest.mark.parametrize("bad", ["", "-lead", "trail-", "under_score", "x" * 64, "sp ace"])
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid job name"):
        naming.validate_name(bad)


def test_base_from_name_strips_the_timestamp() -> None:
    assert naming.base_from_name("my-job-2024-03-05-07-08-09-123") == "my-job"
    assert naming.base_from_name("custom-name") == "custom-name"
