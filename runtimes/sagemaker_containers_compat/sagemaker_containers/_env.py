"""The container's environment: training configuration and serving settings.

The training side is the real `sagemaker_training.environment`, which reads the same files
(`SAGEMAKER_BASE_DIR/input/config/*.json`) the legacy toolkit read, so `training_env()` and
`sagemaker_training.environment.Environment()` always agree. It is imported on first use only:
importing it creates SageMaker's folders, which a serving process has no use for.
"""

from __future__ import annotations

import os
from typing import Any

_TRAINING_NAMES = (
    "read_hyperparameters",
    "read_resource_config",
    "read_input_data_config",
    "channel_path",
    "num_cpus",
    "num_gpus",
    "base_dir",
    "code_dir",
    "model_dir",
    "input_dir",
    "input_config_dir",
    "output_dir",
    "output_data_dir",
    "output_intermediate_dir",
)


def __getattr__(name: str) -> Any:
    if name == "TrainingEnv":
        from sagemaker_training.environment import Environment

        return Environment
    if name in _TRAINING_NAMES:
        from sagemaker_training import environment

        return getattr(environment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ServingEnv:
    """The serving container's settings, read from the environment as SageMaker sets them.

    Attributes:
        default_accept: `SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`, else `application/json`.
        model_server_timeout: `SAGEMAKER_MODEL_SERVER_TIMEOUT` seconds, else 60.
        model_server_workers: `SAGEMAKER_MODEL_SERVER_WORKERS`, else the CPU count.
        http_port: `SAGEMAKER_BIND_TO_PORT`, else `8080`.
        module_name: The entry point's module name (`SAGEMAKER_PROGRAM` without `.py`).
        model_dir: `SAGEMAKER_BASE_DIR/model`, else `/opt/ml/model`.
        log_level: `SAGEMAKER_CONTAINER_LOG_LEVEL`, else 20 (INFO).
        module_dir: `SAGEMAKER_SUBMIT_DIRECTORY`: where the entry point's code is.
        framework_module: `SAGEMAKER_SERVING_MODULE`, else None.
    """

    def __init__(self) -> None:
        environ = os.environ
        self.default_accept = environ.get(
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json"
        )
        self.model_server_timeout = int(environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT", "60"))
        self.model_server_workers = int(
            environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", str(os.cpu_count() or 1))
        )
        self.http_port = environ.get("SAGEMAKER_BIND_TO_PORT", "8080")
        self.use_nginx = environ.get("SAGEMAKER_USE_NGINX", "true").lower() == "true"
        program = environ.get("SAGEMAKER_PROGRAM", "")
        self.user_entry_point = program or None
        self.module_name = program[:-3] if program.endswith(".py") else (program or None)
        base = environ.get("SAGEMAKER_BASE_DIR", os.path.join("/opt", "ml"))
        self.model_dir = os.path.join(base, "model")
        self.log_level = int(environ.get("SAGEMAKER_CONTAINER_LOG_LEVEL", "20"))
        self.module_dir = environ.get("SAGEMAKER_SUBMIT_DIRECTORY", os.path.join(base, "code"))
        self.framework_module = environ.get("SAGEMAKER_SERVING_MODULE")
