"""boto3-shaped dicts of skmaker resources, so code written against DescribeTrainingJob reads them.

The keys follow SageMaker's API (`TrainingJobName`, `TrainingJobStatus`, `ModelArtifacts`...),
timestamps are timezone-aware UTC datetimes, and fields the server left unset are omitted as
boto3 omits them. skmaker-only facts get their own keys (`RuntimeVersions`, `AttemptCount`,
`OutputArtifacts`, and `EntryPoint`/`SourceUri`/`ShellCompat` in `AlgorithmSpecification`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from skmaker import hyperparameters as hp
from skmaker.v1 import training_job_pb2

STATUS_NAMES: dict[int, str] = {
    training_job_pb2.TRAINING_JOB_STATUS_IN_PROGRESS: "InProgress",
    training_job_pb2.TRAINING_JOB_STATUS_COMPLETED: "Completed",
    training_job_pb2.TRAINING_JOB_STATUS_FAILED: "Failed",
    training_job_pb2.TRAINING_JOB_STATUS_STOPPING: "Stopping",
    training_job_pb2.TRAINING_JOB_STATUS_STOPPED: "Stopped",
}
STATUS_VALUES: dict[str, int] = {name: value for value, name in STATUS_NAMES.items()}
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})


def status_name(status: int) -> str:
    """SageMaker's TrainingJobStatus string for a proto status ("Unknown" when unset)."""
    return STATUS_NAMES.get(status, "Unknown")


def status_value(name: str) -> int:
    """The proto status for a SageMaker TrainingJobStatus string.

    Raises:
        ValueError: for a name that is not one of InProgress, Completed, Failed, Stopping, Stopped.
    """
    try:
        return STATUS_VALUES[name]
    except KeyError:
        raise ValueError(
            f"unknown training job status {name!r}; expected one of {', '.join(STATUS_VALUES)}"
        ) from None


def to_datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    """A timezone-aware UTC datetime of a protobuf Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def _set_time(target: dict[str, Any], key: str, message: Any, field: str) -> None:
    if message.HasField(field):
        target[key] = to_datetime(getattr(message, field))


def training_job_description(job: training_job_pb2.TrainingJob) -> dict[str, Any]:
    """A DescribeTrainingJob-shaped dict of a training job."""
    spec = job.spec
    algorithm: dict[str, Any] = {
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": m.name, "Regex": m.regex} for m in spec.metric_definitions],
        "EntryPoint": spec.entry_point,
        "SourceUri": spec.source_uri,
        "ShellCompat": spec.shell_compat,
    }
    channels = []
    for channel in spec.channels:
        entry: dict[str, Any] = {
            "ChannelName": channel.name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": channel.uri,
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
        if channel.content_type:
            entry["ContentType"] = channel.content_type
        channels.append(entry)
    description: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobStatus": status_name(job.status),
        "SecondaryStatus": job.secondary_status,
        "HyperParameters": dict(spec.hyperparameters),
        "AlgorithmSpecification": algorithm,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": spec.output_uri},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "local"},
        "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_runtime_seconds or 86400},
        "Environment": dict(spec.environment),
        "FinalMetricDataList": [
            {"MetricName": m.name, "Value": m.value, "Timestamp": to_datetime(m.timestamp)}
            for m in job.final_metrics
        ],
        "SecondaryStatusTransitions": [],
        "AttemptCount": job.attempts,
    }
    if job.failure_reason:
        description["FailureReason"] = job.failure_reason
    if job.model_artifact_uri:
        description["ModelArtifacts"] = {"S3ModelArtifacts": job.model_artifact_uri}
    if job.output_artifact_uri:
        description["OutputArtifacts"] = {"S3OutputArtifacts": job.output_artifact_uri}
    for transition in job.secondary_status_transitions:
        entry = {"Status": transition.status, "StatusMessage": transition.message}
        _set_time(entry, "StartTime", transition, "start_time")
        _set_time(entry, "EndTime", transition, "end_time")
        description["SecondaryStatusTransitions"].append(entry)
    _set_time(description, "CreationTime", job, "creation_time")
    _set_time(description, "TrainingStartTime", job, "training_start_time")
    _set_time(description, "TrainingEndTime", job, "training_end_time")
    if "TrainingStartTime" in description and "TrainingEndTime" in description:
        elapsed = description["TrainingEndTime"] - description["TrainingStartTime"]
        description["TrainingTimeInSeconds"] = max(0, round(elapsed.total_seconds()))
    if job.HasField("runtime_versions"):
        versions = job.runtime_versions
        description["RuntimeVersions"] = {
            "Python": versions.python,
            "ScikitLearn": versions.sklearn,
            "Numpy": versions.numpy,
        }
    if job.tuning_job_name:
        description["TuningJobName"] = job.tuning_job_name
    return description


def training_job_summary(job: training_job_pb2.TrainingJob) -> dict[str, Any]:
    """A ListTrainingJobs `TrainingJobSummaries` entry of a training job."""
    summary: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobStatus": status_name(job.status),
        "SecondaryStatus": job.secondary_status,
    }
    _set_time(summary, "CreationTime", job, "creation_time")
    _set_time(summary, "TrainingEndTime", job, "training_end_time")
    return summary


def entry_point_of(description: dict[str, Any]) -> str:
    """The entry point of a described job: its spec, else the `sagemaker_program` hyperparameter."""
    entry_point = description.get("AlgorithmSpecification", {}).get("EntryPoint", "")
    if entry_point:
        return str(entry_point)
    encoded = description.get("HyperParameters", {}).get(hp.PROGRAM, '""')
    return str(hp.decode_value(encoded))
