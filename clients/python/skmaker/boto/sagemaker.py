"""`SageMakerClient`: boto3's `sagemaker` client shape, its operations gathered per resource."""

from __future__ import annotations

from skmaker.boto.hosting import HostingOperations
from skmaker.boto.training_jobs import TrainingJobOperations
from skmaker.boto.transform_jobs import TransformJobOperations
from skmaker.boto.tuning_jobs import TuningJobOperations
from skmaker.boto.waiters import Waiter


class SageMakerClient(
    TrainingJobOperations, HostingOperations, TransformJobOperations, TuningJobOperations
):
    """boto3's `sagemaker` client shape over a skmaker `Session` (see `skmaker.boto`)."""

    _service = "sagemaker"
    _exception_codes = (
        "ResourceNotFound",
        "ResourceInUse",
        "ResourceLimitExceeded",
        "ConflictException",
    )

    def get_waiter(self, waiter_name: str) -> Waiter:
        """boto3's SageMaker waiters: `training_job_completed_or_stopped`,
        `endpoint_in_service`, `endpoint_deleted`, `transform_job_completed_or_stopped`.

        Raises:
            AttributeError: for another waiter name (naming the ones there are).
        """
        ended = frozenset({"Completed", "Stopped"})
        waiters = {
            "training_job_completed_or_stopped": lambda: Waiter(
                waiter_name,
                self.describe_training_job,
                "TrainingJobStatus",
                ended,
                frozenset({"Failed"}),
            ),
            "endpoint_in_service": lambda: Waiter(
                waiter_name,
                self.describe_endpoint,
                "EndpointStatus",
                frozenset({"InService"}),
                frozenset({"Failed"}),
            ),
            "endpoint_deleted": lambda: Waiter(
                waiter_name,
                self.describe_endpoint,
                "EndpointStatus",
                frozenset(),
                frozenset({"Failed"}),
                gone_is_success=True,
            ),
            "transform_job_completed_or_stopped": lambda: Waiter(
                waiter_name,
                self.describe_transform_job,
                "TransformJobStatus",
                ended,
                frozenset({"Failed"}),
            ),
        }
        if waiter_name not in waiters:
            raise AttributeError(
                f"skmaker's sagemaker client has no waiter {waiter_name!r}; it has: "
                + ", ".join(sorted(waiters))
            )
        return waiters[waiter_name]()
