"""`HostingCalls`: the model and endpoint half of `Session` (SageMaker calls this "hosting").

Mixed into `Session`, which owns the channel to the control and the call policy (deadlines,
retrying UNAVAILABLE for idempotent calls, mapping errors). Creates, describes, lists, updates
and deletes models and endpoints on the control's ModelService and EndpointService, waits for
endpoints, and invokes them through an `EndpointRouter` per endpoint, straight to the replicas
(or, when the session has a gateway address, to the gateway, which routes by endpoint name).
Results are boto3-shaped dicts (see `skmaker.descriptions`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc

from skmaker import descriptions
from skmaker.autoscaling import AutoScalingPolicy
from skmaker.errors import DeadlineExceeded, NotFound, UnexpectedStatusException
from skmaker.routing import DEFAULT_REFRESH_INTERVAL_S, EndpointRouter, routing_target
from skmaker.v1 import model_pb2, serving_pb2, serving_pb2_grpc

T = TypeVar("T")

# How long a deploy may go unpolled: local replicas are up in seconds, so poll often.
DEFAULT_ENDPOINT_POLL_S = 1.0
# Deleting drains every replica (each gets the replica's shutdown grace) before stopping it.
DEFAULT_DELETE_TIMEOUT_S = 300.0


class HostingCalls:
    """Model and endpoint calls of a `Session`; see that class for the connection settings."""

    # Provided by Session.
    _metadata: tuple[tuple[str, str], ...]
    _rpc: Callable[..., Any]
    store_uri: Callable[[str], str]

    def _init_hosting(
        self,
        channel: grpc.Channel,
        replica_credentials: grpc.ChannelCredentials | None,
        gateway_address: str = "",
    ) -> None:
        """Binds the stubs; `replica_credentials` secure the channels to replicas (None: plain).

        A non-empty `gateway_address` sends every invocation there instead of to the replicas.
        """
        self._models = serving_pb2_grpc.ModelServiceStub(channel)
        self._endpoints = serving_pb2_grpc.EndpointServiceStub(channel)
        self._replica_credentials = replica_credentials
        self._gateway_address = gateway_address
        self._routers: dict[str, EndpointRouter] = {}
        self._routers_lock = threading.Lock()

    def _close_hosting(self) -> None:
        with self._routers_lock:
            routers, self._routers = list(self._routers.values()), {}
        for router in routers:
            router.close()

    # -- models --------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        model_data_uri: str,
        entry_point: str,
        source_uri: str = "",
        environment: Mapping[str, str] | None = None,
        training_job_name: str = "",
        framework_version: str = "",
    ) -> dict[str, Any]:
        """Creates a model and returns its description (not retried).

        Args:
            name: the model name.
            model_data_uri: `store://` URI of model.tar.gz.
            entry_point: the serving script (defines `model_fn`), relative to the code root.
            source_uri: `store://` URI of sourcedir.tar.gz holding the entry point; empty when
                the code sits in the model archive under `code/`.
            environment: environment variables for the serving process.
            training_job_name: the training job the model came from, if any.
            framework_version: the scikit-learn to serve with; empty: the training job's,
                else the newest the server has.

        Raises:
            AlreadyExists, InvalidArgument, NotFound: as the server decides.
        """
        request = serving_pb2.CreateModelRequest(
            model=model_pb2.Model(
                name=name,
                model_data_uri=self.store_uri(model_data_uri),
                entry_point=entry_point,
                source_uri=self.store_uri(source_uri),
                environment=dict(environment or {}),
                training_job_name=training_job_name,
                framework_version=framework_version,
            )
        )
        response = self._rpc(self._models.CreateModel, request, idempotent=False)
        return descriptions.model_description(response.model)

    def describe_model(self, name: str) -> dict[str, Any]:
        """A DescribeModel-shaped dict of one model.

        Raises:
            NotFound: when there is no such model.
        """
        request = serving_pb2.DescribeModelRequest(name=name)
        response = self._rpc(self._models.DescribeModel, request, idempotent=True)
        return descriptions.model_description(response.model)

    def list_models(
        self, *, name_contains_prefix: str = "", max_results: int | None = None
    ) -> list[dict[str, Any]]:
        """Summaries of models, newest first (boto3's `Models` entries).

        Args:
            name_contains_prefix: only models whose name starts with this.
            max_results: at most this many; all when None.
        """
        request = serving_pb2.ListModelsRequest(name_prefix=name_contains_prefix)
        response = self._rpc(self._models.ListModels, request, idempotent=True)
        return [descriptions.model_summary(model) for model in response.models][:max_results]

    def delete_model(self, model_name: str) -> None:
        """Deletes a model (not retried); endpoints serving it keep serving it.

        Raises:
            NotFound: when there is no such model.
        """
        request = serving_pb2.DeleteModelRequest(name=model_name)
        self._rpc(self._models.DeleteModel, request, idempotent=False)

    # -- endpoints -----------------------------------------------------------------------------

    def create_endpoint(
        self,
        endpoint_name: str,
        *,
        model_name: str,
        initial_replicas: int = 1,
        autoscaling: AutoScalingPolicy | Mapping[str, Any] | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Creates an endpoint serving a model; returns its description (not retried).

        Args:
            endpoint_name: the endpoint name.
            model_name: the model to serve.
            initial_replicas: replicas to start with, at least 1.
            autoscaling: a target-tracking policy (`AutoScalingPolicy` or a dict of its
                fields); None for a fixed replica count.
            wait: wait until the endpoint is InService (as SageMaker's `create_endpoint`);
                the description returned is then the InService one.

        Raises:
            AlreadyExists, InvalidArgument, NotFound: as the server decides.
            UnexpectedStatusException: when `wait` and the endpoint ended Failed.
        """
        policy = AutoScalingPolicy.from_value(autoscaling) if autoscaling is not None else None
        request = serving_pb2.CreateEndpointRequest(
            name=endpoint_name,
            model_name=model_name,
            initial_replicas=initial_replicas,
            scaling_policy=policy.to_proto() if policy else None,
        )
        response = self._rpc(self._endpoints.CreateEndpoint, request, idempotent=False)
        if wait:
            return self.wait_for_endpoint(endpoint_name)
        return descriptions.endpoint_description(response.endpoint)

    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any]:
        """A DescribeEndpoint-shaped dict of one endpoint, with its replicas.

        Raises:
            NotFound: when there is no such endpoint.
        """
        request = serving_pb2.DescribeEndpointRequest(name=endpoint_name)
        response = self._rpc(self._endpoints.DescribeEndpoint, request, idempotent=True)
        return descriptions.endpoint_description(response.endpoint)

    def list_endpoints(
        self, *, name_contains_prefix: str = "", max_results: int | None = None
    ) -> list[dict[str, Any]]:
        """Summaries of endpoints (boto3's `Endpoints` entries, plus skmaker's replica counts).

        Args:
            name_contains_prefix: only endpoints whose name starts with this.
            max_results: at most this many; all when None.
        """
        request = serving_pb2.ListEndpointsRequest(name_prefix=name_contains_prefix)
        response = self._rpc(self._endpoints.ListEndpoints, request, idempotent=True)
        summaries = [descriptions.endpoint_summary(e) for e in response.endpoints]
        return summaries[:max_results]

    def update_endpoint(
        self,
        endpoint_name: str,
        *,
        model_name: str | None = None,
        replicas: int | None = None,
        autoscaling: AutoScalingPolicy | Mapping[str, Any] | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Moves an endpoint to another model, replica count or policy without dropping calls.

        Arguments left None keep their value. Not retried.

        Args:
            endpoint_name: the endpoint.
            model_name: the model to serve from now on.
            replicas: the replica count to run.
            autoscaling: a new target-tracking policy.
            wait: wait until the endpoint is InService again.

        Raises:
            ValueError: when nothing is to change.
            NotFound, InvalidArgument, FailedPrecondition: as the server decides.
            UnexpectedStatusException: when `wait` and the endpoint ended Failed.
        """
        if model_name is None and replicas is None and autoscaling is None:
            raise ValueError("update_endpoint needs a model_name, replicas or autoscaling")
        policy = AutoScalingPolicy.from_value(autoscaling) if autoscaling is not None else None
        request = serving_pb2.UpdateEndpointRequest(
            name=endpoint_name,
            model_name=model_name or "",
            replicas=replicas or 0,
            scaling_policy=policy.to_proto() if policy else None,
        )
        response = self._rpc(self._endpoints.UpdateEndpoint, request, idempotent=False)
        if wait:
            return self.wait_for_endpoint(endpoint_name)
        return descriptions.endpoint_description(response.endpoint)

    def delete_endpoint(
        self,
        endpoint_name: str,
        wait: bool = False,
        timeout_s: float = DEFAULT_DELETE_TIMEOUT_S,
    ) -> None:
        """Deletes an endpoint: it turns Deleting, its replicas drain and stop, then it is gone.

        Not retried. As SageMaker's `delete_endpoint`, it returns at once unless `wait`.

        Args:
            endpoint_name: the endpoint.
            wait: return only once the endpoint is gone (its replicas stopped), so that its
                model can be deleted next.
            timeout_s: with `wait`, how long the deletion may take.

        Raises:
            NotFound: when there is no such endpoint.
            DeadlineExceeded: when `wait` and the endpoint still exists after `timeout_s`.
        """
        request = serving_pb2.DeleteEndpointRequest(name=endpoint_name)
        self._rpc(self._endpoints.DeleteEndpoint, request, idempotent=False)
        with self._routers_lock:
            router = self._routers.pop(endpoint_name, None)
        if router is not None:
            router.close()
        if wait:
            self._wait_until_deleted(endpoint_name, timeout_s)

    def _wait_until_deleted(self, endpoint_name: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        interval_s = 0.05
        while True:
            try:
                status = self.describe_endpoint(endpoint_name)["EndpointStatus"]
            except NotFound:
                return
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"endpoint {endpoint_name} is still {status} {timeout_s:.0f} s after "
                    "its deletion was asked for"
                )
            time.sleep(interval_s)
            interval_s = min(DEFAULT_ENDPOINT_POLL_S, interval_s * 1.5)

    def wait_for_endpoint(
        self, endpoint_name: str, poll_s: float = DEFAULT_ENDPOINT_POLL_S
    ) -> dict[str, Any]:
        """Polls until the endpoint leaves Creating/Updating/SystemUpdating; returns it InService.

        Polling starts fast (local replicas are up in seconds) and backs off to one describe
        per `poll_s`.

        Raises:
            UnexpectedStatusException: when the endpoint ended in any other status than
                InService (Failed, with the reason; Deleting), worded as SageMaker's
                "Error hosting endpoint <name>: Failed. Reason: ...".
            NotFound: when there is no such endpoint (e.g. deleted meanwhile).
        """
        interval_s = 0.1
        while True:
            description = self.describe_endpoint(endpoint_name)
            status = description["EndpointStatus"]
            if status not in descriptions.ENDPOINT_TRANSITIONAL_STATUSES:
                if status != "InService":
                    raise UnexpectedStatusException.for_endpoint(
                        endpoint_name, status, description.get("FailureReason", "(none)")
                    )
                return description
            time.sleep(interval_s)
            interval_s = min(poll_s, interval_s * 1.5)

    # -- invocations ---------------------------------------------------------------------------

    def endpoint_router(self, endpoint_name: str) -> EndpointRouter:
        """This session's router for an endpoint, made on first use and closed with the session.

        It sends Predict straight to the endpoint's serving replicas (found with
        DescribeEndpoint, refreshed in the background), with this session's token; with a
        gateway address, to the gateway instead (it finds the replicas itself).
        """
        with self._routers_lock:
            router = self._routers.get(endpoint_name)
            if router is None and self._gateway_address:
                router = EndpointRouter(
                    endpoint_name,
                    target=self._gateway_address,
                    metadata=self._metadata,
                    credentials=self._replica_credentials,
                )
                self._routers[endpoint_name] = router
            elif router is None:
                router = EndpointRouter(
                    endpoint_name,
                    resolve=lambda: routing_target(self.describe_endpoint(endpoint_name)),
                    metadata=self._metadata,
                    credentials=self._replica_credentials,
                    refresh_interval_s=DEFAULT_REFRESH_INTERVAL_S,
                )
                self._routers[endpoint_name] = router
            return router

    def invoke_endpoint(
        self,
        endpoint_name: str,
        body: bytes | str,
        content_type: str,
        accept: str = "",
        custom_attributes: str | None = None,
        timeout_s: float | None = None,
    ) -> tuple[bytes, str]:
        """Calls an endpoint once, as SageMaker Runtime's InvokeEndpoint.

        The call goes straight to a serving replica (the control is asked only where the
        replicas are, once and then in the background), or through the session's gateway.
        UNAVAILABLE is retried on other replicas; nothing else is.

        Args:
            endpoint_name: the endpoint.
            body: the payload; `str` travels as text (readable in traces), `bytes` as bytes.
            content_type: the payload's MIME type (text/csv, application/json,
                application/x-npy, or what the script's input_fn reads).
            accept: the MIME type wanted back; empty for the endpoint's default (JSON).
            custom_attributes: SageMaker's CustomAttributes, passed to the handler.
            timeout_s: deadline of the call, retries included (default 60 s, as SageMaker).

        Returns:
            The answer's bytes and its content type.

        Raises:
            InvalidArgument: unsupported content type or accept, undecodable payload, wrong
                feature count.
            ModelError: the script's own code raised; the message carries its error.
            ResourceExhausted: the payload is over the replica's limit.
            Unavailable: no replica answered through the retries.
            NotFound: there is no such endpoint.
        """
        return self.endpoint_router(endpoint_name).invoke(
            body, content_type, accept, custom_attributes or "", timeout_s=timeout_s
        )
