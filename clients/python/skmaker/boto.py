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
"""

from __future__ import annotations

import functools
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from skmaker import descriptions
from skmaker import errors as skmaker_errors
from skmaker import hyperparameters as hp
from skmaker.errors import SkmakerClientError, UnexpectedStatusException
from skmaker.inputs import TrainingInput

if TYPE_CHECKING:
    from skmaker.session import Session

try:  # botocore is not a dependency; when present, its except clauses catch ours too.
    from botocore.exceptions import ClientError as _BotocoreClientError
    from botocore.exceptions import WaiterError as _BotocoreWaiterError

    _CLIENT_ERROR_BASES: tuple[type[Exception], ...] = (_BotocoreClientError,)
    _WAITER_ERROR_BASES: tuple[type[Exception], ...] = (_BotocoreWaiterError,)
except ImportError:  # pragma: no cover - depends on the environment
    _CLIENT_ERROR_BASES = ()
    _WAITER_ERROR_BASES = ()

VARIANT_NAME = descriptions.VARIANT_NAME
DEFAULT_MAX_RESULTS = 10  # SageMaker's List* page size when MaxResults is not given.

# boto3's error code and HTTP status for each skmaker error class.
_CODE_OF: dict[type[SkmakerClientError], tuple[str, int]] = {
    skmaker_errors.InvalidArgument: ("ValidationException", 400),
    skmaker_errors.NotFound: ("ValidationException", 400),
    skmaker_errors.AlreadyExists: ("ResourceInUse", 400),
    skmaker_errors.FailedPrecondition: ("ValidationException", 400),
    skmaker_errors.ResourceExhausted: ("ResourceLimitExceeded", 400),
    skmaker_errors.Unavailable: ("ServiceUnavailable", 503),
    skmaker_errors.Unauthenticated: ("UnrecognizedClientException", 400),
    skmaker_errors.PermissionDenied: ("AccessDeniedException", 400),
    skmaker_errors.DeadlineExceeded: ("RequestTimeout", 408),
    skmaker_errors.Cancelled: ("RequestCanceled", 400),
    skmaker_errors.ModelError: ("ModelError", 424),
    skmaker_errors.InternalError: ("InternalFailure", 500),
}
# SageMaker answers ResourceNotFound (not ValidationException) for these operations' unknown
# resources.
_RESOURCE_NOT_FOUND_OPERATIONS = frozenset(
    {
        "DescribeHyperParameterTuningJob",
        "StopHyperParameterTuningJob",
        "ListTrainingJobsForHyperParameterTuningJob",
    }
)


def _response_metadata(status: int = 200) -> dict[str, Any]:
    return {
        "RequestId": str(uuid.uuid4()),
        "HTTPStatusCode": status,
        "HTTPHeaders": {},
        "RetryAttempts": 0,
    }


class ClientError(SkmakerClientError, *_CLIENT_ERROR_BASES):  # type: ignore[misc]
    """A failed call of a boto3-shaped client, shaped like botocore's `ClientError`.

    Attributes:
        response: `{"Error": {"Code", "Message"}, "ResponseMetadata": {...}}` (plus
            `OriginalStatusCode`/`OriginalMessage` for a ModelError, as SageMaker Runtime).
        operation_name: the API operation, e.g. "DescribeTrainingJob".
    """

    def __init__(self, error_response: Mapping[str, Any], operation_name: str) -> None:
        error = error_response.get("Error", {})
        message = (
            f"An error occurred ({error.get('Code', 'Unknown')}) when calling the "
            f"{operation_name} operation: {error.get('Message', '')}"
        )
        Exception.__init__(self, message)
        self.details = str(error.get("Message", ""))
        self.response = dict(error_response)
        self.operation_name = operation_name


class WaiterError(SkmakerClientError, *_WAITER_ERROR_BASES):  # type: ignore[misc]
    """A waiter saw a failure state (botocore's `WaiterError` shape: `name`, `reason`,
    `last_response`)."""

    def __init__(self, name: str, reason: str, last_response: Mapping[str, Any]) -> None:
        Exception.__init__(self, f"Waiter {name} failed: {reason}")
        self.details = reason
        self.name = name
        self.reason = reason
        self.last_response = dict(last_response)


def _client_error(
    err: SkmakerClientError, operation: str, *, from_model: bool = False
) -> ClientError:
    """The boto3-shaped error of a failed skmaker call, also an instance of `type(err)`.

    With `from_model` (an invocation's answer), a refused payload or a handler's exception is
    SageMaker Runtime's ModelError, carrying the status the model server answered.
    """
    code, status = _CODE_OF.get(type(err), ("InternalFailure", 500))
    if isinstance(err, skmaker_errors.NotFound) and operation in _RESOURCE_NOT_FOUND_OPERATIONS:
        code = "ResourceNotFound"
    message = err.details or str(err)
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": _response_metadata(status),
    }
    if from_model and isinstance(err, skmaker_errors.ModelError | skmaker_errors.InvalidArgument):
        # SageMaker Runtime reports a container's own error as ModelError with its status.
        original = 400 if isinstance(err, skmaker_errors.InvalidArgument) else 500
        kind = "client" if original < 500 else "server"
        response["Error"] = {
            "Code": "ModelError",
            "Message": f'Received {kind} error ({original}) from primary with message "{message}".',
        }
        response["OriginalStatusCode"] = original
        response["OriginalMessage"] = message
        response["ResponseMetadata"]["HTTPStatusCode"] = 424
    # Exception classes hash by identity; typeshed's Hashable protocol does not see it.
    error_class = _client_error_class(type(err), response["Error"]["Code"])  # type: ignore[arg-type]
    error = error_class(response, operation)
    error.code = err.code
    return error


# boto3's modeled exceptions (`client.exceptions.<Code>`), raised for errors of that code.
_MODELED_CODES = (
    "ResourceNotFound",
    "ResourceInUse",
    "ResourceLimitExceeded",
    "ConflictException",
    "ModelError",
    "ValidationError",
    "ServiceUnavailable",
    "InternalFailure",
)
_MODELED: dict[str, type[ClientError]] = {
    code: type(code, (ClientError,), {"__module__": __name__}) for code in _MODELED_CODES
}


@functools.cache
def _client_error_class(kind: type[SkmakerClientError], code: str) -> type[ClientError]:
    """`ClientError` (boto3's modeled class for `code`, if any) that is also a `kind`
    (NotFound, ...), so any of those except clauses catches it."""
    base = _MODELED.get(code, ClientError)
    return type(f"{base.__name__}[{kind.__name__}]", (base, kind), {"__module__": __name__})


class _Exceptions:
    """`client.exceptions`: `ClientError` and boto3's modeled exception classes."""

    ClientError = ClientError

    def __init__(self, codes: Sequence[str]) -> None:
        for code in codes:
            setattr(self, code, _MODELED[code])


class _Meta:
    """`client.meta`, as far as skmaker knows it: `region_name`, `service_name`."""

    def __init__(self, region_name: str, service_name: str) -> None:
        self.region_name = region_name
        self.service_name = service_name


def _operation_name(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("_"))


class StreamingBody(io.BytesIO):
    """An answer's body, read like botocore's `StreamingBody` (`read`, `iter_lines`,
    `iter_chunks`, `close`)."""

    def iter_chunks(self, chunk_size: int = 1024) -> Iterator[bytes]:
        """The rest of the body in chunks of at most `chunk_size` bytes."""
        while chunk := self.read(chunk_size):
            yield chunk

    def iter_lines(self, chunk_size: int = 1024, keepends: bool = False) -> Iterator[bytes]:
        """The rest of the body line by line."""
        del chunk_size
        yield from self.read().splitlines(keepends)


def _page(
    items: list[dict[str, Any]], next_token: str | None, max_results: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `items` after the opaque `next_token`, and the token of the next one."""
    try:
        start = int(next_token) if next_token else 0
    except ValueError:
        raise ValueError(f"invalid NextToken {next_token!r}") from None
    if start < 0 or (max_results is not None and max_results < 1):
        raise ValueError(f"invalid NextToken {next_token!r} or MaxResults {max_results!r}")
    size = max_results or DEFAULT_MAX_RESULTS
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def _filtered(
    items: list[dict[str, Any]],
    name_key: str,
    *,
    name_contains: str | None = None,
    creation_time_after: datetime | None = None,
    creation_time_before: datetime | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
    status_key: str = "",
) -> list[dict[str, Any]]:
    """boto3's List* filters and sort (CreationTime, Name or Status; Descending by default)."""
    if name_contains:
        items = [item for item in items if name_contains in item[name_key]]
    if creation_time_after is not None:
        items = [
            i for i in items if i.get("CreationTime") and i["CreationTime"] > creation_time_after
        ]
    if creation_time_before is not None:
        items = [
            i for i in items if i.get("CreationTime") and i["CreationTime"] < creation_time_before
        ]
    key_of: Callable[[dict[str, Any]], Any]
    if sort_by == "Name":
        key_of = lambda item: item[name_key]  # noqa: E731
    elif sort_by == "Status" and status_key:
        key_of = lambda item: item.get(status_key, "")  # noqa: E731
    else:
        key_of = lambda item: item.get("CreationTime") or datetime.min.replace(tzinfo=UTC)  # noqa: E731
    return sorted(items, key=key_of, reverse=(sort_order or "Descending") == "Descending")


class _BotoShapedClient:
    """What both clients share: error mapping, `ResponseMetadata`, unknown operations."""

    _service = ""
    _exception_codes: tuple[str, ...] = ()

    def __init__(self, session: Session) -> None:
        self._session = session
        self.exceptions = _Exceptions(self._exception_codes)
        self.meta = _Meta(session.boto_region_name, self._service)

    def _call(self, method: str, call: Callable[[], Any], *, from_model: bool = False) -> Any:
        try:
            return call()
        except ClientError:
            raise
        except SkmakerClientError as err:
            if isinstance(err, UnexpectedStatusException):
                raise
            raise _client_error(err, _operation_name(method), from_model=from_model) from None
        except ValueError as err:
            # Refused before any call (a bad status name, another bucket): boto3's service
            # would answer ValidationException.
            invalid = skmaker_errors.InvalidArgument(str(err))
            raise _client_error(invalid, _operation_name(method)) from None

    @staticmethod
    def _answer(body: Mapping[str, Any]) -> dict[str, Any]:
        return {**body, "ResponseMetadata": _response_metadata()}

    def _arn(self, kind: str, name: str) -> str:
        return self._session.arn(kind, name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        implemented = sorted(attr for attr in dir(type(self)) if not attr.startswith("_"))
        raise AttributeError(
            f"skmaker's {self._service} client does not implement {name!r}; it has: "
            + ", ".join(implemented)
        )

    def can_paginate(self, operation_name: str) -> bool:
        """Whether `get_paginator(operation_name)` works (the List* operations)."""
        return operation_name.startswith("list_") and callable(
            getattr(type(self), operation_name, None)
        )

    def get_paginator(self, operation_name: str) -> Paginator:
        """A boto3-style paginator over a List* operation (`paginate(**kwargs)` yields pages).

        Raises:
            AttributeError: for an operation that is not a List* one here.
        """
        if not self.can_paginate(operation_name):
            raise AttributeError(
                f"skmaker's {self._service} client cannot paginate {operation_name!r}"
            )
        return Paginator(getattr(self, operation_name))


class Paginator:
    """boto3's paginator shape: `paginate(**kwargs)` yields each page's response."""

    def __init__(self, operation: Callable[..., dict[str, Any]]) -> None:
        self._operation = operation

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Pages of the operation, following `NextToken` (PaginationConfig is honoured for
        `MaxItems` and `PageSize`)."""
        config = dict(kwargs.pop("PaginationConfig", None) or {})
        if config.get("PageSize"):
            kwargs["MaxResults"] = config["PageSize"]
        if config.get("StartingToken"):
            kwargs["NextToken"] = config["StartingToken"]
        max_items = config.get("MaxItems")
        seen = 0
        while True:
            page = self._operation(**kwargs)
            yield page
            lists = [value for value in page.values() if isinstance(value, list)]
            seen += len(lists[0]) if lists else 0
            token = page.get("NextToken")
            if not token or (max_items and seen >= max_items):
                return
            kwargs["NextToken"] = token


class Waiter:
    """boto3's waiter shape: `wait(**kwargs)` polls until a success or failure state."""

    def __init__(
        self,
        name: str,
        describe: Callable[..., dict[str, Any]],
        status_key: str,
        success: frozenset[str],
        failure: frozenset[str],
        *,
        gone_is_success: bool = False,
    ) -> None:
        self.name = name
        self._describe = describe
        self._status_key = status_key
        self._success = success
        self._failure = failure
        self._gone_is_success = gone_is_success

    def wait(self, **kwargs: Any) -> None:
        """Polls the describe call with `kwargs` until success.

        `WaiterConfig` (`Delay` seconds, `MaxAttempts`) is honoured; the default polls for up
        to an hour, faster at first than boto3 (skmaker's resources change in seconds).

        Raises:
            WaiterError: on a failure state, or when the attempts run out.
        """
        config = dict(kwargs.pop("WaiterConfig", None) or {})
        delay_s = float(config.get("Delay", 2.0))
        max_attempts = int(config.get("MaxAttempts", 0)) or None
        deadline = time.monotonic() + 3600.0
        interval_s = min(0.1, delay_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._describe(**kwargs)
            except ClientError as err:
                if self._gone_is_success and isinstance(err, skmaker_errors.NotFound):
                    return
                raise
            status = response.get(self._status_key, "")
            if status in self._success:
                return
            if status in self._failure:
                reason = response.get("FailureReason", "")
                raise WaiterError(
                    self.name,
                    f"Waiter encountered a terminal failure state: {self._status_key} is "
                    f"{status}" + (f" ({reason})" if reason else ""),
                    response,
                )
            if (max_attempts and attempt >= max_attempts) or time.monotonic() > deadline:
                raise WaiterError(self.name, "Max attempts exceeded", response)
            time.sleep(interval_s)
            interval_s = min(delay_s, interval_s * 1.5)


class SageMakerClient(_BotoShapedClient):
    """boto3's `sagemaker` client shape over a skmaker `Session` (see the module docstring)."""

    _service = "sagemaker"
    _exception_codes = (
        "ResourceNotFound",
        "ResourceInUse",
        "ResourceLimitExceeded",
        "ConflictException",
    )

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._endpoint_configs: dict[str, dict[str, Any]] = {}
        self._endpoint_config_of: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- training jobs -------------------------------------------------------------------------

    def create_training_job(
        self,
        *,
        TrainingJobName: str,
        AlgorithmSpecification: Mapping[str, Any],
        HyperParameters: Mapping[str, str] | None = None,
        InputDataConfig: Sequence[Mapping[str, Any]] = (),
        OutputDataConfig: Mapping[str, Any] | None = None,
        StoppingCondition: Mapping[str, Any] | None = None,
        Environment: Mapping[str, str] | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """CreateTrainingJob the way the SageMaker SDK's framework estimators send it: the
        script in the `sagemaker_program` hyperparameter, its code archive in
        `sagemaker_submit_directory` (both JSON-encoded); the image, role and resources are
        ignored. Returns `{"TrainingJobArn": ...}`.
        """
        del ignored  # TrainingImage, RoleArn, ResourceConfig, ...: AWS-only
        encoded = dict(HyperParameters or {})
        program = hp.decode_value(encoded.get(hp.PROGRAM, '""'))
        source = hp.decode_value(encoded.get(hp.SUBMIT_DIRECTORY, '""'))
        channels = {}
        for channel in InputDataConfig:
            source_data = channel.get("DataSource", {}).get("S3DataSource", {})
            channels[channel["ChannelName"]] = TrainingInput(
                source_data.get("S3Uri", ""), content_type=channel.get("ContentType")
            )
        self._call(
            "create_training_job",
            lambda: self._session.create_training_job(
                TrainingJobName,
                entry_point=str(program),
                source_uri=str(source),
                hyperparameters=encoded,
                channels=channels,
                metric_definitions=AlgorithmSpecification.get("MetricDefinitions", ()),
                environment=Environment,
                max_run=int((StoppingCondition or {}).get("MaxRuntimeInSeconds", 86400)),
                output_uri=str((OutputDataConfig or {}).get("S3OutputPath", "")),
            ),
        )
        return self._answer({"TrainingJobArn": self._arn("training-job", TrainingJobName)})

    def describe_training_job(self, *, TrainingJobName: str) -> dict[str, Any]:
        """DescribeTrainingJob's response."""
        return self._answer(
            self._call(
                "describe_training_job",
                lambda: self._session.describe_training_job(TrainingJobName),
            )
        )

    def list_training_jobs(
        self,
        *,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        CreationTimeAfter: datetime | None = None,
        CreationTimeBefore: datetime | None = None,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """ListTrainingJobs' response: `TrainingJobSummaries` (with `TrainingJobArn`), and
        `NextToken` while more remain."""
        del ignored
        summaries = self._call(
            "list_training_jobs",
            lambda: self._session.list_training_jobs(status_equals=StatusEquals),
        )
        summaries = _filtered(
            summaries,
            "TrainingJobName",
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
            status_key="TrainingJobStatus",
        )
        for summary in summaries:
            summary["TrainingJobArn"] = self._arn("training-job", summary["TrainingJobName"])
        page, token = self._call(
            "list_training_jobs", lambda: _page(summaries, NextToken, MaxResults)
        )
        return self._answer(
            {"TrainingJobSummaries": page, **({"NextToken": token} if token else {})}
        )

    def stop_training_job(self, *, TrainingJobName: str) -> dict[str, Any]:
        """StopTrainingJob: asks the job to stop (empty response)."""
        self._call("stop_training_job", lambda: self._session.stop_training_job(TrainingJobName))
        return self._answer({})

    # -- models --------------------------------------------------------------------------------

    def _model(self, description: dict[str, Any]) -> dict[str, Any]:
        described = dict(description)
        container = dict(described["PrimaryContainer"])
        environment = dict(container.get("Environment", {}))
        # What the SageMaker SDK's SKLearnModel puts in the container's environment.
        if described.get("EntryPoint"):
            environment.setdefault("SAGEMAKER_PROGRAM", described["EntryPoint"])
        if described.get("SourceUri"):
            environment.setdefault("SAGEMAKER_SUBMIT_DIRECTORY", described["SourceUri"])
        container["Environment"] = environment
        container.setdefault("Mode", "SingleModel")
        described["PrimaryContainer"] = container
        described["ModelArn"] = self._arn("model", described["ModelName"])
        described.setdefault("EnableNetworkIsolation", False)
        return described

    def create_model(
        self,
        *,
        ModelName: str,
        PrimaryContainer: Mapping[str, Any] | None = None,
        Containers: Sequence[Mapping[str, Any]] = (),
        **ignored: Any,
    ) -> dict[str, Any]:
        """CreateModel with the SageMaker SDK's container environment: `SAGEMAKER_PROGRAM`
        names the serving script, `SAGEMAKER_SUBMIT_DIRECTORY` its code archive (absent: the
        script sits in the model archive's `code/`); `ModelDataUrl` is the model archive.
        Returns `{"ModelArn": ...}`.

        Raises:
            ClientError: ValidationException without a container or `SAGEMAKER_PROGRAM`.
        """
        del ignored  # ExecutionRoleArn, VpcConfig, ...: AWS-only
        container = PrimaryContainer or (Containers[0] if len(Containers) == 1 else None)
        environment = dict((container or {}).get("Environment", {}))
        program = environment.pop("SAGEMAKER_PROGRAM", "")
        if container is None or not program:
            raise _client_error(
                skmaker_errors.InvalidArgument(
                    "skmaker needs one container whose Environment names the serving script "
                    "in SAGEMAKER_PROGRAM"
                ),
                "CreateModel",
            )
        source = environment.pop("SAGEMAKER_SUBMIT_DIRECTORY", "")
        self._call(
            "create_model",
            lambda: self._session.create_model(
                ModelName,
                model_data_uri=str(container.get("ModelDataUrl", "")),
                entry_point=program,
                source_uri=source,
                environment=environment,
            ),
        )
        return self._answer({"ModelArn": self._arn("model", ModelName)})

    def describe_model(self, *, ModelName: str) -> dict[str, Any]:
        """DescribeModel's response."""
        description = self._call("describe_model", lambda: self._session.describe_model(ModelName))
        return self._answer(self._model(description))

    def list_models(
        self,
        *,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        NameContains: str | None = None,
        CreationTimeAfter: datetime | None = None,
        CreationTimeBefore: datetime | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
    ) -> dict[str, Any]:
        """ListModels' response: `Models` (with `ModelArn`), and `NextToken`."""
        models = _filtered(
            self._call("list_models", lambda: self._session.list_models()),
            "ModelName",
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
        )
        for model in models:
            model["ModelArn"] = self._arn("model", model["ModelName"])
        page, token = self._call("list_models", lambda: _page(models, NextToken, MaxResults))
        return self._answer({"Models": page, **({"NextToken": token} if token else {})})

    def delete_model(self, *, ModelName: str) -> dict[str, Any]:
        """DeleteModel; endpoints serving the model keep serving it (empty response)."""
        self._call("delete_model", lambda: self._session.delete_model(ModelName))
        return self._answer({})

    # -- endpoint configs and endpoints --------------------------------------------------------

    def create_endpoint_config(
        self,
        *,
        EndpointConfigName: str,
        ProductionVariants: Sequence[Mapping[str, Any]],
        **ignored: Any,
    ) -> dict[str, Any]:
        """Keeps an endpoint config in this client for `create_endpoint`/`update_endpoint`.

        Raises:
            ClientError: ValidationException for other than one variant with a ModelName, or
                ResourceInUse for a name kept already.
        """
        del ignored  # DataCaptureConfig, KmsKeyId, ...: AWS-only
        if len(ProductionVariants) != 1 or not ProductionVariants[0].get("ModelName"):
            raise _client_error(
                skmaker_errors.InvalidArgument(
                    "skmaker endpoints serve one model: give exactly one production variant "
                    "with a ModelName"
                ),
                "CreateEndpointConfig",
            )
        with self._lock:
            if EndpointConfigName in self._endpoint_configs:
                raise _client_error(
                    skmaker_errors.AlreadyExists(
                        f"Cannot create already existing endpoint configuration "
                        f'"{self._arn("endpoint-config", EndpointConfigName)}".'
                    ),
                    "CreateEndpointConfig",
                )
            variant = dict(ProductionVariants[0])
            variant.setdefault("VariantName", VARIANT_NAME)
            variant.setdefault("InitialInstanceCount", 1)
            variant.setdefault("InitialVariantWeight", 1.0)
            self._endpoint_configs[EndpointConfigName] = {
                "EndpointConfigName": EndpointConfigName,
                "EndpointConfigArn": self._arn("endpoint-config", EndpointConfigName),
                "ProductionVariants": [variant],
                "CreationTime": datetime.now().astimezone(),
            }
        return self._answer({"EndpointConfigArn": self._arn("endpoint-config", EndpointConfigName)})

    def describe_endpoint_config(self, *, EndpointConfigName: str) -> dict[str, Any]:
        """DescribeEndpointConfig: a config kept by this client, else the config of the live
        endpoint of that name (its model and desired replica count).

        Raises:
            ClientError: ValidationException when neither exists.
        """
        with self._lock:
            config = self._endpoint_configs.get(EndpointConfigName)
        if config is not None:
            return self._answer(config)
        try:
            endpoint = self._session.describe_endpoint(EndpointConfigName)
        except skmaker_errors.NotFound:
            raise _client_error(
                skmaker_errors.NotFound(
                    f'Could not find endpoint configuration "{EndpointConfigName}".'
                ),
                "DescribeEndpointConfig",
            ) from None
        except SkmakerClientError as err:
            raise _client_error(err, "DescribeEndpointConfig") from None
        variant = {
            "VariantName": VARIANT_NAME,
            "ModelName": endpoint["ModelName"],
            "InitialInstanceCount": endpoint["DesiredReplicas"],
            "InitialVariantWeight": 1.0,
            "InstanceType": "local",
        }
        answer = {
            "EndpointConfigName": EndpointConfigName,
            "EndpointConfigArn": self._arn("endpoint-config", EndpointConfigName),
            "ProductionVariants": [variant],
        }
        if "CreationTime" in endpoint:
            answer["CreationTime"] = endpoint["CreationTime"]
        return self._answer(answer)

    def delete_endpoint_config(self, *, EndpointConfigName: str) -> dict[str, Any]:
        """Forgets a config kept by this client; a live endpoint's own config is its own
        (deleting it, as on SageMaker, changes nothing for the endpoint)."""
        with self._lock:
            self._endpoint_configs.pop(EndpointConfigName, None)
        return self._answer({})

    def _config_variant(self, config_name: str, operation: str) -> dict[str, Any]:
        with self._lock:
            config = self._endpoint_configs.get(config_name)
        if config is None:
            raise _client_error(
                skmaker_errors.NotFound(
                    f'Could not find endpoint configuration "{config_name}": create it with '
                    "this client's create_endpoint_config first"
                ),
                operation,
            )
        return dict(config["ProductionVariants"][0])

    def create_endpoint(
        self,
        *,
        EndpointName: str,
        EndpointConfigName: str,
        **ignored: Any,
    ) -> dict[str, Any]:
        """CreateEndpoint from a config made by `create_endpoint_config`; returns at once, as
        boto3 (use `get_waiter("endpoint_in_service")`). Returns `{"EndpointArn": ...}`."""
        del ignored  # Tags, DeploymentConfig: AWS-only
        variant = self._config_variant(EndpointConfigName, "CreateEndpoint")
        self._call(
            "create_endpoint",
            lambda: self._session.create_endpoint(
                EndpointName,
                model_name=variant["ModelName"],
                initial_replicas=int(variant.get("InitialInstanceCount", 1)),
                wait=False,
            ),
        )
        with self._lock:
            self._endpoint_config_of[EndpointName] = EndpointConfigName
        return self._answer({"EndpointArn": self._arn("endpoint", EndpointName)})

    def update_endpoint(
        self,
        *,
        EndpointName: str,
        EndpointConfigName: str,
        **ignored: Any,
    ) -> dict[str, Any]:
        """UpdateEndpoint to a config made by `create_endpoint_config` (model and replica
        count); returns at once. Returns `{"EndpointArn": ...}`."""
        del ignored
        variant = self._config_variant(EndpointConfigName, "UpdateEndpoint")
        self._call(
            "update_endpoint",
            lambda: self._session.update_endpoint(
                EndpointName,
                model_name=variant["ModelName"],
                replicas=int(variant.get("InitialInstanceCount", 1)),
                wait=False,
            ),
        )
        with self._lock:
            self._endpoint_config_of[EndpointName] = EndpointConfigName
        return self._answer({"EndpointArn": self._arn("endpoint", EndpointName)})

    def _endpoint(self, description: dict[str, Any]) -> dict[str, Any]:
        described = dict(description)
        name = described["EndpointName"]
        with self._lock:
            config_name = self._endpoint_config_of.get(name, name)
        described["EndpointArn"] = self._arn("endpoint", name)
        described["EndpointConfigName"] = config_name
        described["ProductionVariants"] = [
            {**variant, "CurrentWeight": 1.0, "DesiredWeight": 1.0}
            for variant in described.get("ProductionVariants", [])
        ]
        return described

    def describe_endpoint(self, *, EndpointName: str) -> dict[str, Any]:
        """DescribeEndpoint's response (plus skmaker's `ModelName`, `Replicas`, ...)."""
        description = self._call(
            "describe_endpoint", lambda: self._session.describe_endpoint(EndpointName)
        )
        return self._answer(self._endpoint(description))

    def list_endpoints(
        self,
        *,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        CreationTimeAfter: datetime | None = None,
        CreationTimeBefore: datetime | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """ListEndpoints' response: `Endpoints` (with `EndpointArn`), and `NextToken`."""
        del ignored
        endpoints = self._call("list_endpoints", lambda: self._session.list_endpoints())
        if StatusEquals:
            endpoints = [e for e in endpoints if e["EndpointStatus"] == StatusEquals]
        endpoints = _filtered(
            endpoints,
            "EndpointName",
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
            status_key="EndpointStatus",
        )
        for endpoint in endpoints:
            endpoint["EndpointArn"] = self._arn("endpoint", endpoint["EndpointName"])
        page, token = self._call("list_endpoints", lambda: _page(endpoints, NextToken, MaxResults))
        return self._answer({"Endpoints": page, **({"NextToken": token} if token else {})})

    def delete_endpoint(self, *, EndpointName: str) -> dict[str, Any]:
        """DeleteEndpoint: returns at once, as boto3 (the endpoint is Deleting; use
        `get_waiter("endpoint_deleted")`). Its model may be deleted before or after."""
        self._call("delete_endpoint", lambda: self._session.delete_endpoint(EndpointName))
        return self._answer({})

    # -- transform jobs ------------------------------------------------------------------------

    def describe_transform_job(self, *, TransformJobName: str) -> dict[str, Any]:
        """DescribeTransformJob's response (plus skmaker's per-file progress in `Files`)."""
        description = self._call(
            "describe_transform_job",
            lambda: self._session.describe_transform_job(TransformJobName),
        )
        description["TransformJobArn"] = self._arn("transform-job", TransformJobName)
        return self._answer(description)

    def list_transform_jobs(
        self,
        *,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        CreationTimeAfter: datetime | None = None,
        CreationTimeBefore: datetime | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """ListTransformJobs' response: `TransformJobSummaries`, and `NextToken`."""
        del ignored
        jobs = _filtered(
            self._call(
                "list_transform_jobs",
                lambda: self._session.list_transform_jobs(status_equals=StatusEquals),
            ),
            "TransformJobName",
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
            status_key="TransformJobStatus",
        )
        for job in jobs:
            job["TransformJobArn"] = self._arn("transform-job", job["TransformJobName"])
        page, token = self._call("list_transform_jobs", lambda: _page(jobs, NextToken, MaxResults))
        return self._answer(
            {"TransformJobSummaries": page, **({"NextToken": token} if token else {})}
        )

    def stop_transform_job(self, *, TransformJobName: str) -> dict[str, Any]:
        """StopTransformJob (empty response)."""
        self._call("stop_transform_job", lambda: self._session.stop_transform_job(TransformJobName))
        return self._answer({})

    # -- tuning jobs ---------------------------------------------------------------------------

    def describe_hyper_parameter_tuning_job(
        self,
        *,
        HyperParameterTuningJobName: str,
    ) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob's response (plus skmaker's `TrainingJobs`)."""
        description = self._call(
            "describe_hyper_parameter_tuning_job",
            lambda: self._session.describe_tuning_job(HyperParameterTuningJobName),
        )
        description["HyperParameterTuningJobArn"] = self._arn(
            "hyper-parameter-tuning-job", HyperParameterTuningJobName
        )
        return self._answer(description)

    def list_hyper_parameter_tuning_jobs(
        self,
        *,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        CreationTimeAfter: datetime | None = None,
        CreationTimeBefore: datetime | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """ListHyperParameterTuningJobs' response: `HyperParameterTuningJobSummaries`."""
        del ignored
        jobs = _filtered(
            self._call(
                "list_hyper_parameter_tuning_jobs",
                lambda: self._session.list_tuning_jobs(status_equals=StatusEquals),
            ),
            "HyperParameterTuningJobName",
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
            status_key="HyperParameterTuningJobStatus",
        )
        for job in jobs:
            job["HyperParameterTuningJobArn"] = self._arn(
                "hyper-parameter-tuning-job", job["HyperParameterTuningJobName"]
            )
        page, token = self._call(
            "list_hyper_parameter_tuning_jobs", lambda: _page(jobs, NextToken, MaxResults)
        )
        return self._answer(
            {"HyperParameterTuningJobSummaries": page, **({"NextToken": token} if token else {})}
        )

    def list_training_jobs_for_hyper_parameter_tuning_job(
        self,
        *,
        HyperParameterTuningJobName: str,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        StatusEquals: str | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
    ) -> dict[str, Any]:
        """The trials' `TrainingJobSummaries`, by default newest first; SortBy
        FinalObjectiveMetricValue sorts by the objective."""
        trials = self._call(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            lambda: self._session.list_training_jobs_for_tuning_job(HyperParameterTuningJobName),
        )
        if StatusEquals:
            trials = [t for t in trials if t["TrainingJobStatus"] == StatusEquals]
        if SortBy == "FinalObjectiveMetricValue":
            scored = [t for t in trials if "FinalHyperParameterTuningJobObjectiveMetric" in t]
            scored.sort(
                key=lambda t: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
                reverse=(SortOrder or "Descending") == "Descending",
            )
            trials = scored + [t for t in trials if t not in scored]
        else:
            trials = _filtered(
                trials,
                "TrainingJobName",
                sort_by=SortBy,
                sort_order=SortOrder,
                status_key="TrainingJobStatus",
            )
        for trial in trials:
            trial["TrainingJobArn"] = self._arn("training-job", trial["TrainingJobName"])
        page, token = self._call(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            lambda: _page(trials, NextToken, MaxResults),
        )
        return self._answer(
            {"TrainingJobSummaries": page, **({"NextToken": token} if token else {})}
        )

    def stop_hyper_parameter_tuning_job(
        self,
        *,
        HyperParameterTuningJobName: str,
    ) -> dict[str, Any]:
        """StopHyperParameterTuningJob (empty response)."""
        self._call(
            "stop_hyper_parameter_tuning_job",
            lambda: self._session.stop_tuning_job(HyperParameterTuningJobName),
        )
        return self._answer({})

    # -- waiters -------------------------------------------------------------------------------

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


class SageMakerRuntimeClient(_BotoShapedClient):
    """boto3's `sagemaker-runtime` client shape over a skmaker `Session`."""

    _service = "sagemaker-runtime"
    _exception_codes = ("ModelError", "ValidationError", "ServiceUnavailable", "InternalFailure")

    def invoke_endpoint(
        self,
        *,
        EndpointName: str,
        Body: bytes | str | Any,
        ContentType: str = "application/octet-stream",
        Accept: str = "",
        CustomAttributes: str | None = None,
        TargetModel: str | None = None,
        TargetVariant: str | None = None,
        InferenceId: str | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """InvokeEndpoint: `{"Body": <StreamingBody>, "ContentType", "InvokedProductionVariant"}`.

        `Body` may be bytes, str or a readable file object; an empty or `*/*` `Accept`
        gets the handler's default type.

        Raises:
            ClientError: ModelError (with `OriginalStatusCode`) when the handler refused or
                raised, ValidationException for an unknown endpoint or an unsupported
                `TargetModel`/`TargetVariant`.
        """
        del InferenceId, ignored
        if TargetModel is not None or TargetVariant not in (None, VARIANT_NAME):
            raise _client_error(
                skmaker_errors.InvalidArgument(
                    f"skmaker endpoints serve one model in one variant, {VARIANT_NAME!r}"
                ),
                "InvokeEndpoint",
            )
        payload = Body.read() if hasattr(Body, "read") else Body
        body, content_type = self._call(
            "invoke_endpoint",
            lambda: self._session.invoke_endpoint(
                EndpointName, payload, ContentType, Accept, CustomAttributes
            ),
            from_model=True,
        )
        return self._answer(
            {
                "Body": StreamingBody(body),
                "ContentType": content_type,
                "InvokedProductionVariant": VARIANT_NAME,
            }
        )
