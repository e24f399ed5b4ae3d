"""The batch worker's gRPC link to the control: shard leases, heartbeats, completion, artifacts.

`services.runtime.dispatch_link` has the retry and fencing rules (a control restart costs no
shard; a superseded attempt is abandoned). `shard_from_task` turns a leased task into plain
values.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import grpc

from services.batch.input_stream import RangeStream
from services.runtime.dispatch_link import RPC_TIMEOUT_S, AttemptSuperseded, DispatchLink
from services.runtime.tls import ClientTls
from services.sagemaker.serving.model_loader import ModelLoadFailed, ModelSpec
from services.sagemaker.transform.bad_records import RecordFailure
from services.sagemaker.transform.data_processing import AssembleWith, JoinSource
from services.sagemaker.transform.records import BatchStrategy, Compression, SplitType
from skmaker.v1 import (
    dispatch_pb2,
    training_pb2,
    training_pb2_grpc,
    transfer,
)

__all__ = [
    "AttemptSuperseded",
    "ControlLink",
    "ShardAssignment",
    "TaskModelSource",
    "shard_from_task",
]

log = logging.getLogger(__name__)

# The control sends the settings it resolved as enums; UNSPECIFIED is SageMaker's default.
_SPLIT_TYPES: dict[int, SplitType] = {
    dispatch_pb2.SPLIT_TYPE_UNSPECIFIED: "None",
    dispatch_pb2.SPLIT_TYPE_NONE: "None",
    dispatch_pb2.SPLIT_TYPE_LINE: "Line",
}
_COMPRESSIONS: dict[int, Compression] = {
    dispatch_pb2.COMPRESSION_UNSPECIFIED: "None",
    dispatch_pb2.COMPRESSION_NONE: "None",
    dispatch_pb2.COMPRESSION_GZIP: "Gzip",
}
_ASSEMBLE_WITH: dict[int, AssembleWith] = {
    dispatch_pb2.ASSEMBLE_WITH_UNSPECIFIED: "None",
    dispatch_pb2.ASSEMBLE_WITH_NONE: "None",
    dispatch_pb2.ASSEMBLE_WITH_LINE: "Line",
}

OUTCOMES = {
    "succeeded": dispatch_pb2.TASK_OUTCOME_SUCCEEDED,
    "failed": dispatch_pb2.TASK_OUTCOME_FAILED,
    "stopped": dispatch_pb2.TASK_OUTCOME_STOPPED,
}


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
        split_type=_SPLIT_TYPES[shard.split_type],
        compression=_COMPRESSIONS[shard.compression],
        strategy=cast(BatchStrategy, spec.batch_strategy) if spec.batch_strategy else None,
        max_payload_mb=spec.max_payload_mb or None,
        max_concurrent=spec.max_concurrent_transforms or None,
        assemble_with=_ASSEMBLE_WITH[shard.assemble_with],
        input_filter=processing.input_filter,
        join_source=cast(JoinSource, processing.join_source or "None"),
        output_filter=processing.output_filter,
        skip_header=spec.skip_header,
        record_errors=spec.record_errors,
        environment=dict(spec.environment),
    )


class ControlLink(DispatchLink):
    """Calls to the control's DispatchService and ArtifactService for one batch worker.

    Args:
        address: The control's gRPC address.
        worker_id: This worker's stable id (host/pid).
        token: Bearer token, empty when the control has none.
        control_timeout_s: How long to keep retrying while the control is unreachable.
        script_runtime: The script runtime this worker runs on; it takes only shards of
            models on it (empty: any).
    """

    def __init__(
        self,
        address: str,
        worker_id: str,
        *,
        token: str = "",
        control_timeout_s: float = 120.0,
        tls: ClientTls | None = None,
        script_runtime: str = "",
    ) -> None:
        super().__init__(
            address,
            worker_id,
            dispatch_pb2.TASK_KIND_TRANSFORM,
            token=token,
            control_timeout_s=control_timeout_s,
            tls=tls,
            script_runtime=script_runtime,
        )
        self._training = training_pb2_grpc.TrainingServiceStub(self._channel)

    def acquire(self, wait_s: float, cancel: threading.Event) -> dispatch_pb2.Task | None:
        """Long-polls for a transform shard; None when there was none, or once `cancel` is set."""
        task = super().acquire(wait_s, cancel)
        # A shard leased to us as a drain began is left to its lease expiry.
        return None if cancel.is_set() else task

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
        return self._send_heartbeat(request)

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
        self._send_completion(request)

    # ----------------------------------------------------------------- artifacts

    def open_range(self, uri: str, offset: int, length: int) -> BinaryIO:
        """Bytes `[offset, offset + length)` of `uri`, read as they stream in (`RangeStream`):
        a broken stream is opened again where it stopped while the control is unreachable."""

        def open_chunks(start: int, size: int) -> Iterator[bytes]:
            return transfer.iter_range(self._artifacts, uri, start, size, metadata=self._metadata)

        stream = RangeStream(
            open_chunks,
            lambda call, what: self._retrying(call, what, None),
            offset,
            length,
            f"download {uri} bytes {offset}+{length}",
        )
        return cast(BinaryIO, io.BufferedReader(stream, buffer_size=transfer.CHUNK_BYTES))

    def download_range(self, uri: str, offset: int, length: int, dest: Path) -> int:
        """Writes bytes `[offset, offset + length)` of `uri` to `dest`; returns how many."""
        return self._retrying(
            lambda: transfer.download_range(
                self._artifacts, uri, offset, length, dest, metadata=self._metadata
            ),
            f"download {uri} bytes {offset}+{length}",
            None,
        )

    def trained_sklearn_version(self, training_job_name: str) -> str | None:
        """runtime_versions.sklearn of a training job; None when it cannot be read."""
        request = training_pb2.DescribeTrainingJobRequest(name=training_job_name)
        try:
            response = self._training.DescribeTrainingJob(
                request, timeout=RPC_TIMEOUT_S, metadata=self._metadata
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
