"""skmaker.v1.InferenceService: Predict, decoded, served by the replica, encoded.

No logic here and no try/except: `Replica` raises `SkmakerError`s that the runtime's
ErrorInterceptor turns into statuses. This is the hot path, so it is two calls deep.
"""

from __future__ import annotations

import grpc

from services.inference import convert
from services.inference.replica import Replica
from skmaker.v1 import inference_pb2, inference_pb2_grpc


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Predict with SageMaker's semantics: body + content type + accept -> body + content type."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._replica_id = replica.replica_id

    def Predict(
        self, request: inference_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> inference_pb2.PredictResponse:
        """Runs the model's handler chain on the request's payload."""
        body, content_type = self._replica.predict(
            convert.predict_payload(request),
            request.content_type,
            request.accept,
            request.endpoint_name,
        )
        return convert.predict_response(body, content_type, self._replica_id)
