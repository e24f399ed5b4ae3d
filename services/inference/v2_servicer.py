"""inference.GRPCInferenceService: the Open Inference Protocol V2 on the replica's port.

Liveness is the process answering; readiness is `Replica.is_ready` (loaded, not draining).
ModelReady and ModelMetadata answer NOT_FOUND for a name that is neither the endpoint's nor the
model's. ModelInfer runs the model's predict step (predict_fn or model.predict) on the decoded
tensor; a transform_fn model has none and answers FAILED_PRECONDITION (use Predict). No logic
and no try/except here: errors are `SkmakerError`s mapped by the runtime's ErrorInterceptor.
"""

from __future__ import annotations

import grpc

from services.inference import convert
from services.inference.replica import Replica
from skmaker.v1 import open_inference_pb2, open_inference_pb2_grpc

SERVER_NAME = "skmaker"


class OpenInferenceServicer(open_inference_pb2_grpc.GRPCInferenceServiceServicer):
    """The V2 inference service over one replica's model.

    Args:
        replica: The replica's serving state.
        version: skmaker's version, reported by ServerMetadata.
    """

    def __init__(self, replica: Replica, version: str) -> None:
        self._replica = replica
        self._version = version

    def ServerLive(
        self, request: open_inference_pb2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ServerLiveResponse:
        """Always live while the process answers."""
        return open_inference_pb2.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: open_inference_pb2.ServerReadyRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ServerReadyResponse:
        """Ready once the model is loaded and until draining starts."""
        return open_inference_pb2.ServerReadyResponse(ready=self._replica.is_ready)

    def ModelReady(
        self, request: open_inference_pb2.ModelReadyRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ModelReadyResponse:
        """Whether the named model is ready; NOT_FOUND for another name."""
        self._replica.check_model_name(request.name)
        return open_inference_pb2.ModelReadyResponse(ready=self._replica.is_ready)

    def ServerMetadata(
        self, request: open_inference_pb2.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ServerMetadataResponse:
        """Server name and version; no protocol extensions."""
        return open_inference_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=self._version, extensions=[]
        )

    def ModelMetadata(
        self, request: open_inference_pb2.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ModelMetadataResponse:
        """The model's platform and tensor shapes; UNAVAILABLE while it loads."""
        return convert.model_metadata(*self._replica.model_signature(request.name))

    def ModelInfer(
        self, request: open_inference_pb2.ModelInferRequest, context: grpc.ServicerContext
    ) -> open_inference_pb2.ModelInferResponse:
        """Predicts on the one input tensor; answers the output tensor `predict`."""
        data, raw = convert.infer_input(request)
        prediction = self._replica.infer(request.model_name, data)
        return convert.infer_response(
            prediction,
            model_name=request.model_name or self._replica.display_name,
            request_id=request.id,
            raw=raw,
        )
