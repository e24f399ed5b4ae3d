"""Pins the public surface of the `skmaker` package (as httpx's test_exported_members)."""

import skmaker


def test_all_exports_exist() -> None:
    for name in skmaker.__all__:
        assert hasattr(skmaker, name), name


def test_public_surface_is_pinned() -> None:
    assert set(skmaker.__all__) == {
        "AlreadyExists",
        "AutoScalingPolicy",
        "Cancelled",
        "CategoricalParameter",
        "ContinuousParameter",
        "DeadlineExceeded",
        "FailedPrecondition",
        "HyperparameterTuner",
        "HyperparameterTuningJobAnalytics",
        "IntegerParameter",
        "InternalError",
        "InvalidArgument",
        "ModelError",
        "NotFound",
        "PermissionDenied",
        "Predictor",
        "ResourceExhausted",
        "SKLearn",
        "SKLearnModel",
        "SKLearnPredictor",
        "Session",
        "SkmakerClientError",
        "TrainingInput",
        "Transformer",
        "Unauthenticated",
        "Unavailable",
        "UnexpectedStatusException",
        "WarmStartConfig",
        "WarmStartTypes",
        "__version__",
        "deserializers",
        "get_execution_role",
        "serializers",
    }


def test_every_error_is_a_client_error() -> None:
    for name in skmaker.__all__:
        member = getattr(skmaker, name)
        if isinstance(member, type) and issubclass(member, Exception):
            assert issubclass(member, skmaker.SkmakerClientError), name


def test_serializers_and_deserializers_have_sagemakers_names() -> None:
    assert {
        "CSVSerializer",
        "JSONSerializer",
        "NumpySerializer",
        "IdentitySerializer",
    } <= set(vars(skmaker.serializers))
    assert {
        "CSVDeserializer",
        "JSONDeserializer",
        "NumpyDeserializer",
        "BytesDeserializer",
        "StringDeserializer",
    } <= set(vars(skmaker.deserializers))


def test_predictor_module_path_matches_sagemakers_layout() -> None:
    from skmaker.model import SKLearnModel
    from skmaker.predictor import Predictor

    assert skmaker.Predictor is Predictor
    assert skmaker.SKLearnModel is SKLearnModel
