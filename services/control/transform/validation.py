"""Validation of CreateTransformJob: SageMaker's knobs and limits (contract §4.2-4.3).

`validate_transform_job` raises the first problem it finds as InvalidArgument, with a message
that names the field and the allowed values, and returns the spec with SageMaker's defaults
filled in (SplitType None, AssembleWith None, CompressionType None, JoinSource None) and the
default output path `store://transform-jobs/<job>`. BatchStrategy, MaxPayloadInMB and
MaxConcurrentTransforms stay as asked (empty or 0 when unset), as SageMaker describes them:
the batch worker resolves them (the request, then the model's `execution_parameters_fn`, then
MultiRecord, 6 and 1; contract §4.2); the limit on their product is checked here with the
defaults standing in for unset ones. It reads no store: the caller checks that the model and
the input exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import cast

from services.control.artifacts.store import SCHEME, key_of
from services.control.names import Resource, require_resource_name
from services.control.transform.values import (
    DEFAULT_MAX_CONCURRENT_TRANSFORMS,
    DEFAULT_MAX_PAYLOAD_MB,
    DataProcessing,
    TransformJobSpec,
)
from services.runtime.errors import InvalidArgument
from services.sagemaker.serving.codecs import DEFAULT_ACCEPT
from services.sagemaker.transform.data_processing import (
    AssembleWith,
    JoinSource,
    check_data_processing,
)
from services.sagemaker.transform.records import SplitType

ENVIRONMENT_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,1023}")
# SageMaker's limits: 16 environment entries for a transform job, values up to 10 KiB, the
# product of concurrency and payload at most 100 MB (contract §4.2).
MAX_ENVIRONMENT_ENTRIES = 16
MAX_ENVIRONMENT_VALUE_CHARS = 10_240
MAX_PAYLOAD_MB = 100
MAX_CONCURRENT_TIMES_PAYLOAD_MB = 100
# The default output path (SageMaker's is s3://<default bucket>/<job>): outputs land at
# store://transform-jobs/<job>/<input key relative to the input URI>.out.
DEFAULT_OUTPUT_KEY = "transform-jobs"
# The accept a model answers with when neither the job nor the model names one.
DEFAULT_ACCEPT_VARIABLE = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"

SPLIT_TYPES = ("None", "Line")
BATCH_STRATEGIES = ("MultiRecord", "SingleRecord")
ASSEMBLE_WITH = ("None", "Line")
COMPRESSION_TYPES = ("None", "Gzip")
JOIN_SOURCES = ("None", "Input")


def validate_transform_job_name(name: str) -> None:
    """Raises InvalidArgument unless `name` follows SageMaker's transform-job name rule."""
    require_resource_name(Resource.TRANSFORM_JOB, name)


def effective_accept(accept: str, model_environment: Mapping[str, str]) -> str:
    """The accept type outputs will have: the job's, else the model's default, else JSON."""
    return accept or model_environment.get(DEFAULT_ACCEPT_VARIABLE) or DEFAULT_ACCEPT


def validate_transform_job(
    name: str, spec: TransformJobSpec, model_environment: Mapping[str, str]
) -> TransformJobSpec:
    """Checks a transform job's spec and returns it with defaults filled in (see the module).

    Args:
        name: The job name (already checked by `validate_transform_job_name`).
        spec: The spec as asked; empty strings and zeros mean "the default".
        model_environment: The model's environment, for its default accept type (the
            DataProcessing checks need the output's format).

    Raises:
        InvalidArgument: A field breaks a rule; the message names it.
    """
    if not spec.model_name:
        raise InvalidArgument("model_name is empty: name the model to score with")
    _store_uri("input_uri", spec.input_uri)
    output_uri = (
        SCHEME + key_of(_store_uri("output_uri", spec.output_uri))
        if spec.output_uri
        else f"{SCHEME}{DEFAULT_OUTPUT_KEY}/{name}"
    )
    split_type = _choice("split_type (SplitType)", spec.split_type, SPLIT_TYPES)
    if spec.batch_strategy:
        _choice("batch_strategy (BatchStrategy)", spec.batch_strategy, BATCH_STRATEGIES)
    assemble_with = _choice("assemble_with (AssembleWith)", spec.assemble_with, ASSEMBLE_WITH)
    compression = _choice(
        "compression_type (CompressionType)", spec.compression_type, COMPRESSION_TYPES
    )
    if not 0 <= spec.max_payload_mb <= MAX_PAYLOAD_MB:
        raise InvalidArgument(
            f"max_payload_mb (MaxPayloadInMB) is {spec.max_payload_mb}: use 1-{MAX_PAYLOAD_MB}, "
            "or 0 to leave it to the model's execution_parameters_fn (else "
            f"{DEFAULT_MAX_PAYLOAD_MB})"
        )
    # Unset values count as the defaults here; the worker checks again with what the model's
    # execution_parameters_fn asks for.
    payload_mb = spec.max_payload_mb or DEFAULT_MAX_PAYLOAD_MB
    if spec.max_concurrent_transforms < 0:
        raise InvalidArgument(
            f"max_concurrent_transforms (MaxConcurrentTransforms) is "
            f"{spec.max_concurrent_transforms}: use 1 or more, or 0 to leave it to the model's "
            f"execution_parameters_fn (else {DEFAULT_MAX_CONCURRENT_TRANSFORMS})"
        )
    concurrency = spec.max_concurrent_transforms or DEFAULT_MAX_CONCURRENT_TRANSFORMS
    if concurrency * payload_mb > MAX_CONCURRENT_TIMES_PAYLOAD_MB:
        raise InvalidArgument(
            f"MaxConcurrentTransforms ({concurrency}) x MaxPayloadInMB ({payload_mb}) is "
            f"{concurrency * payload_mb}; it must not exceed {MAX_CONCURRENT_TIMES_PAYLOAD_MB}"
        )
    if spec.instance_count < 1:
        raise InvalidArgument(
            f"instance_count is {spec.instance_count}: a transform needs at least 1 batch worker"
        )
    _check_environment(spec.environment)
    processing = spec.data_processing
    join_source = _choice("data_processing.join_source", processing.join_source, JOIN_SOURCES)
    check_data_processing(
        content_type=spec.content_type,
        accept=effective_accept(spec.accept, model_environment),
        split_type=cast(SplitType, split_type),
        assemble_with=cast(AssembleWith, assemble_with),
        input_filter=processing.input_filter or None,
        join_source=cast(JoinSource, join_source),
        output_filter=processing.output_filter or None,
    )
    return replace(
        spec,
        output_uri=output_uri,
        split_type=split_type,
        assemble_with=assemble_with,
        compression_type=compression,
        data_processing=DataProcessing(
            input_filter=processing.input_filter,
            join_source=join_source,
            output_filter=processing.output_filter,
        ),
        environment=dict(spec.environment),
    )


def _store_uri(field: str, uri: str) -> str:
    if not uri:
        raise InvalidArgument(f"{field} is empty: give a store:// URI")
    if not uri.startswith(SCHEME):
        raise InvalidArgument(f"{field} {uri!r} is not a store:// URI")
    try:
        key_of(uri)
    except InvalidArgument as err:
        raise InvalidArgument(f"{field}: {err}") from None
    return uri


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if not value:
        return allowed[0]
    if value not in allowed:
        raise InvalidArgument(
            f"{field} {value!r} is not supported: use one of {', '.join(allowed)}"
        )
    return value


def _check_environment(environment: Mapping[str, str]) -> None:
    if len(environment) > MAX_ENVIRONMENT_ENTRIES:
        raise InvalidArgument(
            f"{len(environment)} environment variables; a transform job may set at most "
            f"{MAX_ENVIRONMENT_ENTRIES}"
        )
    for key, value in environment.items():
        if not ENVIRONMENT_KEY.fullmatch(key):
            raise InvalidArgument(
                f"environment variable name {key[:40]!r} is invalid: use [a-zA-Z_][a-zA-Z0-9_]*"
            )
        if len(value) > MAX_ENVIRONMENT_VALUE_CHARS:
            raise InvalidArgument(
                f"environment variable {key!r} is longer than {MAX_ENVIRONMENT_VALUE_CHARS} "
                "characters"
            )
