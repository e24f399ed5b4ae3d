"""ArtifactService: chunked upload, download and listing over the artifact store, and the
presigned URLs through which callers move bytes to and from an object store directly."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from services.control.artifacts import convert
from services.control.artifacts.base import ArtifactStore, key_of
from services.control.metrics import ControlMetrics
from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc


class ArtifactsServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    """The artifact API clients and remote workers use."""

    def __init__(self, artifacts: ArtifactStore, metrics: ControlMetrics) -> None:
        """Serves `artifacts`; counts the bytes its streaming calls carry in `metrics`."""
        self._artifacts = artifacts
        self._metrics = metrics

    def UploadArtifact(
        self,
        request_iterator: Iterator[artifacts_pb2.UploadArtifactRequest],
        context: grpc.ServicerContext,
    ) -> artifacts_pb2.UploadArtifactResponse:
        """Stores an object once its size and digest check out."""
        key, size, sha256, chunks = convert.upload_from_pb(request_iterator)
        counted = self._metrics.count_artifact_bytes("upload", chunks)
        info = self._artifacts.put(key, size, sha256, counted)
        return artifacts_pb2.UploadArtifactResponse(artifact=convert.artifact_info_to_pb(info))

    def DownloadArtifact(
        self, request: artifacts_pb2.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[artifacts_pb2.DownloadArtifactResponse]:
        """Sends the object's info, then its bytes (or the asked byte range) in 1 MiB chunks."""
        info, chunks = self._artifacts.read_chunks(
            key_of(request.uri), request.offset, request.length
        )
        yield artifacts_pb2.DownloadArtifactResponse(info=convert.artifact_info_to_pb(info))
        for chunk in self._metrics.count_artifact_bytes("download", chunks):
            yield artifacts_pb2.DownloadArtifactResponse(chunk=chunk)

    def ListArtifacts(
        self, request: artifacts_pb2.ListArtifactsRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.ListArtifactsResponse:
        """Lists objects at or below a prefix."""
        infos = self._artifacts.list(convert.list_prefix_from_pb(request.uri_prefix))
        return artifacts_pb2.ListArtifactsResponse(
            artifacts=[convert.artifact_info_to_pb(info) for info in infos]
        )

    def DescribeArtifactStore(
        self, request: artifacts_pb2.DescribeArtifactStoreRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.DescribeArtifactStoreResponse:
        """The store's kind, and the bucket and prefix its `s3://` URIs name."""
        location = self._artifacts.location
        return artifacts_pb2.DescribeArtifactStoreResponse(
            kind=location.kind, bucket=location.bucket, prefix=location.prefix
        )

    def PresignDownload(
        self, request: artifacts_pb2.PresignDownloadRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.PresignDownloadResponse:
        """The object's info and a GET URL (empty when the store has none)."""
        info, url = self._artifacts.presign_get(key_of(request.uri))
        return artifacts_pb2.PresignDownloadResponse(
            info=convert.artifact_info_to_pb(info), url=url
        )

    def StartUpload(
        self, request: artifacts_pb2.StartUploadRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.StartUploadResponse:
        """Where to PUT an upload's bytes (nothing when the store takes them streamed)."""
        plan = self._artifacts.start_upload(convert.upload_request_from_pb(request))
        return artifacts_pb2.StartUploadResponse(
            url=plan.url,
            headers=dict(plan.headers),
            upload_id=plan.upload_id,
            part_urls=plan.part_urls,
        )

    def CompleteUpload(
        self, request: artifacts_pb2.CompleteUploadRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.UploadArtifactResponse:
        """Ends a presigned upload once the stored object matches its header."""
        upload = convert.upload_request_from_pb(
            artifacts_pb2.StartUploadRequest(header=request.header)
        )
        info = self._artifacts.complete_upload(upload, request.upload_id, request.part_etags)
        return artifacts_pb2.UploadArtifactResponse(artifact=convert.artifact_info_to_pb(info))
