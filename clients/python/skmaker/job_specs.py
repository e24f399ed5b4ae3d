"""Wire specs built from boto3-shaped arguments: a training job's, a tuning job's ranges.

Shared by `Session`'s training and tuning calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from skmaker.inputs import TrainingInput
from skmaker.v1 import training_job_pb2, tuning_job_pb2


def training_job_spec(
    *,
    entry_point: str,
    source_uri: str,
    hyperparameters: Mapping[str, str],
    channels: Mapping[str, TrainingInput],
    metric_definitions: Sequence[Mapping[str, str]] = (),
    environment: Mapping[str, str] | None = None,
    max_run: int = 86400,
    output_uri: str = "",
    shell_compat: bool = False,
    source_sha256: str = "",
    framework_version: str = "",
) -> training_job_pb2.TrainingJobSpec:
    """The wire spec of a training job (arguments as `Session.create_training_job`'s)."""
    return training_job_pb2.TrainingJobSpec(
        entry_point=entry_point,
        source_uri=source_uri,
        hyperparameters=dict(hyperparameters),
        channels=[
            training_job_pb2.Channel(
                name=channel, uri=data.s3_data, content_type=data.content_type or ""
            )
            for channel, data in channels.items()
        ],
        metric_definitions=[
            training_job_pb2.MetricDefinition(name=m["Name"], regex=m["Regex"])
            for m in metric_definitions
        ],
        environment=dict(environment or {}),
        max_runtime_seconds=max_run,
        output_uri=output_uri,
        shell_compat=shell_compat,
        source_sha256=source_sha256,
        framework_version=framework_version,
    )


def parameter_ranges_pb(
    ranges: Mapping[str, Sequence[Mapping[str, Any]]],
) -> tuning_job_pb2.ParameterRanges:
    """The wire ranges of boto3-shaped `ParameterRanges` (bounds may be strings or numbers).

    Raises:
        ValueError: a bound that is not a number.
    """
    message = tuning_job_pb2.ParameterRanges()
    for entry in ranges.get("IntegerParameterRanges", ()):
        message.integer_parameter_ranges.add(
            name=entry["Name"],
            min_value=int(entry["MinValue"]),
            max_value=int(entry["MaxValue"]),
            scaling_type=entry.get("ScalingType", "Auto"),
        )
    for entry in ranges.get("ContinuousParameterRanges", ()):
        message.continuous_parameter_ranges.add(
            name=entry["Name"],
            min_value=float(entry["MinValue"]),
            max_value=float(entry["MaxValue"]),
            scaling_type=entry.get("ScalingType", "Auto"),
        )
    for entry in ranges.get("CategoricalParameterRanges", ()):
        message.categorical_parameter_ranges.add(
            name=entry["Name"], values=[str(value) for value in entry["Values"]]
        )
    return message
