"""The name rules of the skmaker.v1 wire API: resource names and channel names.

Part of the wire contract, like the messages: the control refuses a name these rules refuse
(INVALID_ARGUMENT), and the client checks the same rules before it calls, so both sides say
the same thing. They live here, hand-written next to the generated stubs, because this is the
one package every side already imports: services may import from the client only `skmaker.v1`,
and a rule written twice drifts (it had: a run of hyphens let 10,000-character names through).

Resource names follow SageMaker's pattern `^[a-zA-Z0-9](-*[a-zA-Z0-9])*$` with its length
limits (SageMaker API reference: TrainingJobName, TransformJobName, ModelName and EndpointName
have at most 63 characters; HyperParameterTuningJobName at most 32). Channel names follow
SageMaker's ChannelName: 1-64 characters of `[A-Za-z0-9._-]`; `.` and `..` are refused too,
since a channel name becomes a folder name.

Each check returns None for a good name, else the message to show, which names the rule and
its limit; the caller raises its own error type with it.
"""

from __future__ import annotations

import enum
import re

_RESOURCE_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9._-]+")

CHANNEL_NAME_MAX_LENGTH = 64

# How much of a refused name a message repeats (a 10,000-character name is not echoed).
_SHOWN_CHARACTERS = 40


class Resource(enum.Enum):
    """A named kind of resource; the value is how messages call it."""

    TRAINING_JOB = "training job"
    TUNING_JOB = "tuning job"
    TRANSFORM_JOB = "transform job"
    MODEL = "model"
    ENDPOINT = "endpoint"

    @property
    def max_name_length(self) -> int:
        """SageMaker's limit on this resource's name length."""
        return MAX_NAME_LENGTH[self]


MAX_NAME_LENGTH: dict[Resource, int] = {
    Resource.TRAINING_JOB: 63,
    Resource.TUNING_JOB: 32,
    Resource.TRANSFORM_JOB: 63,
    Resource.MODEL: 63,
    Resource.ENDPOINT: 63,
}


def shown(name: str) -> str:
    """`name` as a message repeats it: quoted, and cut short (with "...") when long."""
    if len(name) <= _SHOWN_CHARACTERS:
        return repr(name)
    return f"{name[:_SHOWN_CHARACTERS]!r}..."


def resource_name_error(resource: Resource, name: object, label: str | None = None) -> str | None:
    """None when `name` is a valid name for `resource`; else what is wrong with it.

    Args:
        resource: what is named; sets the length limit.
        name: the name to check (anything that is not a string is refused).
        label: how the message calls the resource, when not `resource.value` (the client says
            "job" for training and transform jobs alike).
    """
    limit = resource.max_name_length
    if isinstance(name, str) and len(name) <= limit and _RESOURCE_NAME.fullmatch(name):
        return None
    what = label or resource.value
    text = shown(name) if isinstance(name, str) else f"of type {type(name).__name__}"
    too_long = (
        f" is {len(name)} characters long, over the limit of {limit};"
        if isinstance(name, str) and len(name) > limit
        else ":"
    )
    return (
        f"invalid {what} name {text}{too_long} use 1-{limit} letters, digits and hyphens, "
        "starting and ending with a letter or digit"
    )


def channel_name_error(name: object) -> str | None:
    """None when `name` is a valid channel name; else what is wrong with it."""
    if (
        isinstance(name, str)
        and len(name) <= CHANNEL_NAME_MAX_LENGTH
        and _CHANNEL_NAME.fullmatch(name)
        and name not in {".", ".."}
    ):
        return None
    text = shown(name) if isinstance(name, str) else f"of type {type(name).__name__}"
    return (
        f"invalid channel name {text}: use 1-{CHANNEL_NAME_MAX_LENGTH} characters of letters, "
        "digits, '.', '_' and '-' (not '.' or '..' alone)"
    )
