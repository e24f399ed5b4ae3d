"""SageMaker SDK hyperparameter encoding (contract §1.5 step 1) and its inverse for attach()."""

from __future__ import annotations

import pytest

from skmaker import hyperparameters as hp


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (30, "30"),
        (0.001, "0.001"),
        (1e-05, "1e-05"),
        (True, "true"),
        ("rbf", '"rbf"'),
        ([64, 32], "[64, 32]"),
        ({"a": 1}, '{"a": 1}'),
        (None, "null"),
        ("hello world", '"hello world"'),
    ],
)
def test_each_value_is_json_encoded(value: object, encoded: str) -> None:
    assert hp.encode({"key": value}) == {"key": encoded}


def test_keys_are_stringified() -> None:
    assert hp.encode({1: "x"}) == {"1": '"x"'}


def test_unencodable_value_names_the_key() -> None:
    with pytest.raises(TypeError, match="'model'"):
        hp.encode({"model": object()})


def test_reserved_keys_are_encoded_like_the_sdk() -> None:
    reserved = hp.reserved(
        entry_point="train.py",
        submit_directory="store://jobs/j-1/source/sourcedir.tar.gz",
        job_name="j-1",
    )
    assert reserved == {
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"store://jobs/j-1/source/sourcedir.tar.gz"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"j-1"',
        "sagemaker_region": '"local"',
    }


def test_decode_falls_back_to_the_raw_string() -> None:
    assert hp.decode_value("30") == 30
    assert hp.decode_value('"rbf"') == "rbf"
    assert hp.decode_value("abc") == "abc"


def test_user_hyperparameters_drop_reserved_and_sagemaker_keys() -> None:
    encoded = {
        **hp.encode({"max_leaf_nodes": 30, "kernel": "rbf"}),
        **hp.reserved(entry_point="t.py", submit_directory="store://x", job_name="j"),
        "sagemaker_estimator_class_name": '"SKLearn"',
        "_tuning_objective_metric": '"acc"',
    }
    assert hp.user_hyperparameters(encoded) == {"max_leaf_nodes": 30, "kernel": "rbf"}
