"""ArtifactService: chunked upload, download and listing over the artifact store."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from services.control.artifacts import convert
from services.control.artifacts.store import ArtifactStore, key_of
from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc


class ArtifactsServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    """The artifact API clients and remote workers use."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        """Serves `artifacts`."""
        self._artifacts = artifacts

    def UploadArtifact(
        self,
        request_iterator: Iterator[artifacts_pb2.UploadArtifactRequest],
        context: grpc.ServicerContext,
    ) -> artifacts_pb2.UploadArtifactResponse:
        """Stores an object once its size and digest check out."""
        key, size, sha256, chunks = convert.upload_from_pb(request_iterator)
        info = self._artifacts.put(key, size, sha256, chunks)
        return artifacts_pb2.UploadArtifactResponse(artifact=convert.artifact_info_to_pb(info))

    def DownloadArtifact(
        self, request: artifacts_pb2.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[artifacts_pb2.DownloadArtifactResponse]:
        """Sends the object's info, then its bytes (or the asked byte range) in 1 MiB chunks."""
        info, chunks = self._artifacts.read_chunks(
            key_of(request.uri), request.offset, request.length
        )
        yield artifacts_pb2.DownloadArtifactResponse(info=convert.artifact_info_to_pb(info))
        for chunk in chunks:
            yield artifacts_pb2.DownloadArtifactResponse(chunk=chunk)

    def ListArtifacts(
        self, request: artifacts_pb2.ListArtifactsRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.ListArtifactsResponse:
        """Lists objects at or below a prefix."""
        infos = self._artifacts.list(convert.list_prefix_from_pb(request.uri_prefix))
        return artifacts_pb2.ListArtifactsResponse(
            artifacts=[convert.artifact_info_to_pb(info) for info in infos]
        )
