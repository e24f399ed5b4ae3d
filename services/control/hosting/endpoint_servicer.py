"""EndpointService: decode the request, call `Endpoints`, encode the answer."""

from __future__ import annotations

import grpc

from services.control.hosting import convert
from services.control.hosting.endpoints import Endpoints
from skmaker.v1 import serving_pb2, serving_pb2_grpc


class EndpointServicer(serving_pb2_grpc.EndpointServiceServicer):
    """The public endpoint API."""

    def __init__(self, endpoints: Endpoints) -> None:
        """Serves `endpoints`."""
        self._endpoints = endpoints

    def CreateEndpoint(
        self, request: serving_pb2.CreateEndpointRequest, context: grpc.ServicerContext
    ) -> serving_pb2.CreateEndpointResponse:
        """Stores an endpoint (Creating) and starts its replicas."""
        view = self._endpoints.create(
            request.name,
            request.model_name,
            request.initial_replicas,
            convert.scaling_policy_from_pb(
                request.scaling_policy, request.HasField("scaling_policy")
            ),
        )
        return serving_pb2.CreateEndpointResponse(endpoint=convert.endpoint_to_pb(view))

    def DescribeEndpoint(
        self, request: serving_pb2.DescribeEndpointRequest, context: grpc.ServicerContext
    ) -> serving_pb2.DescribeEndpointResponse:
        """Returns one endpoint with its replicas and recent events."""
        view = self._endpoints.describe(request.name)
        return serving_pb2.DescribeEndpointResponse(endpoint=convert.endpoint_to_pb(view))

    def ListEndpoints(
        self, request: serving_pb2.ListEndpointsRequest, context: grpc.ServicerContext
    ) -> serving_pb2.ListEndpointsResponse:
        """Lists endpoints newest first (without events)."""
        views = self._endpoints.list(request.name_prefix)
        return serving_pb2.ListEndpointsResponse(
            endpoints=[convert.endpoint_to_pb(view) for view in views]
        )

    def UpdateEndpoint(
        self, request: serving_pb2.UpdateEndpointRequest, context: grpc.ServicerContext
    ) -> serving_pb2.UpdateEndpointResponse:
        """Moves an endpoint to another model, replica count or policy."""
        view = self._endpoints.update(
            request.name,
            model_name=request.model_name,
            replicas=request.replicas,
            policy=convert.scaling_policy_from_pb(
                request.scaling_policy, request.HasField("scaling_policy")
            ),
        )
        return serving_pb2.UpdateEndpointResponse(endpoint=convert.endpoint_to_pb(view))

    def DeleteEndpoint(
        self, request: serving_pb2.DeleteEndpointRequest, context: grpc.ServicerContext
    ) -> serving_pb2.DeleteEndpointResponse:
        """Marks the endpoint Deleting; its replicas drain and stop, then it is gone."""
        self._endpoints.delete(request.name)
        return serving_pb2.DeleteEndpointResponse()
