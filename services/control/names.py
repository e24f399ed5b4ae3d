"""The wire contract's name rules (`skmaker.v1.names`) as the control enforces them.

One rule for every resource and channel name, shared with the client; a refused name is
INVALID_ARGUMENT with a message that names the limit.
"""

from __future__ import annotations

from services.runtime.errors import InvalidArgument
from skmaker.v1.names import Resource, channel_name_error, resource_name_error

__all__ = ["Resource", "require_channel_name", "require_resource_name"]


def require_resource_name(resource: Resource, name: str) -> None:
    """Raises InvalidArgument unless `name` follows SageMaker's rule for `resource`'s names."""
    problem = resource_name_error(resource, name)
    if problem:
        raise InvalidArgument(problem)


def require_channel_name(name: str) -> None:
    """Raises InvalidArgument unless `name` follows SageMaker's channel-name rule."""
    problem = channel_name_error(name)
    if problem:
        raise InvalidArgument(problem)
