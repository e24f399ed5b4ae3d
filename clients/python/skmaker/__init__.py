"""skmaker: train scikit-learn scripts on a self-hosted platform with the SageMaker SDK's API.

    from skmaker import Session, SKLearn
    session = Session()                                   # $SKMAKER_ADDRESS or localhost:50051
    train = session.upload_data("data", key_prefix="scikit-iris/data")
    estimator = SKLearn(entry_point="train.py", hyperparameters={"max_leaf_nodes": 30},
                        session=session)
    estimator.fit({"train": train})                       # streams the job's log
    print(estimator.model_data)                           # store://.../model.tar.gz

Failed calls raise the exceptions of `skmaker.errors`, all subclasses of `SkmakerClientError`.
"""

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
from skmaker.session import Session

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SKLearn",
    "Session",
    "SkmakerClientError",
    "TrainingInput",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedStatusException",
    "__version__",
]
