"""Pure conversions between the transform-job wire messages and the control's domain values.

With `servicer`, the only transform module that imports the generated protobuf modules; it also
encodes the transform shard a worker leases (`transform_task_to_pb`, used by `dispatch.convert`).
The internal file status `Assembling` goes out as `InProgress`, the wire's vocabulary.
"""

from __future__ import annotations

from services.control.artifacts.store import store_uri_of
from services.control.hosting.convert import model_to_pb
from services.control.timestamps import timestamp
from services.control.transform.jobs import TransformJobPage, TransformTaskPayload
from services.control.transform.values import (
    DataProcessing,
    FileStatus,
    TransformFile,
    TransformJob,
    TransformJobSpec,
    TransformJobStatus,
)
from services.runtime.errors import InvalidArgument
from skmaker.v1 import dispatch_pb2, transform_job_pb2, transform_pb2

_STATUS_TO_PB = {
    TransformJobStatus.IN_PROGRESS: transform_job_pb2.TRANSFORM_JOB_STATUS_IN_PROGRESS,
    TransformJobStatus.COMPLETED: transform_job_pb2.TRANSFORM_JOB_STATUS_COMPLETED,
    TransformJobStatus.FAILED: transform_job_pb2.TRANSFORM_JOB_STATUS_FAILED,
    TransformJobStatus.STOPPING: transform_job_pb2.TRANSFORM_JOB_STATUS_STOPPING,
    TransformJobStatus.STOPPED: transform_job_pb2.TRANSFORM_JOB_STATUS_STOPPED,
}
_STATUS_FROM_PB = {pb: status for status, pb in _STATUS_TO_PB.items()}
# A stored spec holds validated values (transform.validation), so each has its wire enum.
_SPLIT_TYPE_TO_PB = {"None": dispatch_pb2.SPLIT_TYPE_NONE, "Line": dispatch_pb2.SPLIT_TYPE_LINE}
_COMPRESSION_TO_PB = {"None": dispatch_pb2.COMPRESSION_NONE, "Gzip": dispatch_pb2.COMPRESSION_GZIP}
_ASSEMBLE_WITH_TO_PB = {
    "None": dispatch_pb2.ASSEMBLE_WITH_NONE,
    "Line": dispatch_pb2.ASSEMBLE_WITH_LINE,
}


def spec_from_pb(spec: transform_job_pb2.TransformJobSpec) -> TransformJobSpec:
    """The domain spec of a wire spec; defaults are filled in by validation."""
    processing = spec.data_processing
    return TransformJobSpec(
        model_name=spec.model_name,
        input_uri=store_uri_of(spec.input_uri),
        output_uri=store_uri_of(spec.output_uri),
        content_type=spec.content_type,
        accept=spec.accept,
        split_type=spec.split_type,
        batch_strategy=spec.batch_strategy,
        max_payload_mb=spec.max_payload_mb,
        max_concurrent_transforms=spec.max_concurrent_transforms,
        assemble_with=spec.assemble_with,
        compression_type=spec.compression_type,
        data_processing=DataProcessing(
            input_filter=processing.input_filter,
            join_source=processing.join_source,
            output_filter=processing.output_filter,
        ),
        instance_count=spec.instance_count,
        environment=dict(spec.environment),
        record_errors=spec.record_errors,
        skip_header=spec.skip_header,
        framework_version=spec.framework_version,
    )


def status_from_pb(
    status: transform_job_pb2.TransformJobStatus.ValueType,
) -> TransformJobStatus | None:
    """The domain status of a wire status; None for UNSPECIFIED (no filter).

    Raises:
        InvalidArgument: an unknown value.
    """
    if status == transform_job_pb2.TRANSFORM_JOB_STATUS_UNSPECIFIED:
        return None
    try:
        return _STATUS_FROM_PB[status]
    except KeyError:
        raise InvalidArgument(f"unknown transform job status {status}") from None


def _file_to_pb(file: TransformFile) -> transform_job_pb2.TransformFile:
    status = FileStatus.IN_PROGRESS if file.status is FileStatus.ASSEMBLING else file.status
    return transform_job_pb2.TransformFile(
        input_uri=file.input_uri,
        output_uri=file.output_uri,
        bytes_total=file.size,
        bytes_done=file.bytes_done,
        records_done=file.records_done,
        records_failed=file.records_failed,
        status=status.value,
        failure_reason=file.failure_reason,
        errors_uri=file.errors_uri,
    )


def job_to_pb(job: TransformJob) -> transform_job_pb2.TransformJob:
    """The wire form of a job, with its files when they were read."""
    message = transform_job_pb2.TransformJob(
        name=job.name,
        spec=transform_spec_to_pb(job.spec),
        status=_STATUS_TO_PB[job.status],
        failure_reason=job.failure_reason,
        files=[_file_to_pb(file) for file in job.files],
        shards_total=job.shards_total,
        shards_done=job.shards_done,
        creation_time=timestamp(job.creation_time),
    )
    if job.start_time is not None:
        message.transform_start_time.CopyFrom(timestamp(job.start_time))
    if job.end_time is not None:
        message.transform_end_time.CopyFrom(timestamp(job.end_time))
    return message


def page_to_pb(page: TransformJobPage) -> transform_pb2.ListTransformJobsResponse:
    """A page of ListTransformJobs."""
    return transform_pb2.ListTransformJobsResponse(
        transform_jobs=[job_to_pb(job) for job in page.jobs],
        next_page_token=page.next_page_token,
    )


def transform_spec_to_pb(spec: TransformJobSpec) -> transform_job_pb2.TransformJobSpec:
    """The wire form of a transform job's spec."""
    processing: DataProcessing = spec.data_processing
    return transform_job_pb2.TransformJobSpec(
        model_name=spec.model_name,
        input_uri=spec.input_uri,
        output_uri=spec.output_uri,
        content_type=spec.content_type,
        accept=spec.accept,
        split_type=spec.split_type,
        batch_strategy=spec.batch_strategy,
        max_payload_mb=spec.max_payload_mb,
        max_concurrent_transforms=spec.max_concurrent_transforms,
        assemble_with=spec.assemble_with,
        compression_type=spec.compression_type,
        data_processing=transform_job_pb2.DataProcessing(
            input_filter=processing.input_filter,
            join_source=processing.join_source,
            output_filter=processing.output_filter,
        ),
        instance_count=spec.instance_count,
        environment=dict(spec.environment),
        record_errors=spec.record_errors,
        skip_header=spec.skip_header,
        framework_version=spec.framework_version,
    )


def transform_task_to_pb(payload: TransformTaskPayload) -> dispatch_pb2.TransformTask:
    """The wire form of one transform shard handed to a batch worker."""
    return dispatch_pb2.TransformTask(
        job_name=payload.job_name,
        spec=transform_spec_to_pb(payload.spec),
        model=model_to_pb(payload.model),
        input_uri=payload.input_uri,
        shard_index=payload.shard_index,
        start_offset=payload.start,
        end_offset=payload.end,
        output_uri=payload.output_uri,
        is_first_shard=payload.is_first_shard,
        input_path=payload.input_path,
        input_size=payload.input_size,
        errors_uri=payload.errors_uri,
        split_type=_SPLIT_TYPE_TO_PB[payload.spec.split_type],
        compression=_COMPRESSION_TO_PB[payload.spec.compression_type],
        assemble_with=_ASSEMBLE_WITH_TO_PB[payload.spec.assemble_with],
    )
