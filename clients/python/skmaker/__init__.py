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

Serializers and deserializers are in `skmaker.serializers` and `skmaker.deserializers`, with
SageMaker's names. Failed calls raise the exceptions of `skmaker.errors`, all subclasses of
`SkmakerClientError`.
"""

from skmaker import deserializers, serializers
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
from skmaker.predictor import Predictor
from skmaker.session import Session

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "AutoScalingPolicy",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "Predictor",
    "ResourceExhausted",
    "SKLearn",
    "SKLearnModel",
    "Session",
    "SkmakerClientError",
    "TrainingInput",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedStatusException",
    "__version__",
    "deserializers",
    "serializers",
]
