"""boto3-shaped dicts of transform jobs (DescribeTransformJob, ListTransformJobs' summaries).

The other resources' shapes, and the shared time and status helpers, are in `descriptions`.
"""

from __future__ import annotations

from typing import Any

from skmaker.descriptions import set_time
from skmaker.v1 import transform_job_pb2

TRANSFORM_STATUS_NAMES: dict[int, str] = {
    transform_job_pb2.TRANSFORM_JOB_STATUS_IN_PROGRESS: "InProgress",
    transform_job_pb2.TRANSFORM_JOB_STATUS_COMPLETED: "Completed",
    transform_job_pb2.TRANSFORM_JOB_STATUS_FAILED: "Failed",
    transform_job_pb2.TRANSFORM_JOB_STATUS_STOPPING: "Stopping",
    transform_job_pb2.TRANSFORM_JOB_STATUS_STOPPED: "Stopped",
}
TRANSFORM_STATUS_VALUES: dict[str, int] = {
    name: value for value, name in TRANSFORM_STATUS_NAMES.items()
}


def transform_status_value(name: str) -> int:
    """The proto status for a SageMaker TransformJobStatus string.

    Raises:
        ValueError: for a name that is not one of InProgress, Completed, Failed, Stopping, Stopped.
    """
    try:
        return TRANSFORM_STATUS_VALUES[name]
    except KeyError:
        raise ValueError(
            f"unknown transform job status {name!r}; expected one of "
            f"{', '.join(TRANSFORM_STATUS_VALUES)}"
        ) from None


def transform_file_description(file: transform_job_pb2.TransformFile) -> dict[str, Any]:
    """One entry of a transform job's `Files`: an input file's progress and outcome.

    `Status` is Pending, InProgress, Completed, Failed or Stopped; `OutputUri` is set once
    the file's `.out` is written, `FailureReason` (naming the line) when it failed, and
    `ErrorsUri` when bad records were written to an errors file (`record_errors`).
    """
    entry: dict[str, Any] = {
        "InputUri": file.input_uri,
        "Status": file.status,
        "BytesTotal": file.bytes_total,
        "BytesDone": file.bytes_done,
        "RecordsDone": file.records_done,
        "RecordsFailed": file.records_failed,
    }
    if file.output_uri:
        entry["OutputUri"] = file.output_uri
    if file.failure_reason:
        entry["FailureReason"] = file.failure_reason
    if file.errors_uri:
        entry["ErrorsUri"] = file.errors_uri
    return entry


def transform_job_description(job: transform_job_pb2.TransformJob) -> dict[str, Any]:
    """A DescribeTransformJob-shaped dict of a transform job.

    SageMaker's keys: `TransformJobName`, `TransformJobStatus`, `FailureReason`, `ModelName`,
    `MaxConcurrentTransforms`, `MaxPayloadInMB`, `BatchStrategy`, `Environment`,
    `TransformInput` (`DataSource.S3DataSource.S3Uri`, `ContentType`, `CompressionType`,
    `SplitType`), `TransformOutput` (`S3OutputPath`, `Accept`, `AssembleWith`),
    `TransformResources` (`InstanceCount`), `DataProcessing` and the times. `ContentType`,
    `Accept`, `BatchStrategy`, `MaxPayloadInMB` and `MaxConcurrentTransforms` are omitted when
    the job left them to the model (its `execution_parameters_fn`) or the defaults, as boto3
    omits unset fields.
    skmaker's: `Files` (per input file, in input order, see `transform_file_description`),
    `ShardsTotal`, `ShardsDone`, `RecordErrors` and `SkipHeader`.
    """
    spec = job.spec
    transform_input: dict[str, Any] = {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input_uri}},
        "CompressionType": spec.compression_type or "None",
        "SplitType": spec.split_type or "None",
    }
    if spec.content_type:
        transform_input["ContentType"] = spec.content_type
    transform_output: dict[str, Any] = {
        "S3OutputPath": spec.output_uri,
        "AssembleWith": spec.assemble_with or "None",
    }
    if spec.accept:
        transform_output["Accept"] = spec.accept
    processing = spec.data_processing
    description: dict[str, Any] = {
        "TransformJobName": job.name,
        "TransformJobStatus": TRANSFORM_STATUS_NAMES.get(job.status, "Unknown"),
        "ModelName": spec.model_name,
        "Environment": dict(spec.environment),
        "TransformInput": transform_input,
        "TransformOutput": transform_output,
        "TransformResources": {"InstanceCount": spec.instance_count, "InstanceType": "local"},
        "DataProcessing": {
            "InputFilter": processing.input_filter or "$",
            "OutputFilter": processing.output_filter or "$",
            "JoinSource": processing.join_source or "None",
        },
        "RecordErrors": spec.record_errors,
        "SkipHeader": spec.skip_header,
        "Files": [transform_file_description(file) for file in job.files],
        "ShardsTotal": job.shards_total,
        "ShardsDone": job.shards_done,
    }
    if spec.max_concurrent_transforms:
        description["MaxConcurrentTransforms"] = spec.max_concurrent_transforms
    if spec.max_payload_mb:
        description["MaxPayloadInMB"] = spec.max_payload_mb
    if spec.batch_strategy:
        description["BatchStrategy"] = spec.batch_strategy
    if job.failure_reason:
        description["FailureReason"] = job.failure_reason
    if job.status_message:
        # skmaker extension: why its shards wait (a runtime being built, no worker on it).
        description["StatusMessage"] = job.status_message
    set_time(description, "CreationTime", job, "creation_time")
    set_time(description, "TransformStartTime", job, "transform_start_time")
    set_time(description, "TransformEndTime", job, "transform_end_time")
    return description


def transform_job_summary(job: transform_job_pb2.TransformJob) -> dict[str, Any]:
    """A ListTransformJobs `TransformJobSummaries` entry of a transform job."""
    summary: dict[str, Any] = {
        "TransformJobName": job.name,
        "TransformJobStatus": TRANSFORM_STATUS_NAMES.get(job.status, "Unknown"),
        "ModelName": job.spec.model_name,
    }
    if job.failure_reason:
        summary["FailureReason"] = job.failure_reason
    set_time(summary, "CreationTime", job, "creation_time")
    set_time(summary, "TransformEndTime", job, "transform_end_time")
    return summary
