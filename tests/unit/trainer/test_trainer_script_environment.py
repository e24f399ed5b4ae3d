"""What of the trainer's environment a training script sees: an allow-list."""

from __future__ import annotations

from services.trainer.app import script_base_environment
from services.trainer.config import TrainerSettings


def test_only_allowed_variables_pass_and_skmaker_settings_never() -> None:
    worker_env = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "SM_HOSTS": '["algo-1"]',
        "SKMAKER_TRAINER_AUTH_TOKEN": "s3cret",
        "SKMAKER_TRAINER_AUTH_TOKEN_FD": "5",
        "AWS_SECRET_ACCESS_KEY": "k",
        "GITHUB_TOKEN": "g",
        "HOME": "/root",
    }
    seen = script_base_environment(worker_env, TrainerSettings().script_env_allow)
    assert seen == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "SM_HOSTS": '["algo-1"]',
    }


def test_an_operator_can_allow_more_but_not_skmaker_settings() -> None:
    worker_env = {"MY_DATASET_ROOT": "/data", "SKMAKER_TRAINER_CONTROL": "c:1"}
    assert script_base_environment(worker_env, "MY_*,SKMAKER_*") == {"MY_DATASET_ROOT": "/data"}
