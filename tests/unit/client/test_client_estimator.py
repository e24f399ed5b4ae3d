"""SKLearn's arguments, checked without a server.

fit(), attach(), logs() and model_data against a real control are in
tests/integration/client/test_estimator_against_control.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from skmaker import Session, SKLearn


@pytest.fixture
def script(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    (code / "helper.py").write_text("")
    return code / "train.py"


def test_no_warning_without_sagemaker_only_args(script: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SKLearn(entry_point=str(script))


def test_sagemaker_only_args_give_one_warning_naming_them(script: Path) -> None:
    with pytest.warns(UserWarning) as caught:
        SKLearn(
            entry_point=str(script),
            role="arn:aws:iam::1:role/x",
            instance_type="ml.m5.large",
            framework_version="1.2-1",
            py_version="py3",
            instance_count=1,
        )
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "skmaker ignores these SageMaker-only arguments: instance_type, py_version, role"
    )


def test_framework_version_is_kept_for_the_training_job(script: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimator = SKLearn(entry_point=str(script), framework_version="1.2-1")
    assert estimator.framework_version == "1.2-1"


def test_a_real_sagemaker_session_is_ignored_with_the_warning(script: Path) -> None:
    with pytest.warns(UserWarning, match="sagemaker_session"):
        SKLearn(entry_point=str(script), sagemaker_session=object())


def test_sagemaker_session_may_be_a_skmaker_session(script: Path) -> None:
    with Session("127.0.0.1:9") as session:
        estimator = SKLearn(entry_point=str(script), sagemaker_session=session)
        assert estimator.sagemaker_session is session


def test_instance_count_other_than_one_is_refused_as_in_sagemaker(script: Path) -> None:
    with pytest.raises(AttributeError, match="does not support distributed training"):
        SKLearn(entry_point=str(script), instance_count=2)


def test_unknown_arguments_are_ignored_with_one_warning_never_a_type_error(script: Path) -> None:
    # SDK v1 notebooks pass script_mode=True; a typo gets a hint.
    with pytest.warns(UserWarning) as warned:
        estimator = SKLearn(
            entry_point=str(script), script_mode=True, hyperparameter={"a": 1}, role="r"
        )
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "SageMaker-only arguments: role" in message
    assert "hyperparameter (did you mean hyperparameters?), script_mode" in message
    assert estimator.hyperparameters() == {}


def test_model_data_before_fit_raises(script: Path) -> None:
    with pytest.raises(ValueError, match="not associated with a training job"):
        _ = SKLearn(entry_point=str(script)).model_data
