"""Resource names as the SageMaker SDK makes them: `<base>-YYYY-MM-DD-HH-MM-SS-mmm` in UTC.

Training jobs, models and endpoints share SageMaker's name rule and this default form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

MAX_NAME_LENGTH = 63
DEFAULT_BASE_NAME = "sagemaker-scikit-learn"

# SageMaker's rule for job, endpoint and variant names.
_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_TIMESTAMP_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}$")


def timestamp(now: datetime | None = None) -> str:
    """`YYYY-MM-DD-HH-MM-SS-mmm` of `now` (default: the current time) in UTC."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%d-%H-%M-%S-") + f"{moment.microsecond // 1000:03d}"


def validate_name(name: str, kind: str = "job") -> str:
    """Returns `name` if SageMaker would accept it as a job, model or endpoint name.

    Args:
        name: the name to check.
        kind: what is being named ("job", "model", "endpoint"), for the error message.

    Raises:
        ValueError: for an empty or too long name, or one with characters other than
            letters, digits and inner hyphens.
    """
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-{MAX_NAME_LENGTH} letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def name_from_base(base: str, now: datetime | None = None) -> str:
    """A unique-per-millisecond name: `base`, trimmed to fit, plus a UTC timestamp.

    Raises:
        ValueError: when `base` has characters a job name may not contain.
    """
    stamp = timestamp(now)
    trimmed = base[: MAX_NAME_LENGTH - len(stamp) - 1].rstrip("-")
    return validate_name(f"{trimmed}-{stamp}")


def base_from_name(name: str) -> str:
    """The base of a name made by `name_from_base` (the name itself when it has no timestamp)."""
    return _TIMESTAMP_SUFFIX.sub("", name)
