"""skmaker's `sagemaker_containers`: what scripts use from SageMaker's legacy container toolkit.

The real sagemaker-containers 2.8.6 cannot run on Python 3.11 with protobuf 7, yet training and
serving scripts written for SageMaker's scikit-learn container import it. This package gives
them the parts they use, with the same names and behaviour:

- `training_env()`: the job's configuration, read by the real `sagemaker_training` toolkit from
  the files under `SAGEMAKER_BASE_DIR` (hyperparameters decoded, `sagemaker_*` left out).
- `beta.framework`: `content_types`, `encoders`, `errors`, `env` and `worker.Response`.

Installed into every skmaker script runtime (see services/runtime/script_runtimes.py).
"""

from __future__ import annotations

from typing import Any


def training_env(
    resource_config: dict[str, Any] | None = None,
    input_data_config: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> Any:
    """The training job's environment: `hyperparameters`, `channel_input_dirs`, `model_dir`,
    `output_data_dir`, `hosts`, `current_host`, `num_cpus`, `num_gpus`, `module_name`, ...

    Args:
        resource_config: Instead of `resourceconfig.json` (as `beta.framework`'s form takes).
        input_data_config: Instead of `inputdataconfig.json`.
        hyperparameters: Instead of `hyperparameters.json` (decoded values).

    Returns:
        A `sagemaker_containers.beta.framework.env.TrainingEnv`.
    """
    from sagemaker_containers import _env

    return _env.TrainingEnv(
        resource_config=resource_config,
        input_data_config=input_data_config,
        hyperparameters=hyperparameters,
    )
