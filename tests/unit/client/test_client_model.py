"""SKLearnModel and the estimator's deploy: the checks made before any call to the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from skmaker import Predictor, SKLearn, SKLearnModel, SKLearnPredictor
from skmaker.deserializers import BytesDeserializer, NumpyDeserializer
from skmaker.serializers import IdentitySerializer, NumpySerializer


def test_sagemakers_positional_order_is_kept(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="role"):
        model = SKLearnModel("store://m/model.tar.gz", "arn:aws:iam::1:role/r", "inference.py")
    assert (model.model_data, model.entry_point) == ("store://m/model.tar.gz", "inference.py")
    # As SageMaker's SKLearnModel: deploy() returns an SKLearnPredictor (NumPy in and out).
    assert model.predictor_cls is SKLearnPredictor
    assert issubclass(SKLearnPredictor, Predictor)


def test_predictor_defaults_are_sagemakers() -> None:
    # The base Predictor sends bytes as they are and returns the answer's bytes, asking for */*
    # (the handler's default type); SKLearnPredictor sends and reads NumPy arrays.
    base = Predictor("e")
    assert isinstance(base.serializer, IdentitySerializer)
    assert isinstance(base.deserializer, BytesDeserializer)
    assert (base.content_type, base.accept) == ("application/octet-stream", ("*/*",))
    sklearn = SKLearnPredictor("e")
    assert isinstance(sklearn.serializer, NumpySerializer)
    assert isinstance(sklearn.deserializer, NumpyDeserializer)
    assert (sklearn.content_type, sklearn.accept) == ("application/x-npy", ("application/x-npy",))
    assert repr(sklearn) == "SKLearnPredictor(endpoint_name='e')"
    with pytest.warns(DeprecationWarning, match="endpoint_name"):
        assert sklearn.endpoint == "e"


def test_an_entry_point_is_required() -> None:
    with pytest.raises(ValueError, match="entry_point"):
        SKLearnModel("store://m/model.tar.gz")


def test_sagemaker_only_and_unknown_arguments_warn_once() -> None:
    with pytest.warns(UserWarning, match="image_uri") as warned:
        model = SKLearnModel(
            "store://m/model.tar.gz",
            entry_point="inference.py",
            framework_version="1.2-1",
            image_uri="img",
            vpc_config=None,
        )
    assert len(warned) == 1
    assert "framework_version" not in str(warned[0].message)  # it selects the runtime
    assert model.framework_version == "1.2-1"
    with pytest.warns(UserWarning, match="SKLearnModel\\(\\) does not know: colour$"):
        SKLearnModel("store://m/model.tar.gz", entry_point="inference.py", colour="red")


def test_model_names_follow_sagemakers_rule() -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        SKLearnModel("store://m/model.tar.gz", entry_point="inference.py", name="bad_name")


def test_deploy_checks_its_arguments_before_calling_the_server() -> None:
    model = SKLearnModel("store://m/model.tar.gz", entry_point="inference.py")
    with pytest.raises(ValueError, match="at least 1"):
        model.deploy(initial_instance_count=0)
    with (
        pytest.warns(UserWarning, match="deploy\\(\\) does not know: replicas"),
        pytest.raises(ValueError, match="at least 1"),
    ):
        model.deploy(initial_instance_count=0, replicas=2)


def test_delete_before_create_fails_as_in_sagemaker() -> None:
    with pytest.raises(ValueError, match="must be created first"):
        SKLearnModel("store://m/model.tar.gz", entry_point="inference.py").delete_model()


def test_estimator_deploy_needs_a_training_job(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("")
    estimator = SKLearn(entry_point=str(script))
    with pytest.raises(ValueError, match="call fit\\(\\) first"):
        estimator.deploy(initial_instance_count=1)
    with pytest.raises(ValueError, match="call fit\\(\\) first"):
        estimator.create_model()
