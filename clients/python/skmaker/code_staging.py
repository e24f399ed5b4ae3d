"""Puts an estimator's training code where a training job reads it.

A remote `source_dir` (store:// or s3://) is used as it is; local code is archived with its
dependencies into `sourcedir.tar.gz` (see `skmaker.packaging`) and uploaded under
`store://<code_location or jobs>/<job_name>/source/`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from skmaker import packaging
from skmaker.session import Session

_REMOTE_SOURCE_SCHEMES = ("store://", "s3://")
_CODE_KEY_PREFIX = "jobs"


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
) -> tuple[str, str]:
    """Pack and upload the code of training job `job_name`.

    Returns:
        The entry point relative to the archive's root, and the archive's URI.

    Raises:
        ValueError: the entry point, source_dir or a dependency does not exist.
    """
    if is_remote(source_dir):
        return entry_point, str(source_dir)
    bundle = packaging.plan(entry_point, source_dir, dependencies)
    with tempfile.TemporaryDirectory(prefix="skmaker-source-") as scratch:
        archive = packaging.write(bundle, Path(scratch) / packaging.ARCHIVE_NAME)
        code_prefix = session.store_key(code_location) if code_location else _CODE_KEY_PREFIX
        source_uri = session.upload_to_store(archive, f"{code_prefix}/{job_name}/source")
    return bundle.program, source_uri
