"""Moving an artifact's bytes over presigned HTTP URLs, straight to and from an object store.

When the control keeps artifacts in an S3-compatible store, it hands out presigned URLs
(PresignDownload, StartUpload) and its callers GET and PUT the bytes themselves, so no data
byte goes through the control. `skmaker.v1.transfer` uses these functions whenever the control
gives a URL, and its streaming calls otherwise. Only the standard library is used, so the
client and every worker can do it without an S3 SDK.

Part of the wire contract (hand-written, beside the generated stubs), like `transfer`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

CHUNK_BYTES = 1024 * 1024
# Uploads larger than this go in parts (S3 takes at most 5 GiB in one PUT; parts also bound
# what one failed PUT costs). Parts must be at least 5 MiB, and at most 10,000 of them.
MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
PART_BYTES = 16 * 1024 * 1024

ProgressCallback = Callable[[int], object]
T = TypeVar("T")

# A PUT or GET that failed on the way (connection refused or reset, a 5xx from the store) is
# tried again, this often, after 0.2 s, 0.4 s, ...: a URL stays valid, so a retry is safe.
ATTEMPTS = 4


def _is_transient(err: OSError) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500
    return isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError))


def _retrying(attempt: Callable[[], T]) -> T:
    """`attempt()`, again after a transient failure, up to ATTEMPTS times."""
    for number in range(ATTEMPTS):
        try:
            return attempt()
        except OSError as err:
            if number + 1 == ATTEMPTS or not _is_transient(err):
                raise
        time.sleep(0.2 * 2**number)
    raise AssertionError("unreachable: the last attempt returns or raises")


@dataclass(frozen=True)
class FileDigests:
    """What a presigned upload announces: size, sha256 (hex), and base64 MD5s the object store
    checks: of the whole file (`content_md5`) or of each part (`part_md5s`)."""

    size: int
    sha256: str
    content_md5: str
    part_md5s: tuple[str, ...]


def _b64_md5(digest: hashlib._Hash) -> str:
    return base64.b64encode(digest.digest()).decode("ascii")


def digests_of(path: Path, part_bytes: int, multipart: bool) -> FileDigests:
    """Reads `path` once for its sha256 and MD5s (per part of `part_bytes` when `multipart`)."""
    sha256 = hashlib.sha256()
    whole = hashlib.md5(usedforsecurity=False)
    parts: list[str] = []
    part = hashlib.md5(usedforsecurity=False)
    in_part = 0
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(min(CHUNK_BYTES, part_bytes - in_part)):
            sha256.update(block)
            whole.update(block)
            part.update(block)
            size += len(block)
            in_part += len(block)
            if in_part == part_bytes:
                parts.append(_b64_md5(part))
                part, in_part = hashlib.md5(usedforsecurity=False), 0
    if in_part or not parts:
        parts.append(_b64_md5(part))
    return FileDigests(size, sha256.hexdigest(), _b64_md5(whole), tuple(parts) if multipart else ())


def _put(
    url: str, body: BinaryIO, length: int, headers: Mapping[str, str], timeout_s: float
) -> str:
    """PUTs `length` bytes of `body`; returns the response's ETag.

    Raises:
        OSError: the object store refused the PUT (its answer is in the message).
    """
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={**headers, "Content-Length": str(length)}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return str(response.headers.get("ETag", ""))
    except urllib.error.HTTPError as err:
        if err.code >= 500:
            raise  # transient: tried again
        raise OSError(f"PUT refused by the object store: {err.code} {_error_text(err)}") from None


class _Slice:
    """A file-like view of `length` bytes of `handle` from its current position, reporting
    progress as they are read."""

    def __init__(self, handle: BinaryIO, length: int, progress: ProgressCallback | None) -> None:
        self._handle = handle
        self._left = length
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        block = self._handle.read(size)
        self._left -= len(block)
        if self._progress is not None and block:
            self._progress(len(block))
        return block


def put_file(
    path: Path,
    url: str,
    headers: Mapping[str, str],
    size: int,
    *,
    timeout_s: float,
    progress: ProgressCallback | None = None,
) -> None:
    """PUTs the whole file to one presigned URL with the headers it was signed with."""

    def attempt() -> str:
        with path.open("rb") as handle:
            view = _Slice(handle, size, progress)
            return _put(url, view, size, headers, timeout_s)  # type: ignore[arg-type]

    _retrying(attempt)


def put_parts(
    path: Path,
    part_urls: Sequence[str],
    digests: FileDigests,
    part_bytes: int,
    *,
    timeout_s: float,
    progress: ProgressCallback | None = None,
) -> list[str]:
    """PUTs each part of the file to its presigned URL; returns the parts' ETags, in order."""
    etags = []
    with path.open("rb") as handle:
        for number, (url, md5) in enumerate(zip(part_urls, digests.part_md5s, strict=True)):
            start = number * part_bytes
            length = min(part_bytes, digests.size - start)

            def attempt(
                url: str = url, md5: str = md5, start: int = start, length: int = length
            ) -> str:
                handle.seek(start)
                view = _Slice(handle, length, progress)
                return _put(url, view, length, {"Content-MD5": md5}, timeout_s)  # type: ignore[arg-type]

            etags.append(_retrying(attempt))
    return etags


def iter_get(url: str, offset: int, length: int, *, timeout_s: float) -> Iterator[bytes]:
    """GETs `length` bytes from `offset` (0: to the end) of a presigned URL, in 1 MiB chunks.

    Raises:
        OSError: the object store refused, or sent another range than asked.
    """
    headers = {}
    if offset or length:
        last = "" if length == 0 else str(offset + length - 1)
        headers["Range"] = f"bytes={offset}-{last}"
    request = urllib.request.Request(url, headers=headers)

    def attempt() -> Any:
        try:
            return urllib.request.urlopen(request, timeout=timeout_s)
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise  # transient: tried again
            message = f"GET refused by the object store: {err.code} {_error_text(err)}"
            raise OSError(message) from None

    response = _retrying(attempt)
    with response:
        if headers and response.status != 206:
            raise OSError(f"the object store answered a ranged GET with {response.status}")
        while block := response.read(CHUNK_BYTES):
            yield block


def get_file(
    url: str,
    dest: Path,
    size: int,
    sha256: str,
    *,
    timeout_s: float,
    progress: ProgressCallback | None = None,
) -> None:
    """GETs a whole object into the file `dest` (atomically), checking its size and, when the
    store knows it (`sha256` not empty), its digest.

    Raises:
        OSError: a refused GET, or bytes that do not match.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for block in iter_get(url, 0, 0, timeout_s=timeout_s):
                handle.write(block)
                digest.update(block)
                received += len(block)
                if progress is not None:
                    progress(len(block))
        if received != size or (sha256 and digest.hexdigest() != sha256):
            raise OSError(
                f"download of {dest.name} is corrupt: got {received} bytes sha256 "
                f"{digest.hexdigest()}, expected {size} bytes sha256 {sha256 or '(unknown)'}"
            )
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        return err.read(2000).decode("utf-8", "replace").strip()
    except OSError:
        return str(err.reason)
