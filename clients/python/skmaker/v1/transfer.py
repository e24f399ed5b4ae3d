"""Chunked, sha256-checked transfer of files to and from skmaker's artifact store.

Used by the client (`Session.upload_data`) and by the workers, which reach the store through
the same ArtifactService. When the control keeps artifacts in an object store, it hands out
presigned URLs (StartUpload, PresignDownload) and the bytes go between the caller and the store
directly (`skmaker.v1.presigned`: one PUT, or a multipart upload of large files; ranged GETs).
Otherwise an upload sends a header with the size and digest, then 1 MiB chunks; the server
writes under a temporary name and renames only when the digest matched. A download checks the
digest of what arrived before renaming the local file into place. A byte range (`iter_range`,
`download_range`: how batch workers read their shard of a large file) can only be checked for
its length.

Part of the wire contract (hand-written, beside the generated stubs): how ArtifactService's
upload and download streams are used, shared by the client and the services, which may import
from the client only `skmaker.v1`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import grpc

from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc, presigned

CHUNK_BYTES = 1024 * 1024
SCHEME = "store://"
# When the object store cannot be reached at the presigned URLs' address (a misconfigured
# --artifact-presign-endpoint, a network the caller is not on), the bytes go through the
# control's streaming calls instead, which still work: slower, and counted on its /metrics.
_UNREACHABLE = "object store unreachable for the %s of %s (%s): streaming through the control"
log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], object]
"""Called with the number of bytes just transferred."""


def store_uri(key: str) -> str:
    """`store://key` for a key (a relative POSIX path)."""
    return SCHEME + key.lstrip("/")


def key_of(uri: str) -> str:
    """The key of a `store://` URI (a bare key is returned as is, without leading slashes).

    Raises:
        ValueError: for another scheme, an empty key or a key with `..` segments.
    """
    if "://" in uri and not uri.startswith(SCHEME):
        raise ValueError(f"not an artifact-store URI: {uri!r} (expected store://...)")
    key = uri[len(SCHEME) :] if uri.startswith(SCHEME) else uri
    key = key.strip("/")
    parts = PurePosixPath(key).parts
    if not key or any(part in {"..", "."} for part in parts) or "\\" in key:
        raise ValueError(f"bad artifact key {key!r}: use a relative path without '..'")
    return key


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _upload_messages(
    path: Path, uri: str, size: int, sha256: str, progress: ProgressCallback | None
) -> Iterator[artifacts_pb2.UploadArtifactRequest]:
    yield artifacts_pb2.UploadArtifactRequest(
        header=artifacts_pb2.UploadHeader(uri=uri, size=size, sha256=sha256)
    )
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            yield artifacts_pb2.UploadArtifactRequest(chunk=block)
            if progress is not None:
                progress(len(block))


def _is_unimplemented(err: grpc.RpcError) -> bool:
    code = err.code() if isinstance(err, grpc.Call) else None
    return code == grpc.StatusCode.UNIMPLEMENTED


def upload_file(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    path: Path,
    uri: str,
    *,
    timeout_s: float = 3600.0,
    metadata: tuple[tuple[str, str], ...] = (),
    progress: ProgressCallback | None = None,
    multipart_threshold_bytes: int = presigned.MULTIPART_THRESHOLD_BYTES,
    part_bytes: int = presigned.PART_BYTES,
) -> artifacts_pb2.ArtifactInfo:
    """Uploads one local file to `uri`; returns the stored object's info.

    The bytes go to the URLs StartUpload hands out (in parts of `part_bytes` above
    `multipart_threshold_bytes`), else (a local store, an older control) through
    UploadArtifact.

    Raises:
        grpc.RpcError: the control refused the upload (key, size, digest).
        OSError: the object store refused a PUT.
    """
    multipart = path.stat().st_size > multipart_threshold_bytes
    digests = presigned.digests_of(path, part_bytes, multipart)
    header = artifacts_pb2.UploadHeader(uri=uri, size=digests.size, sha256=digests.sha256)
    try:
        plan = stub.StartUpload(
            artifacts_pb2.StartUploadRequest(
                header=header,
                content_md5=digests.content_md5,
                part_md5s=digests.part_md5s,
                part_bytes=part_bytes if multipart else 0,
            ),
            timeout=timeout_s,
            metadata=metadata,
        )
    except grpc.RpcError as err:
        if not _is_unimplemented(err):
            raise
        plan = artifacts_pb2.StartUploadResponse()
    streamed = not (plan.url or plan.upload_id)
    if not streamed:
        try:
            etags = _put_presigned(path, plan, digests, part_bytes, timeout_s, progress)
        except urllib.error.URLError as err:
            if isinstance(err, urllib.error.HTTPError):
                raise
            log.warning(_UNREACHABLE, "upload", uri, err.reason)
            streamed = True
    if streamed:
        response = stub.UploadArtifact(
            _upload_messages(path, uri, digests.size, digests.sha256, progress),
            timeout=timeout_s,
            metadata=metadata,
        )
        return response.artifact
    completed = stub.CompleteUpload(
        artifacts_pb2.CompleteUploadRequest(
            header=header, upload_id=plan.upload_id, part_etags=etags
        ),
        timeout=timeout_s,
        metadata=metadata,
    )
    return completed.artifact


def _put_presigned(
    path: Path,
    plan: artifacts_pb2.StartUploadResponse,
    digests: presigned.FileDigests,
    part_bytes: int,
    timeout_s: float,
    progress: ProgressCallback | None,
) -> list[str]:
    """PUTs the file as StartUpload planned; the parts' ETags (none for a single PUT)."""
    if plan.url:
        presigned.put_file(
            path, plan.url, plan.headers, digests.size, timeout_s=timeout_s, progress=progress
        )
        return []
    return presigned.put_parts(
        path, plan.part_urls, digests, part_bytes, timeout_s=timeout_s, progress=progress
    )


def presign_download(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    uri: str,
    *,
    timeout_s: float,
    metadata: tuple[tuple[str, str], ...],
) -> tuple[artifacts_pb2.ArtifactInfo, str] | None:
    """The object's info and a presigned GET URL; None when the control gives none (a local
    store, or an older control): then the bytes stream through DownloadArtifact.

    Raises:
        grpc.RpcError: NOT_FOUND for a missing object, INVALID_ARGUMENT for a bad URI.
    """
    try:
        response = stub.PresignDownload(
            artifacts_pb2.PresignDownloadRequest(uri=uri), timeout=timeout_s, metadata=metadata
        )
    except grpc.RpcError as err:
        if _is_unimplemented(err):
            return None
        raise
    return (response.info, response.url) if response.url else None


def download_file(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    uri: str,
    dest: Path,
    *,
    timeout_s: float = 3600.0,
    metadata: tuple[tuple[str, str], ...] = (),
    progress: ProgressCallback | None = None,
) -> artifacts_pb2.ArtifactInfo:
    """Downloads `uri` into the file `dest` (atomically); returns the object's info.

    Raises:
        IOError: when the bytes received do not match the advertised size or sha256.
    """
    direct = presign_download(stub, uri, timeout_s=timeout_s, metadata=metadata)
    if direct is not None:
        try:
            presigned.get_file(
                direct[1],
                dest,
                direct[0].size,
                direct[0].sha256,
                timeout_s=timeout_s,
                progress=progress,
            )
            return direct[0]
        except urllib.error.URLError as err:
            if isinstance(err, urllib.error.HTTPError):
                raise
            log.warning(_UNREACHABLE, "download", uri, err.reason)
    dest.parent.mkdir(parents=True, exist_ok=True)
    info: artifacts_pb2.ArtifactInfo | None = None
    digest = hashlib.sha256()
    received = 0
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            for message in stub.DownloadArtifact(
                artifacts_pb2.DownloadArtifactRequest(uri=uri),
                timeout=timeout_s,
                metadata=metadata,
            ):
                if message.HasField("info"):
                    info = message.info
                    continue
                handle.write(message.chunk)
                digest.update(message.chunk)
                received += len(message.chunk)
                if progress is not None:
                    progress(len(message.chunk))
        if info is None:
            raise OSError(f"download of {uri} ended without a header")
        if received != info.size or digest.hexdigest() != info.sha256:
            raise OSError(
                f"download of {uri} is corrupt: got {received} bytes sha256 "
                f"{digest.hexdigest()}, expected {info.size} bytes sha256 {info.sha256}"
            )
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return info


def iter_range(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    uri: str,
    offset: int,
    length: int,
    *,
    timeout_s: float = 3600.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Iterator[bytes]:
    """Streams the bytes `[offset, offset + length)` of `uri` as they arrive.

    A range cannot be checked against the object's sha256 (that digest covers the whole
    object), so only the byte count is checked, once the stream ended.

    Args:
        stub: The ArtifactService stub.
        uri: The object.
        offset: First byte; the object's size gives nothing.
        length: Bytes wanted from `offset`; 0 means to the end. A range past the end of the
            object is cut there.
        timeout_s: Deadline of the whole download.
        metadata: Call metadata (the bearer token).

    Yields:
        Chunks of up to 1 MiB, in order.

    Raises:
        grpc.RpcError: NOT_FOUND for a missing object, INVALID_ARGUMENT for an offset beyond
            its end or a negative value.
        IOError: The stream ended early.
    """
    direct = presign_download(stub, uri, timeout_s=timeout_s, metadata=metadata)
    if direct is not None:
        ranged = _iter_presigned_range(direct[0], direct[1], offset, length, timeout_s)
        try:
            first = next(ranged, None)
        except urllib.error.URLError as err:
            if isinstance(err, urllib.error.HTTPError):
                raise
            log.warning(_UNREACHABLE, "download", uri, err.reason)
        else:
            if first is not None:
                yield first
                yield from ranged
            return
    info: artifacts_pb2.ArtifactInfo | None = None
    received = 0
    for message in stub.DownloadArtifact(
        artifacts_pb2.DownloadArtifactRequest(uri=uri, offset=offset, length=length),
        timeout=timeout_s,
        metadata=metadata,
    ):
        if message.HasField("info"):
            info = message.info
            continue
        received += len(message.chunk)
        yield message.chunk
    if info is None:
        raise OSError(f"download of {uri} ended without a header")
    expected = info.size - offset if length == 0 else min(length, info.size - offset)
    if received != expected:
        raise OSError(
            f"download of {uri} bytes {offset}+{length} is short: got {received} of {expected}"
        )


def _iter_presigned_range(
    info: artifacts_pb2.ArtifactInfo, url: str, offset: int, length: int, timeout_s: float
) -> Iterator[bytes]:
    """`iter_range` over a presigned URL: a ranged GET, its length checked."""
    if offset < 0 or length < 0 or offset > info.size:
        raise ValueError(f"range {offset}+{length} does not fit {info.uri} ({info.size} bytes)")
    expected = info.size - offset if length == 0 else min(length, info.size - offset)
    received = 0
    if expected:
        for chunk in presigned.iter_get(url, offset, expected, timeout_s=timeout_s):
            received += len(chunk)
            yield chunk
    if received != expected:
        raise OSError(
            f"download of {info.uri} bytes {offset}+{length} is short: got {received} of {expected}"
        )


def download_range(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    uri: str,
    offset: int,
    length: int,
    dest: Path,
    *,
    timeout_s: float = 3600.0,
    metadata: tuple[tuple[str, str], ...] = (),
    progress: ProgressCallback | None = None,
) -> int:
    """Downloads the bytes `[offset, offset + length)` of `uri` into the file `dest`, atomically.

    See `iter_range` for the arguments; `length` 0 means to the end of the object.

    Returns:
        The number of bytes written.

    Raises:
        grpc.RpcError: NOT_FOUND, or INVALID_ARGUMENT for an offset beyond the object.
        IOError: The stream ended early.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in iter_range(
                stub, uri, offset, length, timeout_s=timeout_s, metadata=metadata
            ):
                handle.write(chunk)
                written += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return written


def list_artifacts(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    uri_prefix: str,
    *,
    timeout_s: float = 60.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> list[artifacts_pb2.ArtifactInfo]:
    """Objects at or below `uri_prefix`, sorted by URI."""
    response = stub.ListArtifacts(
        artifacts_pb2.ListArtifactsRequest(uri_prefix=uri_prefix),
        timeout=timeout_s,
        metadata=metadata,
    )
    return list(response.artifacts)


def download_prefix(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    uri_prefix: str,
    dest_dir: Path,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Downloads everything at or below `uri_prefix` into `dest_dir`, keeping relative paths.

    A URI naming one object lands as `dest_dir/<its base name>`; a folder-like prefix keeps the
    layout below it (`store://data/a/x.csv` under prefix `store://data` -> `dest_dir/a/x.csv`).
    """
    prefix_key = key_of(uri_prefix)
    written = []
    for info in list_artifacts(stub, uri_prefix, metadata=metadata):
        key = key_of(info.uri)
        relative = PurePosixPath(key).name if key == prefix_key else key[len(prefix_key) + 1 :]
        target = dest_dir.joinpath(*PurePosixPath(relative).parts)
        download_file(stub, info.uri, target, metadata=metadata, progress=progress)
        written.append(target)
    return written
