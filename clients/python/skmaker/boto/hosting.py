"""The boto3-shaped SageMaker client's hosting operations: models, endpoint configs, endpoints.

Endpoint configs do not exist on skmaker: `create_endpoint_config` keeps the config in the
client object, `create_endpoint`/`update_endpoint` read its one production variant, and
`describe_endpoint_config` answers a kept config or one made from the live endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from skmaker import errors as skmaker_errors
from skmaker.boto.client_base import BotoShapedClient
from skmaker.boto.errors import client_error
from skmaker.boto.paging import ListShape
from skmaker.descriptions import VARIANT_NAME
from skmaker.errors import SkmakerClientError

if TYPE_CHECKING:
    from skmaker.session import Session

_MODELS = ListShape("Models", "ModelName", "ModelArn", "model")
_ENDPOINTS = ListShape("Endpoints", "EndpointName", "EndpointArn", "endpoint", "EndpointStatus")


class HostingOperations(BotoShapedClient):
    """CreateModel ... DeleteModel, the endpoint config calls, CreateEndpoint ...
    DeleteEndpoint; endpoint configs are kept in this object."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._endpoint_configs: dict[str, dict[str, Any]] = {}
        self._endpoint_config_of: dict[str, str] = {}
        self._lock = threading.Lock()

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
            raise client_error(
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
        return self._list(
            "list_models",
            _MODELS,
            lambda: self._session.list_models(),
            next_token=NextToken,
            max_results=MaxResults,
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
        )

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
            raise client_error(
                skmaker_errors.InvalidArgument(
                    "skmaker endpoints serve one model: give exactly one production variant "
                    "with a ModelName"
                ),
                "CreateEndpointConfig",
            )
        with self._lock:
            if EndpointConfigName in self._endpoint_configs:
                raise client_error(
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
            raise client_error(
                skmaker_errors.NotFound(
                    f'Could not find endpoint configuration "{EndpointConfigName}".'
                ),
                "DescribeEndpointConfig",
            ) from None
        except SkmakerClientError as err:
            raise client_error(err, "DescribeEndpointConfig") from None
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
            raise client_error(
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
        return self._list(
            "list_endpoints",
            _ENDPOINTS,
            lambda: [
                endpoint
                for endpoint in self._session.list_endpoints()
                if not StatusEquals or endpoint["EndpointStatus"] == StatusEquals
            ],
            next_token=NextToken,
            max_results=MaxResults,
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
        )

    def delete_endpoint(self, *, EndpointName: str) -> dict[str, Any]:
        """DeleteEndpoint: returns at once, as boto3 (the endpoint is Deleting; use
        `get_waiter("endpoint_deleted")`). Its model may be deleted before or after."""
        self._call("delete_endpoint", lambda: self._session.delete_endpoint(EndpointName))
        return self._answer({})
