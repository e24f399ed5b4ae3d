"""skmaker: train and serve scikit-learn scripts on a self-hosted platform with SageMaker's API.

    from skmaker import Session, SKLearn
    session = Session()                                   # $SKMAKER_ADDRESS or localhost:50051
    train = session.upload_data("data", key_prefix="scikit-iris/data")
    estimator = SKLearn(entry_point="train.py", hyperparameters={"max_leaf_nodes": 30},
                        session=session)
    estimator.fit({"train": train})                       # streams the job's log
    predictor = estimator.deploy(initial_instance_count=1)
    predictor.predict(test_X.values)                      # -> numpy array
    predictor.delete_endpoint(); predictor.delete_model()

    tuner = HyperparameterTuner(estimator, "validation:accuracy",
                                {"max_leaf_nodes": IntegerParameter(2, 30)},
                                metric_definitions=[{"Name": "validation:accuracy",
                                                     "Regex": "validation accuracy: ([0-9.]+)"}],
                                max_jobs=6, max_parallel_jobs=2)
    tuner.fit({"train": train})                           # trials are training jobs
    tuner.best_training_job()

    transformer = estimator.transformer(instance_count=2, assemble_with="Line",
                                        accept="text/csv")
    transformer.transform(batch_uri, content_type="text/csv", split_type="Line")
    transformer.output_path                               # one <input>.out per input file

Serializers and deserializers are in `skmaker.serializers` and `skmaker.deserializers`, with
SageMaker's names. Failed calls raise the exceptions of `skmaker.errors`, all subclasses of
`SkmakerClientError`. `s3://<session.default_bucket()>/<key>` names `store://<key>` wherever a
URI is taken; `session.sagemaker_client` and `session.sagemaker_runtime_client` answer boto3's
calls (`skmaker.boto`).
"""

from skmaker import deserializers, serializers
from skmaker.analytics import HyperparameterTuningJobAnalytics
from skmaker.autoscaling import AutoScalingPolicy
from skmaker.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    ModelError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SkmakerClientError,
    Unauthenticated,
    Unavailable,
    UnexpectedStatusException,
)
from skmaker.estimator import SKLearn
from skmaker.inputs import TrainingInput
from skmaker.model import SKLearnModel
from skmaker.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
from skmaker.predictor import Predictor, SKLearnPredictor
from skmaker.session import Session, get_execution_role
from skmaker.transformer import Transformer
from skmaker.tuner import HyperparameterTuner, WarmStartConfig, WarmStartTypes

__version__ = "0.1.0"

__all__ = [
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
]
