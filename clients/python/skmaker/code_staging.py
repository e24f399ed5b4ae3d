"""Puts an estimator's training code where a training job reads it.

A remote `source_dir` (store:// or s3://) is used as it is; local code is archived with its
dependencies into `sourcedir.tar.gz` (see `skmaker.packaging`) and uploaded under
`store://<code_location or jobs>/<job_name>/source/`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from skmaker import packaging
from skmaker.session import Session

_REMOTE_SOURCE_SCHEMES = ("store://", "s3://")
_CODE_KEY_PREFIX = "jobs"


class StagedCode(NamedTuple):
    """Training code in the store: the entry point, the bundle's URI and its sha256."""

    program: str
    source_uri: str
    # Empty for a remote source_dir: the job binds to whatever is there when it is created.
    source_sha256: str


def is_remote(source_dir: str | os.PathLike[str] | None) -> bool:
    """Whether `source_dir` names code already in the store rather than a local folder."""
    return isinstance(source_dir, str) and source_dir.startswith(_REMOTE_SOURCE_SCHEMES)


def stage_training_code(
    session: Session,
    job_name: str,
    entry_point: str,
    source_dir: str | os.PathLike[str] | None,
    dependencies: Sequence[str | os.PathLike[str]],
    code_location: str | None,
) -> StagedCode:
    """Pack and upload the code of training job `job_name`.

    Returns:
        The entry point relative to the archive's root, the archive's URI and its sha256
        (the job is created only if the bundle there is still this one).

    Raises:
        ValueError: the entry point, source_dir or a dependency does not exist.
    """
    if is_remote(source_dir):
        return StagedCode(entry_point, str(source_dir), "")
    bundle = packaging.plan(entry_point, source_dir, dependencies)
    with tempfile.TemporaryDirectory(prefix="skmaker-source-") as scratch:
        archive = packaging.write(bundle, Path(scratch) / packaging.ARCHIVE_NAME)
        with archive.open("rb") as packed:
            sha256 = hashlib.file_digest(packed, "sha256").hexdigest()
        code_prefix = session.store_key(code_location) if code_location else _CODE_KEY_PREFIX
        source_uri = session.upload_to_store(archive, f"{code_prefix}/{job_name}/source")
    return StagedCode(bundle.program, source_uri, sha256)
