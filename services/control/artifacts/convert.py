"""Pure conversions between the artifact wire messages and the artifact store's values."""

from __future__ import annotations

from collections.abc import Iterator

from services.control.artifacts.base import ArtifactInfo, UploadRequest, key_of, store_uri_of
from services.runtime.errors import InvalidArgument
from skmaker.v1 import (
    artifacts_pb2,
)


def artifact_info_to_pb(info: ArtifactInfo) -> artifacts_pb2.ArtifactInfo:
    """The wire form of an object's metadata."""
    return artifacts_pb2.ArtifactInfo(uri=info.uri, size=info.size, sha256=info.sha256)


def upload_from_pb(
    requests: Iterator[artifacts_pb2.UploadArtifactRequest],
) -> tuple[str, int, str, Iterator[bytes]]:
    """Splits an upload stream into (key, size, sha256, chunks).

    Raises:
        InvalidArgument: the first message is not a header, the key is bad, or (while the
            chunks are read) a second header arrives.
    """
    first = next(requests, None)
    if first is None or not first.HasField("header"):
        raise InvalidArgument("the first UploadArtifact message must carry the header")
    header = first.header

    def chunks() -> Iterator[bytes]:
        for message in requests:
            if message.HasField("header"):
                raise InvalidArgument("a second header arrived in the same upload")
            yield message.chunk

    return key_of(header.uri), header.size, header.sha256, chunks()


def list_prefix_from_pb(uri_prefix: str) -> str:
    """The key prefix of a ListArtifacts request; empty (or `store://`, `s3://skmaker/`) lists
    everything."""
    uri_prefix = store_uri_of(uri_prefix)
    if uri_prefix.rstrip("/") in {"", "store:"}:
        return ""
    return key_of(uri_prefix)


def upload_request_from_pb(request: artifacts_pb2.StartUploadRequest) -> UploadRequest:
    """The store's view of a StartUpload (or CompleteUpload's header).

    Raises:
        InvalidArgument: a bad key.
    """
    header = request.header
    return UploadRequest(
        key=key_of(header.uri),
        size=header.size,
        sha256=header.sha256,
        content_md5=request.content_md5,
        part_md5s=tuple(request.part_md5s),
        part_bytes=request.part_bytes,
    )
