"""boto3-shaped clients over a `Session`: `session.sagemaker_client`, `.sagemaker_runtime_client`.

Notebook cells written against boto3 run against skmaker by swapping the client object:

    sm = session.sagemaker_client                   # instead of boto3.client("sagemaker")
    sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
    sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint)
    runtime = session.sagemaker_runtime_client      # instead of boto3.client("sagemaker-runtime")
    runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv",
                            Body="5.1,3.5,1.4,0.2")["Body"].read()

Methods carry boto3's names and keyword arguments and answer boto3's response dicts (with
`ResponseMetadata`) for what skmaker does; an operation skmaker does not have is an
AttributeError naming it. Failed calls raise `ClientError` with boto3's
`response["Error"]["Code"]` (`ValidationException` for an unknown resource, `ResourceInUse`,
`ModelError` from a handler...); it also subclasses botocore's `ClientError` when botocore is
installed, so `except botocore.exceptions.ClientError` catches it, and skmaker's own error class
for the gRPC status, so `except skmaker.NotFound` does too.

Endpoint configs do not exist on skmaker: `create_endpoint_config` keeps the config in this
client object, `create_endpoint` reads its one production variant (model and instance count),
and `describe_endpoint_config` answers a config kept here or, for a live endpoint's name (what
the SageMaker SDK's `deploy()` names its config), one made from the endpoint.

The package: `sagemaker` (the SageMaker client, gathered from `training_jobs`, `hosting`,
`transform_jobs` and `tuning_jobs`), `runtime` (the runtime client), and what they share:
`errors`, `client_base`, `paging` (the List* shape) and `waiters`.
"""

from __future__ import annotations

from skmaker.boto.errors import ClientError, WaiterError, client_error
from skmaker.boto.paging import DEFAULT_MAX_RESULTS, Paginator, page
from skmaker.boto.runtime import SageMakerRuntimeClient, StreamingBody
from skmaker.boto.sagemaker import SageMakerClient
from skmaker.boto.waiters import Waiter
from skmaker.descriptions import VARIANT_NAME

# The names these had when this package was one module (tests call them).
_client_error = client_error
_page = page

__all__ = [
    "DEFAULT_MAX_RESULTS",
    "VARIANT_NAME",
    "ClientError",
    "Paginator",
    "SageMakerClient",
    "SageMakerRuntimeClient",
    "StreamingBody",
    "Waiter",
    "WaiterError",
]
