"""ArtifactService: chunked upload, download and listing over the artifact store."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from services.control.artifacts import convert
from services.control.artifacts.store import CODE_BUNDLES_PREFIX, SCHEME, ArtifactStore, key_of
from services.runtime.errors import FailedPrecondition
from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc

# The training job whose source bundle is at a key, if any.
BoundTo = Callable[[str], "str | None"]


class ArtifactsServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    """The artifact API clients and remote workers use."""

    def __init__(self, artifacts: ArtifactStore, bound_to: BoundTo | None = None) -> None:
        """Serves `artifacts`; uploads to a key `bound_to` names a job for are refused."""
        self._artifacts = artifacts
        self._bound_to = bound_to

    def UploadArtifact(
        self,
        request_iterator: Iterator[artifacts_pb2.UploadArtifactRequest],
        context: grpc.ServicerContext,
    ) -> artifacts_pb2.UploadArtifactResponse:
        """Stores an object once its size and digest check out.

        A job's source bundle cannot be replaced (checked at the header and again once the
        last chunk arrived, before the object appears), nor can the bundles kept by digest.
        """
        key, size, sha256, chunks = convert.upload_from_pb(request_iterator)
        self._refuse_bound(key)
        info = self._artifacts.put(key, size, sha256, self._checked_at_end(key, chunks))
        return artifacts_pb2.UploadArtifactResponse(artifact=convert.artifact_info_to_pb(info))

    def _refuse_bound(self, key: str) -> None:
        if key == CODE_BUNDLES_PREFIX or key.startswith(CODE_BUNDLES_PREFIX + "/"):
            raise FailedPrecondition(
                f"{SCHEME}{CODE_BUNDLES_PREFIX}/ holds the source bundles of training jobs, "
                "kept by the control under their sha256; upload elsewhere"
            )
        job = self._bound_to(key) if self._bound_to is not None else None
        if job is not None:
            raise FailedPrecondition(
                f"{SCHEME}{key} is the source bundle of training job {job!r} and cannot be "
                "replaced; upload new code under a new job name"
            )

    def _checked_at_end(self, key: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        yield from chunks
        # A job may have been created on this key while the chunks arrived.
        self._refuse_bound(key)

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
