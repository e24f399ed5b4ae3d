"""The per-job ``/opt/ml`` tree, its three config files, and the environment the script sees.

A `Workspace` root plays the part of SageMaker's ``/opt/ml`` (contract §1.2), and the toolkit's
``SAGEMAKER_BASE_DIR`` points at it. Every path below is ``root`` + the same suffix::

    root/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json   (/opt/ml/input/config)
    root/input/data/<channel>/     channel contents             (/opt/ml/input/data/<channel>)
    root/code/                     the user's source, the cwd  (/opt/ml/code)
    root/model/                    becomes model.tar.gz         (/opt/ml/model)
    root/output/data/              becomes output.tar.gz        (/opt/ml/output/data)
    root/output/intermediate/      (/opt/ml/output/intermediate)
    root/output/failure, success   markers                      (/opt/ml/output/{failure,success})
    root/checkpoints/              (/opt/ml/checkpoints)

`build_environment` produces every ``SM_*`` variable of §1.4 with the toolkit's formatting:
strings as they are, anything else as compact JSON with sorted keys.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.trainer.hyperparameters import (
    decode_hyperparameters,
    module_name,
    render_argv_tokens,
    split_hyperparameters,
)
from skmaker.v1 import names

DEFAULT_HOST = "algo-1"
DEFAULT_INSTANCE_TYPE = "local"
INSTANCE_GROUP = "homogeneousCluster"
NETWORK_INTERFACE = "eth0"
FRAMEWORK_MODULE = "sagemaker_sklearn_container.training:main"
SERVING_MODULE = "sagemaker_sklearn_container.serving:main"
REGION = "local"
DEFAULT_LOG_LEVEL = 20  # logging.INFO, the toolkit's default for sagemaker_container_log_level

MAX_CHANNELS = 20
MAX_USER_ENVIRONMENT = 100
_ENV_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class ChannelConfig:
    """One entry of ``inputdataconfig.json``.

    Attributes:
        content_type: The channel's ``ContentType``; omitted from the file when None.
        input_mode: ``TrainingInputMode``: ``File``, ``Pipe`` or ``FastFile``.
        s3_distribution_type: ``FullyReplicated`` or ``ShardedByS3Key``.
        record_wrapper_type: ``None`` or ``RecordIO``.
    """

    content_type: str | None = None
    input_mode: str = "File"
    s3_distribution_type: str = "FullyReplicated"
    record_wrapper_type: str = "None"

    def to_json(self) -> dict[str, str]:
        """Return the channel as SageMaker writes it into ``inputdataconfig.json``."""
        entry: dict[str, str] = {}
        if self.content_type is not None:
            entry["ContentType"] = self.content_type
        entry["TrainingInputMode"] = self.input_mode
        entry["S3DistributionType"] = self.s3_distribution_type
        entry["RecordWrapperType"] = self.record_wrapper_type
        return entry


@dataclass(frozen=True)
class Workspace:
    """The ``/opt/ml`` tree of one training job, rooted at ``root``.

    Attributes:
        root: The directory that plays ``/opt/ml``; made absolute on construction because the
            script runs with another cwd and receives these paths in its environment.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).absolute())

    @classmethod
    def create(cls, root: Path) -> Workspace:
        """Make the fixed part of the tree under ``root`` and return the workspace.

        Args:
            root: Where the tree goes; created if missing, reused if present.

        Returns:
            The workspace. Channel folders are made by `write_config_files`.
        """
        ws = cls(root)
        for directory in (
            ws.config_dir,
            ws.data_dir,
            ws.code_dir,
            ws.model_dir,
            ws.output_data_dir,
            ws.intermediate_dir,
            ws.checkpoints_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        return ws

    @property
    def input_dir(self) -> Path:
        """``/opt/ml/input``."""
        return self.root / "input"

    @property
    def config_dir(self) -> Path:
        """``/opt/ml/input/config``: the three JSON config files."""
        return self.input_dir / "config"

    @property
    def data_dir(self) -> Path:
        """``/opt/ml/input/data``: one folder per channel."""
        return self.input_dir / "data"

    @property
    def code_dir(self) -> Path:
        """``/opt/ml/code``: the extracted ``sourcedir.tar.gz`` and the script's cwd."""
        return self.root / "code"

    @property
    def model_dir(self) -> Path:
        """``/opt/ml/model``: everything here becomes ``model.tar.gz``."""
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        """``/opt/ml/output``."""
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        """``/opt/ml/output/data``: everything here becomes ``output.tar.gz``."""
        return self.output_dir / "data"

    @property
    def intermediate_dir(self) -> Path:
        """``/opt/ml/output/intermediate``."""
        return self.output_dir / "intermediate"

    @property
    def failure_file(self) -> Path:
        """``/opt/ml/output/failure``: its first 1024 characters become the failure reason."""
        return self.output_dir / "failure"

    @property
    def success_file(self) -> Path:
        """``/opt/ml/output/success``: an empty marker written on success."""
        return self.output_dir / "success"

    @property
    def checkpoints_dir(self) -> Path:
        """``/opt/ml/checkpoints``."""
        return self.root / "checkpoints"

    @property
    def hyperparameters_file(self) -> Path:
        """``/opt/ml/input/config/hyperparameters.json``."""
        return self.config_dir / "hyperparameters.json"

    @property
    def input_data_config_file(self) -> Path:
        """``/opt/ml/input/config/inputdataconfig.json``."""
        return self.config_dir / "inputdataconfig.json"

    @property
    def resource_config_file(self) -> Path:
        """``/opt/ml/input/config/resourceconfig.json``."""
        return self.config_dir / "resourceconfig.json"

    @property
    def checkpoint_config_file(self) -> Path:
        """``/opt/ml/input/config/checkpointconfig.json`` (written only with checkpoints)."""
        return self.config_dir / "checkpointconfig.json"

    def channel_dir(self, name: str) -> Path:
        """Return ``/opt/ml/input/data/<name>``.

        Args:
            name: A channel name; validated because it becomes a path component.

        Raises:
            ValueError: The name is not a valid channel name.
        """
        validate_channel_name(name)
        return self.data_dir / name


def create(root: Path) -> Workspace:
    """Make the workspace tree under ``root``; the same as `Workspace.create`."""
    return Workspace.create(root)


def validate_channel_name(name: str) -> None:
    """Check a channel name against SageMaker's rule: 1-64 characters of ``[A-Za-z0-9._-]``.

    Args:
        name: The channel name.

    Raises:
        ValueError: The name breaks the rule (``.`` and ``..`` are refused too: they would
            name the data folder or its parent).
    """
    problem = names.channel_name_error(name)
    if problem:
        raise ValueError(problem)


def _validate_channels(channels: Mapping[str, ChannelConfig]) -> None:
    if len(channels) > MAX_CHANNELS:
        raise ValueError(f"too many channels: {len(channels)} (at most {MAX_CHANNELS})")
    for name in channels:
        validate_channel_name(name)


def validate_user_environment(environment: Mapping[str, str]) -> None:
    """Check the estimator's ``environment`` dict against the API's limits.

    Args:
        environment: Variable names to values, as the user gave them.

    Raises:
        ValueError: More than 100 entries, a key not matching ``[a-zA-Z_][a-zA-Z0-9_]*``, or a
            value that is not a string.
    """
    if len(environment) > MAX_USER_ENVIRONMENT:
        raise ValueError(
            f"too many environment variables: {len(environment)} (at most {MAX_USER_ENVIRONMENT})"
        )
    for key, value in environment.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise ValueError(
                f"invalid environment variable name {key!r}: must match [a-zA-Z_][a-zA-Z0-9_]*"
            )
        if not isinstance(value, str):
            raise ValueError(f"environment variable {key}: value must be a string")


def resource_config(
    current_host: str = DEFAULT_HOST, instance_type: str = DEFAULT_INSTANCE_TYPE
) -> dict[str, Any]:
    """Return the contents of ``resourceconfig.json`` for a one-host job.

    Args:
        current_host: The host name the script sees (``algo-1`` on SageMaker).
        instance_type: The reported instance type.

    Returns:
        The newer form with instance groups, as current SageMaker hosts write it.
    """
    return {
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_group_name": INSTANCE_GROUP,
        "hosts": [current_host],
        "instance_groups": [
            {
                "instance_group_name": INSTANCE_GROUP,
                "instance_type": instance_type,
                "hosts": [current_host],
            }
        ],
        "network_interface_name": NETWORK_INTERFACE,
    }


def input_data_config(channels: Mapping[str, ChannelConfig]) -> dict[str, dict[str, str]]:
    """Return the contents of ``inputdataconfig.json``: one entry per channel."""
    return {name: channels[name].to_json() for name in sorted(channels)}


def _write_json(path: Path, value: object) -> None:
    # Write then rename, so a script never reads a half-written config file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    tmp.replace(path)


def write_config_files(
    ws: Workspace,
    hyperparameters: Mapping[str, str],
    channels: Mapping[str, ChannelConfig],
    current_host: str = DEFAULT_HOST,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
) -> None:
    """Write the three config files of §1.2 and make one data folder per channel.

    Args:
        ws: The workspace.
        hyperparameters: The encoded string-to-string map, ``sagemaker_*`` keys included; it
            is written verbatim, as the platform does.
        channels: Channel names to their configuration.
        current_host: The host name for ``resourceconfig.json``.
        instance_type: The instance type for ``resourceconfig.json``.

    Raises:
        ValueError: A hyperparameter key or value is not a string, or a channel name is invalid.
    """
    for key, value in hyperparameters.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"hyperparameter {key!r}: hyperparameters.json holds strings only")
    _validate_channels(channels)
    ws.config_dir.mkdir(parents=True, exist_ok=True)
    _write_json(ws.hyperparameters_file, dict(hyperparameters))
    _write_json(ws.input_data_config_file, input_data_config(channels))
    _write_json(ws.resource_config_file, resource_config(current_host, instance_type))
    for name in channels:
        ws.channel_dir(name).mkdir(parents=True, exist_ok=True)


def format_env_value(value: Any) -> str:
    """Format a value the way the toolkit's ``to_env_vars`` does.

    Args:
        value: Any JSON-serialisable value.

    Returns:
        Strings unchanged, ``None`` as the empty string, anything else as compact JSON with
        sorted keys (so ``True`` is ``true`` and ``[64, 32]`` is ``[64,32]``).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _join_pythonpath(*parts: str | None) -> str:
    entries: list[str] = []
    for part in parts:
        for entry in (part or "").split(os.pathsep):
            if entry and entry not in entries:
                entries.append(entry)
    return os.pathsep.join(entries)


def build_environment(
    ws: Workspace,
    *,
    job_name: str,
    entry_point: str,
    hyperparameters_encoded: Mapping[str, str],
    channels: Mapping[str, ChannelConfig],
    module_dir_uri: str | None,
    num_cpus: int | None = None,
    user_environment: Mapping[str, str] | None = None,
    base_environment: Mapping[str, str] | None = None,
    deps_dir: Path | None = None,
    current_host: str = DEFAULT_HOST,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
) -> dict[str, str]:
    """Build the complete environment of the user script (§1.4).

    Layers, later wins: ``base_environment`` (the worker's own PATH, HOME, ...), then the
    platform and toolkit variables (``TRAINING_JOB_NAME``, ``SM_*``, the image-baked ones),
    then ``user_environment``. ``PYTHONPATH`` is merged rather than overwritten: ``code_dir``
    first, then ``deps_dir``, then the user's entries, then the base environment's.

    Args:
        ws: The workspace; its paths fill the directory variables.
        job_name: The training job name.
        entry_point: The ``sagemaker_program`` value, e.g. ``train.py``.
        hyperparameters_encoded: The encoded map, ``sagemaker_*`` keys included.
        channels: Channel names to their configuration.
        module_dir_uri: Where the source came from (``SM_MODULE_DIR``); when empty, the
            ``sagemaker_submit_directory`` hyperparameter, else ``code_dir``.
        num_cpus: ``SM_NUM_CPUS``; defaults to this machine's CPU count.
        user_environment: The estimator's ``environment`` dict; validated.
        base_environment: Variables inherited from the worker.
        deps_dir: Where ``requirements.txt`` was installed, if anywhere.
        current_host: ``SM_CURRENT_HOST``.
        instance_type: ``SM_CURRENT_INSTANCE_TYPE``.

    Returns:
        Variable names to values, ready for ``subprocess``.

    Raises:
        ValueError: The user environment or a channel name is invalid.

    Long because it lists every variable of the SageMaker training environment in one place,
    so the contract (§1.4) reads top to bottom against the code.
    """
    user_environment = user_environment or {}
    base_environment = base_environment or {}
    validate_user_environment(user_environment)
    _validate_channels(channels)

    decoded = decode_hyperparameters(hyperparameters_encoded)
    user_hps, framework_params = split_hyperparameters(decoded)
    tokens = render_argv_tokens(user_hps)
    code_dir = str(ws.code_dir)
    module_dir = module_dir_uri or str(decoded.get("sagemaker_submit_directory") or code_dir)
    log_level = decoded.get("sagemaker_container_log_level", DEFAULT_LOG_LEVEL)
    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    resources = resource_config(current_host, instance_type)
    data_config = input_data_config(channels)
    channel_dirs = {name: str(ws.data_dir / name) for name in sorted(channels)}
    instance_group = resources["instance_groups"][0]

    # The toolkit's Environment properties; SM_TRAINING_ENV is all of them in one object.
    training_env: dict[str, Any] = {
        "additional_framework_parameters": framework_params,
        "channel_input_dirs": channel_dirs,
        "current_host": current_host,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": [current_host],
        "current_instance_type": instance_type,
        "distribution_hosts": [],
        "distribution_instance_groups": [],
        "framework_module": FRAMEWORK_MODULE,
        "hosts": [current_host],
        "hyperparameters": user_hps,
        "input_config_dir": str(ws.config_dir),
        "input_data_config": data_config,
        "input_dir": str(ws.input_dir),
        "instance_groups": [INSTANCE_GROUP],
        "instance_groups_dict": {INSTANCE_GROUP: instance_group},
        "is_hetero": False,
        "is_master": True,
        "is_modelparallel_enabled": False,
        "job_name": job_name,
        "log_level": log_level,
        "master_hostname": current_host,
        "model_dir": str(ws.model_dir),
        "module_dir": module_dir,
        "module_name": module_name(entry_point),
        "network_interface_name": NETWORK_INTERFACE,
        "num_cpus": cpus,
        "num_gpus": 0,
        "num_neurons": 0,
        "output_data_dir": str(ws.output_data_dir),
        "output_dir": str(ws.output_dir),
        "output_intermediate_dir": str(ws.intermediate_dir),
        "resource_config": resources,
        "user_entry_point": entry_point,
    }

    # Mirrors the toolkit's Environment.to_env_vars: each key becomes SM_<KEY.upper()>.
    sm_values: dict[str, Any] = {
        "hosts": [current_host],
        "network_interface_name": NETWORK_INTERFACE,
        "hps": user_hps,
        "user_entry_point": entry_point,
        "framework_params": framework_params,
        "resource_config": resources,
        "input_data_config": data_config,
        "output_data_dir": str(ws.output_data_dir),
        "channels": sorted(channels),
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": [current_host],
        "instance_groups": [INSTANCE_GROUP],
        "instance_groups_dict": {INSTANCE_GROUP: instance_group},
        "distribution_instance_groups": [],
        "is_hetero": False,
        "module_name": module_name(entry_point),
        "log_level": log_level,
        "framework_module": FRAMEWORK_MODULE,
        "input_dir": str(ws.input_dir),
        "input_config_dir": str(ws.config_dir),
        "output_dir": str(ws.output_dir),
        "num_cpus": cpus,
        "num_gpus": 0,
        "num_neurons": 0,
        "model_dir": str(ws.model_dir),
        "module_dir": module_dir,
        "training_env": training_env,
        "user_args": tokens,
        "output_intermediate_dir": str(ws.intermediate_dir),
    }
    for name, path in channel_dirs.items():
        sm_values[f"channel_{name}"] = path
    for key, value in user_hps.items():
        sm_values[f"hp_{key}"] = value

    env = dict(base_environment)
    env.update(
        {
            # Set by the platform.
            "TRAINING_JOB_NAME": job_name,
            "TRAINING_JOB_ARN": f"arn:skmaker:training-job/{job_name}",
            # Set by the toolkit outside SM_*.
            "SAGEMAKER_JOB_NAME": str(decoded.get("sagemaker_job_name") or job_name),
            "CURRENT_HOST": current_host,
            "SAGEMAKER_REGION": str(decoded.get("sagemaker_region") or REGION),
            "SAGEMAKER_BASE_DIR": str(ws.root),
            # Baked into the SKLearn image.
            "SAGEMAKER_TRAINING_MODULE": FRAMEWORK_MODULE,
            "SAGEMAKER_SERVING_MODULE": SERVING_MODULE,
            "SM_INPUT": str(ws.input_dir),
            "SM_INPUT_TRAINING_CONFIG_FILE": str(ws.hyperparameters_file),
            "SM_INPUT_DATA_CONFIG_FILE": str(ws.input_data_config_file),
            "SM_CHECKPOINT_CONFIG_FILE": str(ws.checkpoint_config_file),
        }
    )
    env.update({f"SM_{key.upper()}": format_env_value(value) for key, value in sm_values.items()})
    env.update(user_environment)
    env["PYTHONPATH"] = _join_pythonpath(
        code_dir,
        str(deps_dir) if deps_dir is not None else None,
        user_environment.get("PYTHONPATH"),
        base_environment.get("PYTHONPATH"),
    )
    return env
