"""boto3-shaped dicts of skmaker resources, so code written for SageMaker's Describe* reads them.

The keys follow SageMaker's API (`TrainingJobName`, `TrainingJobStatus`, `ModelArtifacts`,
`EndpointStatus`...), timestamps are timezone-aware UTC datetimes, and fields the server left
unset are omitted as boto3 omits them. skmaker-only facts get their own keys (`RuntimeVersions`,
`FrameworkVersion`, `ScriptRuntime`, `AttemptCount`, `OutputArtifacts`,
`EntryPoint`/`SourceUri`/`ShellCompat` in `AlgorithmSpecification`; a model's
`EntryPoint`/`SourceUri`; an endpoint's `Address`, `Replicas`, `DesiredReplicas`,
`ScalingPolicy`, `Events`; a transform job's `Files`, `ShardsTotal`/`ShardsDone`,
`RecordErrors`, `SkipHeader`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from skmaker import hyperparameters as hp
from skmaker.autoscaling import METRIC_NAMES
from skmaker.v1 import model_pb2, training_job_pb2, tuning_job_pb2

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


def set_time(target: dict[str, Any], key: str, message: Any, field: str) -> None:
    if message.HasField(field):
        target[key] = to_datetime(getattr(message, field))


def training_job_description(job: training_job_pb2.TrainingJob) -> dict[str, Any]:
    """A DescribeTrainingJob-shaped dict of a training job."""
    spec = job.spec
    algorithm: dict[str, Any] = {
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": m.name, "Regex": m.regex} for m in spec.metric_definitions],
        "EnableSageMakerMetricsTimeSeries": False,
        "EntryPoint": spec.entry_point,
        "SourceUri": spec.source_uri,
        # skmaker's: the sha256 of the bundle the job is bound to (and ran).
        "SourceSha256": spec.source_sha256,
        "ShellCompat": spec.shell_compat,
    }
    description: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobStatus": status_name(job.status),
        "SecondaryStatus": job.secondary_status,
        "HyperParameters": dict(spec.hyperparameters),
        "AlgorithmSpecification": algorithm,
        "InputDataConfig": [_channel_description(channel) for channel in spec.channels],
        "OutputDataConfig": {"S3OutputPath": spec.output_uri},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "local"},
        "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_runtime_seconds or 86400},
        "Environment": dict(spec.environment),
        "FinalMetricDataList": [
            {"MetricName": m.name, "Value": m.value, "Timestamp": to_datetime(m.timestamp)}
            for m in job.final_metrics
        ],
        "SecondaryStatusTransitions": [],
        # What skmaker's trainers do, in SageMaker's terms: the network is not isolated, one
        # trainer gets a job (nothing travels between containers), no spot capacity, no
        # profiler.
        "EnableNetworkIsolation": False,
        "EnableInterContainerTrafficEncryption": False,
        "EnableManagedSpotTraining": False,
        "ProfilingStatus": "Disabled",
        "AttemptCount": job.attempts,
    }
    if job.failure_reason:
        description["FailureReason"] = job.failure_reason
    if job.model_artifact_uri:
        description["ModelArtifacts"] = {"S3ModelArtifacts": job.model_artifact_uri}
    if job.output_artifact_uri:
        description["OutputArtifacts"] = {"S3OutputArtifacts": job.output_artifact_uri}
    _set_training_times(description, job)
    if job.HasField("runtime_versions"):
        description["RuntimeVersions"] = runtime_description(job.runtime_versions)
    _set_runtime_choice(description, spec.framework_version, spec.script_runtime)
    if job.tuning_job_name:
        description["TuningJobName"] = job.tuning_job_name
    return description


def _channel_description(channel: training_job_pb2.Channel) -> dict[str, Any]:
    """An InputDataConfig entry of one of a training job's channels."""
    entry: dict[str, Any] = {
        "ChannelName": channel.name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": channel.uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "CompressionType": "None",
        "RecordWrapperType": "None",
    }
    if channel.content_type:
        entry["ContentType"] = channel.content_type
    return entry


def _set_training_times(description: dict[str, Any], job: training_job_pb2.TrainingJob) -> None:
    """Fill in the description's status transitions, times and the durations derived from them."""
    for transition in job.secondary_status_transitions:
        entry = {"Status": transition.status, "StatusMessage": transition.message}
        set_time(entry, "StartTime", transition, "start_time")
        set_time(entry, "EndTime", transition, "end_time")
        description["SecondaryStatusTransitions"].append(entry)
    set_time(description, "CreationTime", job, "creation_time")
    set_time(description, "TrainingStartTime", job, "training_start_time")
    set_time(description, "TrainingEndTime", job, "training_end_time")
    times = [
        description[key]
        for key in ("CreationTime", "TrainingStartTime", "TrainingEndTime")
        if key in description
    ]
    times += [
        transition[key]
        for transition in description["SecondaryStatusTransitions"]
        for key in ("StartTime", "EndTime")
        if key in transition
    ]
    if times:
        description["LastModifiedTime"] = max(times)
    if "TrainingStartTime" in description and "TrainingEndTime" in description:
        elapsed = description["TrainingEndTime"] - description["TrainingStartTime"]
        description["TrainingTimeInSeconds"] = max(0, round(elapsed.total_seconds()))
        # No spot capacity: every second trained is "billed", as SageMaker counts it (the
        # SDK's log follower prints it as "Billable seconds").
        description["BillableTimeInSeconds"] = description["TrainingTimeInSeconds"]


def training_job_summary(job: training_job_pb2.TrainingJob) -> dict[str, Any]:
    """A ListTrainingJobs `TrainingJobSummaries` entry of a training job."""
    summary: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobStatus": status_name(job.status),
        "SecondaryStatus": job.secondary_status,
    }
    set_time(summary, "CreationTime", job, "creation_time")
    set_time(summary, "TrainingEndTime", job, "training_end_time")
    return summary


def entry_point_of(description: dict[str, Any]) -> str:
    """The entry point of a described job: its spec, else the `sagemaker_program` hyperparameter."""
    entry_point = description.get("AlgorithmSpecification", {}).get("EntryPoint", "")
    if entry_point:
        return str(entry_point)
    encoded = description.get("HyperParameters", {}).get(hp.PROGRAM, '""')
    return str(hp.decode_value(encoded))


# -- models and endpoints --------------------------------------------------------------------

ENDPOINT_STATUS_NAMES: dict[int, str] = {
    model_pb2.ENDPOINT_STATUS_CREATING: "Creating",
    model_pb2.ENDPOINT_STATUS_IN_SERVICE: "InService",
    model_pb2.ENDPOINT_STATUS_UPDATING: "Updating",
    model_pb2.ENDPOINT_STATUS_DELETING: "Deleting",
    model_pb2.ENDPOINT_STATUS_FAILED: "Failed",
    model_pb2.ENDPOINT_STATUS_SYSTEM_UPDATING: "SystemUpdating",
}
# Statuses an endpoint passes through on its way to InService: waiters keep polling.
ENDPOINT_TRANSITIONAL_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating"})

REPLICA_STATE_NAMES: dict[int, str] = {
    model_pb2.REPLICA_STATE_STARTING: "Starting",
    model_pb2.REPLICA_STATE_SERVING: "Serving",
    model_pb2.REPLICA_STATE_DRAINING: "Draining",
    model_pb2.REPLICA_STATE_FAILED: "Failed",
}

# SageMaker names the one production variant of a single-model endpoint "AllTraffic".
VARIANT_NAME = "AllTraffic"


def endpoint_status_name(status: int) -> str:
    """SageMaker's EndpointStatus string for a proto status ("Unknown" when unset)."""
    return ENDPOINT_STATUS_NAMES.get(status, "Unknown")


def _set_runtime_choice(description: dict[str, Any], asked: str, runtime: str) -> None:
    """skmaker's `FrameworkVersion` (as asked) and `ScriptRuntime` (what runs) keys."""
    if asked:
        description["FrameworkVersion"] = asked
    if runtime:
        description["ScriptRuntime"] = runtime


def runtime_description(versions: training_job_pb2.RuntimeVersions) -> dict[str, str]:
    """skmaker's `RuntimeVersions` key: what a job ran with ("" where not known)."""
    return {
        "Python": versions.python,
        "ScikitLearn": versions.sklearn,
        "Numpy": versions.numpy,
        "Joblib": versions.joblib,
    }


def model_description(model: model_pb2.Model) -> dict[str, Any]:
    """A DescribeModel-shaped dict of a model.

    `PrimaryContainer` holds `ModelDataUrl` and `Environment` as on SageMaker; the code is in
    `EntryPoint` and `SourceUri` (empty when it sits in the model archive under `code/`).
    skmaker adds `RuntimeVersions`, what the model's training job ran with, when known.
    """
    description: dict[str, Any] = {
        "ModelName": model.name,
        "PrimaryContainer": {
            "ModelDataUrl": model.model_data_uri,
            "Environment": dict(model.environment),
        },
        "EntryPoint": model.entry_point,
        "SourceUri": model.source_uri,
    }
    if model.training_job_name:
        description["TrainingJobName"] = model.training_job_name
    if model.HasField("runtime_versions"):
        description["RuntimeVersions"] = runtime_description(model.runtime_versions)
    _set_runtime_choice(description, model.framework_version, model.script_runtime)
    set_time(description, "CreationTime", model, "creation_time")
    return description


def model_summary(model: model_pb2.Model) -> dict[str, Any]:
    """A ListModels `Models` entry of a model."""
    summary: dict[str, Any] = {"ModelName": model.name}
    set_time(summary, "CreationTime", model, "creation_time")
    return summary


def scaling_policy_description(policy: model_pb2.ScalingPolicy) -> dict[str, Any]:
    """An endpoint's scaling policy; `Metric` uses `AutoScalingPolicy`'s metric names."""
    return {
        "MinReplicas": policy.min_replicas,
        "MaxReplicas": policy.max_replicas,
        "Metric": METRIC_NAMES.get(policy.metric, "concurrent_requests_per_replica"),
        "TargetValue": policy.target_value,
        "ScaleOutWindowSeconds": policy.scale_out_window_seconds,
        "ScaleInWindowSeconds": policy.scale_in_window_seconds,
        "DisableScaleIn": policy.disable_scale_in,
    }


def predict_path_description(path: model_pb2.PredictPath) -> dict[str, Any]:
    """What answers a replica's predicts: `Name`, `Reason`, `Refused` (every fast runtime was
    refused by verification), and `MaxRows` (larger calls go to scikit-learn) when limited."""
    described: dict[str, Any] = {"Name": path.name, "Reason": path.reason, "Refused": path.refused}
    if path.max_rows:
        described["MaxRows"] = path.max_rows
    return described


def endpoint_description(endpoint: model_pb2.Endpoint) -> dict[str, Any]:
    """A DescribeEndpoint-shaped dict of an endpoint.

    Besides SageMaker's keys (`EndpointName`, `EndpointStatus`, `FailureReason`,
    `ProductionVariants` with one "AllTraffic" variant, times) it carries skmaker's:
    `ModelName`, `Address` (the stable host:port), `Replicas` (`[{Id, Address, State,
    MetricsAddress, ModelName, PredictPath}]`, State one of Starting, Serving, Draining,
    Failed; `PredictPath` once the replica loaded its model: `{Name, Reason, Refused,
    MaxRows}`, Name one of onnxruntime, treelite-gtil (the verified fast path), scikit-learn,
    user-handler), `DesiredReplicas`, `ScalingPolicy` (only when set) and `Events`
    (`[{Timestamp, Message}]`).
    """
    replicas = []
    for replica in endpoint.replicas:
        entry: dict[str, Any] = {
            "Id": replica.id,
            "Address": replica.address,
            "State": REPLICA_STATE_NAMES.get(replica.state, "Unknown"),
        }
        if replica.metrics_address:
            entry["MetricsAddress"] = replica.metrics_address
        if replica.model_name:
            entry["ModelName"] = replica.model_name
        if replica.HasField("predict_path"):
            entry["PredictPath"] = predict_path_description(replica.predict_path)
        replicas.append(entry)
    serving = sum(1 for replica in replicas if replica["State"] == "Serving")
    description: dict[str, Any] = {
        "EndpointName": endpoint.name,
        "EndpointStatus": endpoint_status_name(endpoint.status),
        "ModelName": endpoint.model_name,
        "ProductionVariants": [
            {
                "VariantName": VARIANT_NAME,
                "CurrentInstanceCount": serving,
                "DesiredInstanceCount": endpoint.desired_replicas,
            }
        ],
        "Address": endpoint.address,
        "Replicas": replicas,
        "DesiredReplicas": endpoint.desired_replicas,
        "Events": [],
    }
    if endpoint.failure_reason:
        description["FailureReason"] = endpoint.failure_reason
    if endpoint.HasField("scaling_policy"):
        description["ScalingPolicy"] = scaling_policy_description(endpoint.scaling_policy)
    for event in endpoint.events:
        entry = {"Message": event.message}
        set_time(entry, "Timestamp", event, "timestamp")
        description["Events"].append(entry)
    set_time(description, "CreationTime", endpoint, "creation_time")
    set_time(description, "LastModifiedTime", endpoint, "last_modified_time")
    return description


def endpoint_summary(endpoint: model_pb2.Endpoint) -> dict[str, Any]:
    """A ListEndpoints `Endpoints` entry, plus skmaker's `ModelName`, `Address`, replica counts."""
    serving = sum(1 for r in endpoint.replicas if r.state == model_pb2.REPLICA_STATE_SERVING)
    summary: dict[str, Any] = {
        "EndpointName": endpoint.name,
        "EndpointStatus": endpoint_status_name(endpoint.status),
        "ModelName": endpoint.model_name,
        "Address": endpoint.address,
        "CurrentReplicas": serving,
        "DesiredReplicas": endpoint.desired_replicas,
    }
    set_time(summary, "CreationTime", endpoint, "creation_time")
    set_time(summary, "LastModifiedTime", endpoint, "last_modified_time")
    return summary


# -- tuning jobs -----------------------------------------------------------------------------

TUNING_STATUS_NAMES: dict[int, str] = {
    tuning_job_pb2.TUNING_JOB_STATUS_IN_PROGRESS: "InProgress",
    tuning_job_pb2.TUNING_JOB_STATUS_COMPLETED: "Completed",
    tuning_job_pb2.TUNING_JOB_STATUS_FAILED: "Failed",
    tuning_job_pb2.TUNING_JOB_STATUS_STOPPING: "Stopping",
    tuning_job_pb2.TUNING_JOB_STATUS_STOPPED: "Stopped",
}
TUNING_STATUS_VALUES: dict[str, int] = {name: value for value, name in TUNING_STATUS_NAMES.items()}


def tuning_status_value(name: str) -> int:
    """The proto status for a SageMaker HyperParameterTuningJobStatus string.

    Raises:
        ValueError: for a name that is not one of InProgress, Completed, Failed, Stopping, Stopped.
    """
    try:
        return TUNING_STATUS_VALUES[name]
    except KeyError:
        raise ValueError(
            f"unknown tuning job status {name!r}; expected one of {', '.join(TUNING_STATUS_VALUES)}"
        ) from None


def tuning_trial_summary(trial: tuning_job_pb2.Trial, metric_name: str) -> dict[str, Any]:
    """A `HyperParameterTrainingJobSummary` of a trial (ListTrainingJobsForHyperParameterTuningJob).

    `TunedHyperParameters` holds the values as the training job received them (categoricals
    JSON-quoted, as on SageMaker for Framework estimators). skmaker adds `TrialNumber` and
    `StoppedEarly`.
    """
    summary: dict[str, Any] = {
        "TrainingJobName": trial.training_job_name,
        "TrainingJobStatus": status_name(trial.training_job_status),
        "TunedHyperParameters": dict(trial.tuned_hyperparameters),
        "ObjectiveStatus": trial.objective_status,
        "TrialNumber": trial.number,
        "StoppedEarly": trial.stopped_early,
    }
    if trial.objective_status == "Succeeded":
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "MetricName": metric_name,
            "Value": trial.final_objective_value,
        }
    if trial.failure_reason:
        summary["FailureReason"] = trial.failure_reason
    set_time(summary, "CreationTime", trial, "creation_time")
    set_time(summary, "TrainingStartTime", trial, "training_start_time")
    set_time(summary, "TrainingEndTime", trial, "training_end_time")
    return summary


def _parameter_ranges(ranges: tuning_job_pb2.ParameterRanges) -> dict[str, Any]:
    # boto3 spells every bound and value as a string.
    return {
        "IntegerParameterRanges": [
            {
                "Name": r.name,
                "MinValue": str(r.min_value),
                "MaxValue": str(r.max_value),
                "ScalingType": r.scaling_type or "Auto",
            }
            for r in ranges.integer_parameter_ranges
        ],
        "ContinuousParameterRanges": [
            {
                "Name": r.name,
                "MinValue": repr(r.min_value),
                "MaxValue": repr(r.max_value),
                "ScalingType": r.scaling_type or "Auto",
            }
            for r in ranges.continuous_parameter_ranges
        ],
        "CategoricalParameterRanges": [
            {"Name": r.name, "Values": list(r.values)} for r in ranges.categorical_parameter_ranges
        ],
    }


def _counters(job: tuning_job_pb2.TuningJob) -> tuple[dict[str, int], dict[str, int]]:
    counters = job.counters
    training = {
        "Completed": counters.completed,
        "InProgress": counters.in_progress,
        "RetryableError": counters.retryable_error,
        "NonRetryableError": counters.non_retryable_error,
        "Stopped": counters.stopped,
    }
    statuses = [trial.objective_status for trial in job.trials]
    objective = {name: statuses.count(name) for name in ("Succeeded", "Pending", "Failed")}
    return training, objective


def tuning_job_description(job: tuning_job_pb2.TuningJob) -> dict[str, Any]:
    """A DescribeHyperParameterTuningJob-shaped dict of a tuning job.

    Besides SageMaker's keys (`HyperParameterTuningJobName`, `HyperParameterTuningJobStatus`,
    `HyperParameterTuningJobConfig`, `TrainingJobDefinition`, `WarmStartConfig`,
    `TrainingJobStatusCounters`, `ObjectiveStatusCounters`, `BestTrainingJob`, times,
    `FailureReason`) it carries skmaker's `TrainingJobs`: every trial's summary, in number
    order (`tuning_trial_summary`).
    """
    spec = job.spec
    metric = spec.objective_metric_name
    template = training_job_description(
        training_job_pb2.TrainingJob(spec=spec.training_job_template)
    )
    config: dict[str, Any] = {
        "Strategy": spec.strategy or "Bayesian",
        "HyperParameterTuningJobObjective": {
            "Type": spec.objective_type or "Maximize",
            "MetricName": metric,
        },
        "ResourceLimits": {
            "MaxNumberOfTrainingJobs": spec.max_jobs,
            "MaxParallelTrainingJobs": spec.max_parallel_jobs,
        },
        "ParameterRanges": _parameter_ranges(spec.parameter_ranges),
        "TrainingJobEarlyStoppingType": spec.early_stopping_type or "Off",
    }
    if spec.HasField("random_seed"):
        config["RandomSeed"] = spec.random_seed
    if config["Strategy"] == "Hyperband":
        hyperband: dict[str, Any] = {"MinResource": spec.hyperband_min_resource}
        if spec.hyperband_max_resource:
            hyperband["MaxResource"] = spec.hyperband_max_resource
        config["StrategyConfig"] = {"HyperbandStrategyConfig": hyperband}
    training_counters, objective_counters = _counters(job)
    description: dict[str, Any] = {
        "HyperParameterTuningJobName": job.name,
        "HyperParameterTuningJobStatus": TUNING_STATUS_NAMES.get(job.status, "Unknown"),
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": {
            "StaticHyperParameters": template["HyperParameters"],
            "AlgorithmSpecification": template["AlgorithmSpecification"],
            "InputDataConfig": template["InputDataConfig"],
            "OutputDataConfig": template["OutputDataConfig"],
            "ResourceConfig": template["ResourceConfig"],
            "StoppingCondition": template["StoppingCondition"],
            "Environment": template["Environment"],
        },
        "TrainingJobStatusCounters": training_counters,
        "ObjectiveStatusCounters": objective_counters,
        "TrainingJobs": [tuning_trial_summary(trial, metric) for trial in job.trials],
    }
    if spec.warm_start_parent_names:
        description["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [
                {"HyperParameterTuningJobName": parent} for parent in spec.warm_start_parent_names
            ],
            "WarmStartType": spec.warm_start_type,
        }
    if job.HasField("best_trial"):
        description["BestTrainingJob"] = tuning_trial_summary(job.best_trial, metric)
    if job.failure_reason:
        description["FailureReason"] = job.failure_reason
    set_time(description, "CreationTime", job, "creation_time")
    set_time(description, "HyperParameterTuningEndTime", job, "end_time")
    return description


def tuning_job_summary(job: tuning_job_pb2.TuningJob) -> dict[str, Any]:
    """A ListHyperParameterTuningJobs `HyperParameterTuningJobSummaries` entry."""
    training_counters, _ = _counters(job)
    summary: dict[str, Any] = {
        "HyperParameterTuningJobName": job.name,
        "HyperParameterTuningJobStatus": TUNING_STATUS_NAMES.get(job.status, "Unknown"),
        "Strategy": job.spec.strategy or "Bayesian",
        "TrainingJobStatusCounters": training_counters,
        "ResourceLimits": {
            "MaxNumberOfTrainingJobs": job.spec.max_jobs,
            "MaxParallelTrainingJobs": job.spec.max_parallel_jobs,
        },
    }
    if job.HasField("best_trial"):
        summary["BestTrainingJobName"] = job.best_trial.training_job_name
        summary["BestObjectiveValue"] = job.best_trial.final_objective_value
    set_time(summary, "CreationTime", job, "creation_time")
    set_time(summary, "HyperParameterTuningEndTime", job, "end_time")
    return summary
