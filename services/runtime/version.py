"""The version the services report about themselves (e.g. in V2 ServerMetadata)."""

from __future__ import annotations

from importlib import metadata

# The distribution pyproject.toml builds: every service ships in it.
_DISTRIBUTION = "skmaker-services"


def services_version() -> str:
    """The installed services' version; `0+unknown` when run from a tree that is not installed."""
    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"
