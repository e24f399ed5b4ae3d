"""Replicas report the runtime they serve with; the control compares it with the training one.

A model pickled under one scikit-learn (or numpy, joblib, Python) may fail to load, or load
and predict differently, under another; SageMaker's container pins the versions per framework
version, skmaker's replicas run whatever their interpreter has. Each replica reports its
runtime once its model is loaded (DispatchService.ReportReplicaRuntime); when it differs from
what the model's training job ran with, the endpoint gets an event naming the replica, the
model and every difference. Models whose training runtime is not known (no training job, or
created before versions were recorded) are not compared.

The same report says what answers the replica's predict calls (the verified fast path's
runtime, scikit-learn, or the user's handler); it is kept for DescribeEndpoint, and a fast path
refused by its verification becomes an endpoint event (`Endpoints.record_predict_path`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from services.control.hosting.endpoint_values import PredictPath
from services.control.hosting.endpoints import Endpoints
from services.control.hosting.model_registry import ModelRegistry
from services.control.training.values import RuntimeVersions
from services.runtime.errors import InvalidArgument
from services.runtime.versions import Runtime, differences

log = logging.getLogger(__name__)


class ReplicaRuntimes:
    """Compares reported serving runtimes with the models' training runtimes."""

    def __init__(self, endpoints: Endpoints, models: ModelRegistry) -> None:
        self._endpoints = endpoints
        self._models = models

    def report(
        self,
        endpoint_name: str,
        replica_id: str,
        model_name: str,
        serving: RuntimeVersions,
        predict_path: PredictPath | None = None,
    ) -> tuple[str, str]:
        """Keeps the replica's predict path; records events for a runtime differing from the
        model's training runtime and for a refused fast path.

        Returns:
            (the runtime mismatch event, the refusal event); each empty when there was none.

        Raises:
            InvalidArgument: the endpoint or model name is missing.
            NotFound: no such endpoint or model.
        """
        if not endpoint_name or not model_name:
            raise InvalidArgument("endpoint_name and model_name are required")
        self._endpoints.describe(endpoint_name)  # NotFound for an unknown endpoint
        # A model deleted while this endpoint still serves it is still the one to compare with.
        model = self._models.describe(model_name, endpoint_name=endpoint_name)
        refusal = ""
        if predict_path is not None and replica_id:
            refusal = self._endpoints.record_predict_path(endpoint_name, replica_id, predict_path)
        found = differences(Runtime(**asdict(model.runtime_versions)), Runtime(**asdict(serving)))
        if not found:
            return "", refusal
        message = (
            f"replica {replica_id or '(unnamed)'} serves model {model_name} with "
            + ", ".join(found)
            + "; pin the training versions in the code's requirements.txt to serve it as trained"
        )
        log.warning("endpoint %s: %s", endpoint_name, message)
        self._endpoints.record_event(endpoint_name, message)
        return message, refusal
