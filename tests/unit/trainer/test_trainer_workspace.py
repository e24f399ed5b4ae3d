"""The /opt/ml tree, its config files, and every SM_* variable of contract §1.4."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.trainer.hyperparameters import encode_hyperparameters
from services.trainer.workspace import (
    ChannelConfig,
    Workspace,
    build_environment,
    create,
    validate_channel_name,
    write_config_files,
)

SDK_HYPERPARAMETERS = encode_hyperparameters(
    {
        "max_leaf_nodes": 30,
        "learning-rate": 0.1,
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": "s3://bucket/job-1/source/sourcedir.tar.gz",
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": "job-1",
        "sagemaker_region": "us-west-2",
        "sagemaker_estimator_class_name": "SKLearn",
    }
)
CHANNELS = {"train": ChannelConfig(content_type="text/csv"), "test": ChannelConfig()}


def test_create_lays_out_opt_ml(tmp_path: Path) -> None:
    ws = create(tmp_path / "ml")

    assert ws.root == tmp_path / "ml"
    for directory in (
        "input/config",
        "input/data",
        "code",
        "model",
        "output/data",
        "output/intermediate",
        "checkpoints",
    ):
        assert (tmp_path / "ml" / directory).is_dir(), directory
    assert ws.input_dir == ws.root / "input"
    assert ws.failure_file == ws.root / "output" / "failure"
    assert ws.success_file == ws.root / "output" / "success"


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Workspace(Path("ml")).root == tmp_path / "ml"


def test_write_config_files(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path)

    write_config_files(ws, SDK_HYPERPARAMETERS, CHANNELS)

    assert json.loads(ws.hyperparameters_file.read_text()) == SDK_HYPERPARAMETERS
    assert json.loads(ws.input_data_config_file.read_text()) == {
        "test": {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        },
        "train": {
            "ContentType": "text/csv",
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        },
    }
    resources = json.loads(ws.resource_config_file.read_text())
    assert resources["current_host"] == "algo-1"
    assert resources["hosts"] == ["algo-1"]
    assert resources["current_instance_type"] == "local"
    assert resources["network_interface_name"] == "eth0"
    assert (ws.data_dir / "train").is_dir() and (ws.data_dir / "test").is_dir()


def test_every_sm_variable_of_a_two_channel_job(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path)
    r = str(ws.root)
    resources = (
        '{"current_group_name":"homogeneousCluster","current_host":"algo-1",'
        '"current_instance_type":"local","hosts":["algo-1"],"instance_groups":'
        '[{"hosts":["algo-1"],"instance_group_name":"homogeneousCluster","instance_type":"local"}],'
        '"network_interface_name":"eth0"}'
    )
    data_config = (
        '{"test":{"RecordWrapperType":"None","S3DistributionType":"FullyReplicated",'
        '"TrainingInputMode":"File"},"train":{"ContentType":"text/csv","RecordWrapperType":"None",'
        '"S3DistributionType":"FullyReplicated","TrainingInputMode":"File"}}'
    )

    env = build_environment(
        ws,
        job_name="job-1",
        entry_point="train.py",
        hyperparameters_encoded=SDK_HYPERPARAMETERS,
        channels=CHANNELS,
        module_dir_uri="store://code/job-1/sourcedir.tar.gz",
        num_cpus=4,
        base_environment={"PATH": "/usr/bin", "PYTHONPATH": "/base"},
    )

    sm = {key: value for key, value in env.items() if key.startswith("SM_")}
    training_env = json.loads(sm.pop("SM_TRAINING_ENV"))
    assert sm == {
        "SM_MODEL_DIR": f"{r}/model",
        "SM_OUTPUT_DATA_DIR": f"{r}/output/data",
        "SM_OUTPUT_DIR": f"{r}/output",
        "SM_OUTPUT_INTERMEDIATE_DIR": f"{r}/output/intermediate",
        "SM_INPUT_DIR": f"{r}/input",
        "SM_INPUT_CONFIG_DIR": f"{r}/input/config",
        "SM_CHANNELS": '["test","train"]',
        "SM_CHANNEL_TRAIN": f"{r}/input/data/train",
        "SM_CHANNEL_TEST": f"{r}/input/data/test",
        "SM_HPS": '{"learning-rate":0.1,"max_leaf_nodes":30}',
        "SM_HP_MAX_LEAF_NODES": "30",
        "SM_HP_LEARNING-RATE": "0.1",
        "SM_USER_ARGS": '["--learning-rate","0.1","--max_leaf_nodes","30"]',
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "SM_CURRENT_INSTANCE_TYPE": "local",
        "SM_CURRENT_INSTANCE_GROUP": "homogeneousCluster",
        "SM_CURRENT_INSTANCE_GROUP_HOSTS": '["algo-1"]',
        "SM_INSTANCE_GROUPS": '["homogeneousCluster"]',
        "SM_INSTANCE_GROUPS_DICT": '{"homogeneousCluster":{"hosts":["algo-1"],'
        '"instance_group_name":"homogeneousCluster","instance_type":"local"}}',
        "SM_DISTRIBUTION_INSTANCE_GROUPS": "[]",
        "SM_IS_HETERO": "false",
        "SM_NUM_CPUS": "4",
        "SM_NUM_GPUS": "0",
        "SM_NUM_NEURONS": "0",
        "SM_LOG_LEVEL": "20",
        "SM_NETWORK_INTERFACE_NAME": "eth0",
        "SM_USER_ENTRY_POINT": "train.py",
        "SM_MODULE_NAME": "train",
        "SM_MODULE_DIR": "store://code/job-1/sourcedir.tar.gz",
        "SM_FRAMEWORK_MODULE": "sagemaker_sklearn_container.training:main",
        "SM_FRAMEWORK_PARAMS": '{"sagemaker_estimator_class_name":"SKLearn"}',
        "SM_RESOURCE_CONFIG": resources,
        "SM_INPUT_DATA_CONFIG": data_config,
        # Baked into the SKLearn image.
        "SM_INPUT": f"{r}/input",
        "SM_INPUT_TRAINING_CONFIG_FILE": f"{r}/input/config/hyperparameters.json",
        "SM_INPUT_DATA_CONFIG_FILE": f"{r}/input/config/inputdataconfig.json",
        "SM_CHECKPOINT_CONFIG_FILE": f"{r}/input/config/checkpointconfig.json",
    }
    for key in (
        "channel_input_dirs",
        "hyperparameters",
        "job_name",
        "model_dir",
        "module_dir",
        "output_data_dir",
        "current_host",
        "hosts",
        "num_cpus",
        "is_master",
        "master_hostname",
        "log_level",
        "additional_framework_parameters",
        "resource_config",
        "input_data_config",
    ):
        assert key in training_env, key
    assert training_env["hyperparameters"] == {"learning-rate": 0.1, "max_leaf_nodes": 30}
    assert training_env["channel_input_dirs"] == {
        "test": f"{r}/input/data/test",
        "train": f"{r}/input/data/train",
    }
    assert training_env["job_name"] == "job-1"
    assert training_env["is_master"] is True

    assert env["TRAINING_JOB_NAME"] == "job-1"
    assert env["TRAINING_JOB_ARN"] == "arn:skmaker:training-job/job-1"
    assert env["SAGEMAKER_JOB_NAME"] == "job-1"
    assert env["CURRENT_HOST"] == "algo-1"
    assert env["SAGEMAKER_REGION"] == "us-west-2"
    assert env["SAGEMAKER_BASE_DIR"] == r
    assert env["PATH"] == "/usr/bin"
    assert env["PYTHONPATH"] == f"{r}/code{os.pathsep}/base"


def test_defaults_without_sdk_keys(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)

    env = build_environment(
        ws,
        job_name="j",
        entry_point="fit.py",
        hyperparameters_encoded={"a": "1"},
        channels={"my-data.v2": ChannelConfig()},
        module_dir_uri="",
    )

    assert env["SM_LOG_LEVEL"] == "20"
    assert env["SM_MODULE_DIR"] == str(ws.code_dir)
    assert env["SM_FRAMEWORK_PARAMS"] == "{}"
    assert env["SM_CHANNEL_MY-DATA.V2"] == str(ws.data_dir / "my-data.v2")
    assert env["SAGEMAKER_REGION"] == "local"
    assert env["SAGEMAKER_JOB_NAME"] == "j"
    assert env["SM_NUM_CPUS"] == str(os.cpu_count())
    assert env["SM_USER_ARGS"] == '["-a","1"]'


def test_user_environment_wins_and_pythonpath_is_merged(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)

    env = build_environment(
        ws,
        job_name="j",
        entry_point="train.py",
        hyperparameters_encoded={},
        channels={},
        module_dir_uri=None,
        user_environment={"MY_FLAG": "1", "SM_NUM_CPUS": "2", "PYTHONPATH": "/user"},
        base_environment={"MY_FLAG": "0"},
        deps_dir=tmp_path / "deps",
    )

    assert env["MY_FLAG"] == "1"
    assert env["SM_NUM_CPUS"] == "2"
    assert env["PYTHONPATH"].split(os.pathsep) == [
        str(ws.code_dir),
        str(tmp_path / "deps"),
        "/user",
    ]


@pytest.mark.parametrize(
    ("user_environment", "message"),
    [
        ({"1BAD": "x"}, "invalid environment variable name"),
        ({"BAD-KEY": "x"}, "invalid environment variable name"),
        ({f"K{i}": "x" for i in range(101)}, "too many environment variables"),
    ],
)
def test_invalid_user_environment(
    tmp_path: Path, user_environment: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_environment(
            Workspace(tmp_path),
            job_name="j",
            entry_point="train.py",
            hyperparameters_encoded={},
            channels={},
            module_dir_uri=None,
            user_environment=user_environment,
        )


@pytest.mark.parametrize("name", ["train", "a.b-c_d", "x" * 64])
def test_valid_channel_names(name: str) -> None:
    validate_channel_name(name)


@pytest.mark.parametrize("name", ["", "x" * 65, "a/b", "..", "spa ce", "ü"])
def test_invalid_channel_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid channel name"):
        validate_channel_name(name)
