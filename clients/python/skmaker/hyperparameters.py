"""Hyperparameters as the SageMaker SDK sends them: every value JSON-encoded, plus reserved keys.

`encode` is step 1 of the contract's hyperparameter rule (30 -> "30", "rbf" -> "\\"rbf\\"");
`decode` is its inverse with the toolkit's fallback (a value that is not JSON stays a string).
The `sagemaker_*` keys the SDK adds are reserved: the trainer hides them from the script, and
`user_hyperparameters` drops them when an estimator is rebuilt from a job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PROGRAM = "sagemaker_program"
SUBMIT_DIRECTORY = "sagemaker_submit_directory"
CONTAINER_LOG_LEVEL = "sagemaker_container_log_level"
JOB_NAME = "sagemaker_job_name"
REGION = "sagemaker_region"

# Keys the training toolkit never passes to the script (contract §1.5 step 4); any other
# `sagemaker_`-prefixed key is hidden as well.
RESERVED_KEYS = frozenset(
    {
        PROGRAM,
        SUBMIT_DIRECTORY,
        "sagemaker_enable_cloudwatch_metrics",
        REGION,
        CONTAINER_LOG_LEVEL,
        JOB_NAME,
        "default_user_module_name",
        "_tuning_objective_metric",
        "sagemaker_s3_output",
    }
)

# skmaker has no AWS region; the SDK always sends one, so scripts may read it.
LOCAL_REGION = "local"


def encode(hyperparameters: Mapping[Any, Any]) -> dict[str, str]:
    """JSON-encodes every value and stringifies every key, as the SageMaker SDK does.

    Raises:
        TypeError: for a value `json.dumps` cannot encode (e.g. a numpy array).
    """
    encoded = {}
    for key, value in hyperparameters.items():
        try:
            encoded[str(key)] = json.dumps(value)
        except TypeError as err:
            raise TypeError(f"hyperparameter {key!r} is not JSON-serializable: {err}") from None
    return encoded


def reserved(
    *, entry_point: str, submit_directory: str, job_name: str, log_level: int = 20
) -> dict[str, str]:
    """The encoded `sagemaker_*` keys the SDK adds to every Framework training job."""
    return encode(
        {
            PROGRAM: entry_point,
            SUBMIT_DIRECTORY: submit_directory,
            CONTAINER_LOG_LEVEL: log_level,
            JOB_NAME: job_name,
            REGION: LOCAL_REGION,
        }
    )


def decode_value(text: str) -> Any:
    """`json.loads(text)`, or `text` itself when it is not JSON (the toolkit's fallback)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def is_reserved(key: str) -> bool:
    """Whether the toolkit hides `key` from the user's script."""
    return key in RESERVED_KEYS or key.startswith("sagemaker_")


def user_hyperparameters(encoded: Mapping[str, str]) -> dict[str, Any]:
    """Decoded hyperparameters without the reserved keys: what the user passed to the estimator."""
    return {key: decode_value(value) for key, value in encoded.items() if not is_reserved(key)}
