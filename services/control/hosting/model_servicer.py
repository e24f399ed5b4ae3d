"""ModelService: decode the request, call `ModelRegistry`, encode the answer."""

from __future__ import annotations

import grpc

from services.control.hosting import convert
from services.control.hosting.model_registry import ModelRegistry
from skmaker.v1 import serving_pb2, serving_pb2_grpc


class ModelServicer(serving_pb2_grpc.ModelServiceServicer):
    """The public model API."""

    def __init__(self, models: ModelRegistry) -> None:
        """Serves `models`."""
        self._models = models

    def CreateModel(
        self, request: serving_pb2.CreateModelRequest, context: grpc.ServicerContext
    ) -> serving_pb2.CreateModelResponse:
        """Validates and stores a model."""
        model = self._models.create(convert.model_from_pb(request.model))
        return serving_pb2.CreateModelResponse(model=convert.model_to_pb(model))

    def DescribeModel(
        self, request: serving_pb2.DescribeModelRequest, context: grpc.ServicerContext
    ) -> serving_pb2.DescribeModelResponse:
        """Returns one model (for an endpoint's replicas, also a deleted one it serves)."""
        model = self._models.describe(request.name, endpoint_name=request.endpoint_name)
        return serving_pb2.DescribeModelResponse(model=convert.model_to_pb(model))

    def ListModels(
        self, request: serving_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> serving_pb2.ListModelsResponse:
        """Lists models newest first."""
        models = self._models.list(request.name_prefix)
        return serving_pb2.ListModelsResponse(models=[convert.model_to_pb(m) for m in models])

    def DeleteModel(
        self, request: serving_pb2.DeleteModelRequest, context: grpc.ServicerContext
    ) -> serving_pb2.DeleteModelResponse:
        """Removes a model; endpoints serving it keep their copy."""
        self._models.delete(request.name)
        return serving_pb2.DeleteModelResponse()
