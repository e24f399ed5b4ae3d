"""Resource names as the SageMaker SDK makes them: `<base>-YYYY-MM-DD-HH-MM-SS-mmm` in UTC.

Training jobs, models and endpoints share SageMaker's name rule and this default form; the rule
and its length limits are the wire contract's (`skmaker.v1.names`), which the control enforces.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from skmaker.v1 import names

MAX_NAME_LENGTH = names.MAX_NAME_LENGTH[names.Resource.TRAINING_JOB]
DEFAULT_BASE_NAME = "sagemaker-scikit-learn"

# What each kind of name is, for its length limit.
_RESOURCES = {
    "job": names.Resource.TRAINING_JOB,
    "model": names.Resource.MODEL,
    "endpoint": names.Resource.ENDPOINT,
    "tuning job": names.Resource.TUNING_JOB,
}
_TIMESTAMP_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}$")


def timestamp(now: datetime | None = None) -> str:
    """`YYYY-MM-DD-HH-MM-SS-mmm` of `now` (default: the current time) in UTC."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%d-%H-%M-%S-") + f"{moment.microsecond // 1000:03d}"


def validate_name(name: str, kind: str = "job") -> str:
    """Returns `name` if SageMaker would accept it as a job, model or endpoint name.

    Args:
        name: the name to check.
        kind: what is being named ("job" for training and transform jobs, "model",
            "endpoint", "tuning job"), for the length limit and the error message.

    Raises:
        ValueError: for an empty or too long name, or one with characters other than
            letters, digits and inner hyphens.
    """
    resource = _RESOURCES.get(kind, names.Resource.TRAINING_JOB)
    problem = names.resource_name_error(resource, name, kind)
    if problem:
        raise ValueError(problem)
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
