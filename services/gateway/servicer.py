"""The gateway's two services as generic handlers: decode the endpoint name, forward, answer.

Predict and the V2 model calls have no (de)serializers: the request's bytes are read only for
the endpoint name (field 1, see `wire`) and handed to `Forwarder` as they came. ServerLive,
ServerReady and ServerMetadata are the gateway's own answers. Reflection (`grpcurl`) knows
both services from their generated descriptors, imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from services.gateway.forwarder import (
    INFERENCE_SERVICE,
    MODEL_INFER,
    MODEL_METADATA,
    MODEL_READY,
    PREDICT,
    SERVER_NAME,
    V2_SERVICE,
    Forwarder,
)
from services.gateway.wire import MalformedMessage, read_string_field
from services.runtime.errors import InvalidArgument, Unavailable
from skmaker.v1 import open_inference_pb2


def _endpoint_name(request: bytes, field: str, forwarder: Forwarder) -> str:
    """Field 1 of a forwarded request (the endpoint); refuses a missing or unreadable one."""
    try:
        name = read_string_field(request, 1)
    except MalformedMessage as err:
        raise forwarder.reject(InvalidArgument(f"malformed request: {err}")) from None
    if not name:
        raise forwarder.reject(
            InvalidArgument(
                f"{field} is required through the gateway: set it to the endpoint to call"
            )
        )
    return name


def inference_handler(forwarder: Forwarder) -> grpc.GenericRpcHandler:
    """skmaker.v1.InferenceService on raw bytes: Predict routed by `endpoint_name`."""

    def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
        endpoint = _endpoint_name(request, "endpoint_name", forwarder)
        return forwarder.forward(PREDICT, endpoint, request, context)

    return grpc.method_handlers_generic_handler(
        INFERENCE_SERVICE, {"Predict": grpc.unary_unary_rpc_method_handler(predict)}
    )


def open_inference_handler(forwarder: Forwarder, version: str) -> grpc.GenericRpcHandler:
    """inference.GRPCInferenceService: model calls routed by model name = endpoint name.

    ServerLive is always true while the gateway answers; ServerReady once the routing table
    has been read; ModelReady is false (not an error) for an endpoint without a serving replica.
    """

    def routed(method: str, field: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            endpoint = _endpoint_name(request, field, forwarder)
            return forwarder.forward(method, endpoint, request, context)

        return handle

    def model_ready(request: bytes, context: grpc.ServicerContext) -> bytes:
        endpoint = _endpoint_name(request, "name", forwarder)
        try:
            return forwarder.forward(MODEL_READY, endpoint, request, context)
        except Unavailable:
            if not forwarder.has_endpoint(endpoint):
                raise
            return open_inference_pb2.ModelReadyResponse(ready=False).SerializeToString()

    def server_live(
        request: open_inference_pb2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ServerLiveResponse:
        return open_inference_pb2.ServerLiveResponse(live=True)

    def server_ready(
        request: open_inference_pb2.ServerReadyRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ServerReadyResponse:
        return open_inference_pb2.ServerReadyResponse(ready=forwarder.is_ready)

    def server_metadata(
        request: open_inference_pb2.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ServerMetadataResponse:
        return open_inference_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=version, extensions=[]
        )

    def local(behavior: Any, request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=request_type.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )

    return grpc.method_handlers_generic_handler(
        V2_SERVICE,
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(routed(MODEL_INFER, "model_name")),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(routed(MODEL_METADATA, "name")),
            "ModelReady": grpc.unary_unary_rpc_method_handler(model_ready),
            "ServerLive": local(server_live, open_inference_pb2.ServerLiveRequest),
            "ServerReady": local(server_ready, open_inference_pb2.ServerReadyRequest),
            "ServerMetadata": local(server_metadata, open_inference_pb2.ServerMetadataRequest),
        },
    )
