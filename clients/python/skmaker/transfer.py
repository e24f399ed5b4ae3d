"""Kept for code that imports `skmaker.transfer`: the module is `skmaker.v1.transfer` now.

Artifact transfer is part of the wire contract the services share with the client, so it lives
in `skmaker.v1`, the one client package services may import.
"""

from __future__ import annotations

from skmaker.v1.transfer import (
    CHUNK_BYTES,
    SCHEME,
    download_file,
    download_prefix,
    download_range,
    iter_range,
    key_of,
    list_artifacts,
    sha256_of_file,
    store_uri,
    upload_file,
)

__all__ = [
    "CHUNK_BYTES",
    "SCHEME",
    "download_file",
    "download_prefix",
    "download_range",
    "iter_range",
    "key_of",
    "list_artifacts",
    "sha256_of_file",
    "store_uri",
    "upload_file",
]
