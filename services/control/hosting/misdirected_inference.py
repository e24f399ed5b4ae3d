"""Answers inference calls sent to the control with where they are served instead.

Predict (skmaker.v1.InferenceService) and the Open Inference V2 calls
(inference.GRPCInferenceService) are served by an endpoint's replicas and by the gateway, never
by the control. Without a handler, a call sent to the control's address gets gRPC's bare
"Method not found!"; this handler answers UNIMPLEMENTED with the endpoint's address when the
request names a known endpoint (Predict's `endpoint_name`, V2's `model_name`), and otherwise
says to ask DescribeEndpoint or use the gateway. It is not listed in reflection or health:
the control does not serve these services.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message

from services.runtime.errors import Unimplemented
from skmaker.v1 import inference_pb2, open_inference_pb2

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
V2_SERVICE = open_inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

# The request type of each method whose request names an endpoint, and the field naming it.
_NAMED_BY: dict[str, tuple[type[message.Message], str]] = {
    f"/{INFERENCE_SERVICE}/Predict": (inference_pb2.PredictRequest, "endpoint_name"),
    f"/{V2_SERVICE}/ModelInfer": (open_inference_pb2.ModelInferRequest, "model_name"),
    f"/{V2_SERVICE}/ModelMetadata": (open_inference_pb2.ModelMetadataRequest, "name"),
    f"/{V2_SERVICE}/ModelReady": (open_inference_pb2.ModelReadyRequest, "name"),
}


def _endpoint_named(method: str, request: bytes) -> str:
    """The endpoint the request names, or "" when it names none or does not parse."""
    named_by = _NAMED_BY.get(method)
    if named_by is None:
        return ""
    request_type, field = named_by
    try:
        parsed = request_type.FromString(request)
    except message.DecodeError:
        return ""
    return str(getattr(parsed, field))


class MisdirectedInferenceHandler(grpc.GenericRpcHandler):
    """UNIMPLEMENTED for every inference method, saying where the call should go."""

    def __init__(self, endpoint_address: Callable[[str], str | None]) -> None:
        """Args:
        endpoint_address: the serving address of an endpoint by name; None when unknown.
        """
        self._endpoint_address = endpoint_address

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        if not method.startswith((f"/{INFERENCE_SERVICE}/", f"/{V2_SERVICE}/")):
            return None

        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            raise Unimplemented(self.explain(method, request))

        # No deserializer: the handler gets the request's bytes and parses what it needs.
        return grpc.unary_unary_rpc_method_handler(refuse)

    def explain(self, method: str, request: bytes) -> str:
        """The message of the UNIMPLEMENTED answer to `method` called with `request`."""
        service = method.strip("/").partition("/")[0]
        head = (
            f"{method.strip('/')} is not served by the control: {service} is served by each "
            "endpoint's replicas and by the gateway"
        )
        name = _endpoint_named(method, request)
        address = self._endpoint_address(name) if name else None
        if address:
            return f"{head}; send it to endpoint {name!r} at {address} (or the gateway)"
        if name:
            return f"{head}; there is no endpoint {name!r} (ListEndpoints shows the endpoints)"
        return f"{head}; DescribeEndpoint gives an endpoint's address"
