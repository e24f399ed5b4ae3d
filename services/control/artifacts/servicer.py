"""ArtifactService: chunked upload, download and listing over the artifact store, and the
presigned URLs through which callers move bytes to and from an object store directly."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, Protocol

import grpc

from services.control.artifacts import convert
from services.control.artifacts.base import CODE_BUNDLES_PREFIX, SCHEME, ArtifactStore, key_of
from services.control.artifacts.key_locks import KeyLocks
from services.control.metrics import ControlMetrics
from services.runtime.errors import FailedPrecondition
from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc


class JobPrefixes(Protocol):
    """Which training job a key belongs to (services.control.training.jobs.TrainingJobs)."""

    def bound_to(self, key: str) -> str | None:
        """The job whose source bundle is at `key`."""
        ...

    def bound_here(self, key: str) -> str | None:
        """The job a create of this process bound `key` to (no database read)."""
        ...

    def output_owner(self, key: str) -> str | None:
        """The job whose archives go at or above `key`."""
        ...


# Whether a call (by its metadata) comes from one of skmaker's workers.
IsWorker = Callable[[Sequence[tuple[str, Any]]], bool]


class ArtifactsServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    """The artifact API clients and remote workers use."""

    def __init__(
        self,
        artifacts: ArtifactStore,
        metrics: ControlMetrics,
        jobs: JobPrefixes | None = None,
        is_worker: IsWorker = lambda metadata: False,
        key_locks: KeyLocks | None = None,
    ) -> None:
        """Serves `artifacts`; counts the bytes its streaming calls carry in `metrics`.

        Uploads to a job's source bundle are refused, and so are uploads to its output prefix
        by callers other than workers (`is_worker`). An upload's last check and its object's
        rename hold the key's lock in `key_locks`, which a training job's create holds while
        it binds the key.
        """
        self._artifacts = artifacts
        self._metrics = metrics
        self._jobs = jobs
        self._is_worker = is_worker
        self._key_locks = key_locks or KeyLocks()

    def UploadArtifact(
        self,
        request_iterator: Iterator[artifacts_pb2.UploadArtifactRequest],
        context: grpc.ServicerContext,
    ) -> artifacts_pb2.UploadArtifactResponse:
        """Stores an object once its size and digest check out.

        A job's source bundle cannot be replaced, nor can the bundles kept by digest, and only
        workers write below a job's output prefix (checked at the header; a bundle key bound
        while the chunks arrived is refused again once the last one did, under its lock).
        """
        key, size, sha256, chunks = convert.upload_from_pb(request_iterator)
        self._refuse_bound(key, self._worker(context))
        counted = self._metrics.count_artifact_bytes("upload", chunks)
        with ExitStack() as held:
            checked = self._checked_at_end(key, counted, held)
            info = self._artifacts.put(key, size, sha256, checked)
        return artifacts_pb2.UploadArtifactResponse(artifact=convert.artifact_info_to_pb(info))

    def _worker(self, context: grpc.ServicerContext) -> bool:
        return self._is_worker(tuple(context.invocation_metadata() or ()))

    def _refuse_bound(self, key: str, worker: bool) -> None:
        if key == CODE_BUNDLES_PREFIX or key.startswith(CODE_BUNDLES_PREFIX + "/"):
            raise FailedPrecondition(
                f"{SCHEME}{CODE_BUNDLES_PREFIX}/ holds the source bundles of training jobs, "
                "kept by the control under their sha256; upload elsewhere"
            )
        if self._jobs is None:
            return
        job = self._jobs.bound_to(key)
        if job is not None:
            raise FailedPrecondition(
                f"{SCHEME}{key} is the source bundle of training job {job!r} and cannot be "
                "replaced; upload new code under a new job name"
            )
        job = None if worker else self._jobs.output_owner(key)
        if job is not None:
            raise FailedPrecondition(
                f"{SCHEME}{key} lies in the output of training job {job!r}, which only its "
                "trainer writes; upload elsewhere"
            )

    def _checked_at_end(
        self, key: str, chunks: Iterator[bytes], held: ExitStack
    ) -> Iterator[bytes]:
        yield from chunks
        # A job may have been created on this key while the chunks arrived; from here until
        # the object is renamed into place (`held` ends after `put`), none can be. Under the
        # lock only memory is read: a create may hold the database while it waits for it.
        held.enter_context(self._key_locks.holding(key))
        self._refuse_bound_here(key)

    def _refuse_bound_here(self, key: str) -> None:
        job = self._jobs.bound_here(key) if self._jobs is not None else None
        if job is not None:
            raise FailedPrecondition(
                f"{SCHEME}{key} became the source bundle of training job {job!r} while it was "
                "uploaded and cannot be replaced; upload new code under a new job name"
            )

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
        upload = convert.upload_request_from_pb(request)
        self._refuse_bound(upload.key, self._worker(context))
        plan = self._artifacts.start_upload(upload)
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
        self._refuse_bound(upload.key, self._worker(context))
        with self._key_locks.holding(upload.key):
            self._refuse_bound_here(upload.key)
            info = self._artifacts.complete_upload(upload, request.upload_id, request.part_etags)
        return artifacts_pb2.UploadArtifactResponse(artifact=convert.artifact_info_to_pb(info))
