"""The batch worker's gRPC link to the control: shard leases, heartbeats, completion, artifacts.

Every call carries a deadline. A control that restarts (even after kill -9) must not cost a
shard: AcquireTask, CompleteTask, downloads and uploads are retried on UNAVAILABLE until
`control_timeout_s`, and a failed heartbeat is simply sent again later. FAILED_PRECONDITION or
NOT_FOUND on a report means this attempt was superseded (the shard was given to another
worker): the worker abandons it. `shard_from_task` turns a leased task into plain values.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import grpc

from services.batch.bad_records import RecordFailure
from services.batch.dataprocessing import AssembleWith, JoinSource
from services.batch.records import BatchStrategy, Compression, SplitType
from services.inference.model_loader import ModelLoadFailed, ModelSpec
from services.runtime.auth import token_metadata
from skmaker import transfer
from skmaker.v1 import (
    artifacts_pb2_grpc,
    dispatch_pb2,
    dispatch_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_RPC_TIMEOUT_S = 30.0
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_SUPERSEDED = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}

OUTCOMES = {
    "succeeded": dispatch_pb2.TASK_OUTCOME_SUCCEEDED,
    "failed": dispatch_pb2.TASK_OUTCOME_FAILED,
    "stopped": dispatch_pb2.TASK_OUTCOME_STOPPED,
}


class AttemptSuperseded(Exception):
    """The control no longer recognises this attempt (its lease expired and it was re-queued)."""


@dataclass(frozen=True)
class ShardAssignment:
    """One leased shard as plain values (the dispatch API's TransformTask).

    Attributes:
        task_id: The task.
        attempt: The lease's attempt; every report carries it.
        heartbeat_interval_s: How often to heartbeat.
        job_name: The transform job.
        model: The model to score with.
        input_uri: The input object.
        shard_index: The shard's position in its file.
        start: Its first byte.
        end: The byte after its last one.
        output_uri: Where its output goes (the same on every attempt).
        is_first_shard: Whether it holds the object's first line.
        input_path: The input object's file on the control's disk ("" when it has none).
        input_size: The input object's size when the job was planned.
        errors_uri: Where the shard's bad records go (per-record error mode); "" from an
            older control, which takes them inline in the completion.
        content_type, accept, split_type, compression, assemble_with, input_filter,
        join_source, output_filter, skip_header, record_errors: The job's settings.
        strategy, max_payload_mb, max_concurrent: BatchStrategy, MaxPayloadInMB and
            MaxConcurrentTransforms as the request set them; None when it left them to the
            model's `execution_parameters_fn` and the defaults.
        environment: The job's extra environment for the model's handlers.
    """

    task_id: str
    attempt: int
    heartbeat_interval_s: float
    job_name: str
    model: ModelSpec
    input_uri: str
    shard_index: int
    start: int
    end: int
    output_uri: str
    is_first_shard: bool
    input_path: str = ""
    input_size: int = 0
    errors_uri: str = ""
    content_type: str = ""
    accept: str = ""
    split_type: SplitType = "None"
    compression: Compression = "None"
    strategy: BatchStrategy | None = None
    max_payload_mb: int | None = None
    max_concurrent: int | None = None
    assemble_with: AssembleWith = "None"
    input_filter: str = ""
    join_source: JoinSource = "None"
    output_filter: str = ""
    skip_header: bool = False
    record_errors: bool = False
    environment: dict[str, str] = field(default_factory=dict)


def shard_from_task(task: dispatch_pb2.Task) -> ShardAssignment:
    """The plain values of a leased transform task; empty and 0 knobs become None (unset)."""
    shard = task.transform
    spec = shard.spec
    model = shard.model
    processing = spec.data_processing
    return ShardAssignment(
        task_id=task.task_id,
        attempt=task.attempt,
        heartbeat_interval_s=task.heartbeat_interval_seconds or 2.0,
        job_name=shard.job_name,
        model=ModelSpec(
            name=model.name,
            model_data_uri=model.model_data_uri,
            entry_point=model.entry_point,
            source_uri=model.source_uri,
            environment=dict(model.environment),
            training_job_name=model.training_job_name,
        ),
        input_uri=shard.input_uri,
        shard_index=shard.shard_index,
        start=shard.start_offset,
        end=shard.end_offset,
        output_uri=shard.output_uri,
        is_first_shard=shard.is_first_shard,
        input_path=shard.input_path,
        input_size=shard.input_size,
        errors_uri=shard.errors_uri,
        content_type=spec.content_type,
        accept=spec.accept,
        split_type=cast(SplitType, spec.split_type or "None"),
        compression=cast(Compression, spec.compression_type or "None"),
        strategy=cast(BatchStrategy, spec.batch_strategy) if spec.batch_strategy else None,
        max_payload_mb=spec.max_payload_mb or None,
        max_concurrent=spec.max_concurrent_transforms or None,
        assemble_with=cast(AssembleWith, spec.assemble_with or "None"),
        input_filter=processing.input_filter,
        join_source=cast(JoinSource, processing.join_source or "None"),
        output_filter=processing.output_filter,
        skip_header=spec.skip_header,
        record_errors=spec.record_errors,
        environment=dict(spec.environment),
    )


class ControlLink:
    """Calls to the control's DispatchService and ArtifactService for one batch worker.

    Args:
        address: The control's gRPC address.
        worker_id: This worker's stable id (host/pid).
        token: Bearer token, empty when the control has none.
        control_timeout_s: How long to keep retrying while the control is unreachable.
    """

    def __init__(
        self, address: str, worker_id: str, *, token: str = "", control_timeout_s: float = 120.0
    ) -> None:
        self._address = address
        self._channel = grpc.insecure_channel(
            address,
            options=[
                # Reconnect quickly after a control restart: a shard is waiting on us.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        self._dispatch = dispatch_pb2_grpc.DispatchServiceStub(self._channel)
        self._artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self._channel)
        self._training = training_pb2_grpc.TrainingServiceStub(self._channel)
        self._metadata = token_metadata(token)
        self.worker_id = worker_id
        self._control_timeout_s = control_timeout_s
        self._interrupted = threading.Event()

    def interrupt(self) -> None:
        """Ends every retry loop at once (they raise TimeoutError): the worker is shutting down."""
        self._interrupted.set()

    def close(self) -> None:
        """Closes the channel."""
        self._interrupted.set()
        self._channel.close()

    def _retrying(self, call: Callable[[], T], what: str, cancel: threading.Event | None) -> T:
        deadline = time.monotonic() + self._control_timeout_s
        delay = 0.1
        while True:
            try:
                return call()
            except grpc.RpcError as err:
                if err.code() not in _RETRYABLE or time.monotonic() + delay > deadline:
                    raise
                log.warning("%s: control unreachable (%s); retrying", what, err.code().name)
            if (cancel is not None and cancel.wait(delay)) or self._interrupted.wait(
                0 if cancel is not None else delay
            ):
                raise TimeoutError(f"{what}: cancelled while the control was unreachable")
            delay = min(delay * 2, 2.0)

    # ----------------------------------------------------------------- dispatch

    def acquire(self, wait_s: float, cancel: threading.Event) -> dispatch_pb2.Task | None:
        """Long-polls for a transform shard; None when there was none, or once `cancel` is set.

        Setting `cancel` (a drain) ends the long poll at once instead of after `wait_s`.
        """
        request = dispatch_pb2.AcquireTaskRequest(
            worker_id=self.worker_id,
            kinds=[dispatch_pb2.TASK_KIND_TRANSFORM],
            wait_seconds=wait_s,
        )

        def poll() -> dispatch_pb2.AcquireTaskResponse | None:
            future = self._dispatch.AcquireTask.future(
                request, timeout=wait_s + _RPC_TIMEOUT_S, metadata=self._metadata
            )
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            while not done.wait(0.1):
                if cancel.is_set():
                    future.cancel()
                    return None
            return future.result()  # type: ignore[no-any-return]

        try:
            response = self._retrying(poll, "AcquireTask", cancel)
        except TimeoutError:
            return None
        if response is None or cancel.is_set():
            # A task leased to us during a drain is left to its lease expiry.
            return None
        return response.task if response.HasField("task") else None

    def heartbeat(self, shard: ShardAssignment, records_done: int, bytes_done: int) -> bool:
        """Renews the lease and reports progress; returns whether the shard must stop.

        Raises:
            AttemptSuperseded: the control gave the shard to another attempt.
            grpc.RpcError: the control is unreachable (the caller tries again later).
        """
        request = dispatch_pb2.HeartbeatRequest(
            task_id=shard.task_id,
            attempt=shard.attempt,
            worker_id=self.worker_id,
            records_done=records_done,
            bytes_done=bytes_done,
        )
        try:
            response = self._dispatch.Heartbeat(
                request, timeout=_RPC_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.RpcError as err:
            if err.code() in _SUPERSEDED:
                raise AttemptSuperseded(err.details()) from err
            raise
        return bool(response.stop_requested)

    def complete(
        self,
        shard: ShardAssignment,
        outcome: str,
        *,
        failure_reason: str = "",
        records_done: int = 0,
        bytes_done: int = 0,
        records_failed: int = 0,
        failures: Sequence[RecordFailure] = (),
    ) -> None:
        """Reports how the attempt ended, retrying while the control is unreachable.

        Args:
            shard: The shard.
            outcome: `succeeded`, `failed` or `stopped`.
            failure_reason: Why it failed (≤1024 chars).
            records_done: Records scored.
            bytes_done: Input bytes read.
            records_failed: Bad records uploaded to `shard.errors_uri`.
            failures: Bad records to report inline, their lines counted in the input file:
                only for an older control, which gave no `errors_uri`.

        Raises:
            AttemptSuperseded: the control gave the shard to another attempt meanwhile.
        """
        request = dispatch_pb2.CompleteTaskRequest(
            task_id=shard.task_id,
            attempt=shard.attempt,
            worker_id=self.worker_id,
            outcome=OUTCOMES[outcome],
            failure_reason=failure_reason,
            transform_result=dispatch_pb2.TransformShardResult(
                records_done=records_done,
                bytes_done=bytes_done,
                records_failed=records_failed,
                record_errors=[
                    dispatch_pb2.RecordError(line=f.line, message=f.message) for f in failures
                ],
            ),
        )
        try:
            self._retrying(
                lambda: self._dispatch.CompleteTask(
                    request, timeout=_RPC_TIMEOUT_S, metadata=self._metadata
                ),
                "CompleteTask",
                None,
            )
        except grpc.RpcError as err:
            if err.code() in _SUPERSEDED:
                raise AttemptSuperseded(err.details()) from err
            raise

    # ----------------------------------------------------------------- artifacts

    def download_range(self, uri: str, offset: int, length: int, dest: Path) -> int:
        """Writes bytes `[offset, offset + length)` of `uri` to `dest`; returns how many."""
        return self._retrying(
            lambda: transfer.download_range(
                self._artifacts, uri, offset, length, dest, metadata=self._metadata
            ),
            f"download {uri} bytes {offset}+{length}",
            None,
        )

    def download_file(self, uri: str, dest: Path) -> None:
        """Writes the whole object `uri` to `dest`, its size and sha256 checked."""
        self._retrying(
            lambda: transfer.download_file(self._artifacts, uri, dest, metadata=self._metadata),
            f"download {uri}",
            None,
        )

    def upload_file(self, path: Path, uri: str) -> None:
        """Uploads `path` to `uri` (the object appears atomically on the control)."""
        self._retrying(
            lambda: transfer.upload_file(self._artifacts, path, uri, metadata=self._metadata),
            f"upload {uri}",
            None,
        )

    def trained_sklearn_version(self, training_job_name: str) -> str | None:
        """runtime_versions.sklearn of a training job; None when it cannot be read."""
        request = training_pb2.DescribeTrainingJobRequest(name=training_job_name)
        try:
            response = self._training.DescribeTrainingJob(
                request, timeout=_RPC_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.RpcError as err:
            log.warning("cannot read training job %s: %s", training_job_name, err.details())
            return None
        return response.training_job.runtime_versions.sklearn or None


class TaskModelSource:
    """`model_loader.ModelSource` for a model that came with the task: no DescribeModel call.

    Args:
        link: Downloads the model's archives.
        model: The model as the task describes it, its environment already merged with the
            job's and the batch variables.
    """

    def __init__(self, link: ControlLink, model: ModelSpec) -> None:
        self._link = link
        self._model = model

    def describe_model(self, name: str) -> ModelSpec:
        """The task's model."""
        return self._model

    def download(self, uri: str, dest: Path) -> None:
        """Downloads an archive of the model.

        Raises:
            ModelLoadFailed: the download failed.
        """
        try:
            self._link.download_file(uri, dest)
        except (grpc.RpcError, OSError) as err:
            detail = err.details() if isinstance(err, grpc.RpcError) else str(err)
            raise ModelLoadFailed(f"downloading {uri} failed: {detail}") from err

    def trained_sklearn_version(self, training_job_name: str) -> str | None:
        """The scikit-learn version the model was trained with, for a warning."""
        return self._link.trained_sklearn_version(training_job_name)
