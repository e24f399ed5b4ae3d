"""The replica's gRPC link to the control: describe its model, download archives, read versions,
report the runtime it serves with and what answers its predicts.

Implements `model_loader.ModelSource`. Every call has a deadline and is retried while the
control answers UNAVAILABLE (it may be restarting), so a replica started during a control
restart still loads; any other failure becomes `ModelLoadFailed` with a reason naming the call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.auth import token_metadata
from services.runtime.call_limits import WORKER_MARKER
from services.runtime.tls import ClientTls, open_channel
from services.runtime.versions import Runtime
from services.sagemaker.serving.fast_path import PredictPath
from services.sagemaker.serving.model_loader import ModelLoadFailed, ModelSpec
from skmaker.v1 import (
    artifacts_pb2_grpc,
    dispatch_pb2,
    dispatch_pb2_grpc,
    model_pb2,
    serving_pb2,
    serving_pb2_grpc,
    training_job_pb2,
    training_pb2,
    training_pb2_grpc,
    transfer,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_DESCRIBE_TIMEOUT_S = 30.0
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class ControlModelSource:
    """Reads a model and its archives from the control's ModelService and ArtifactService.

    Args:
        address: The control's gRPC address.
        token: Bearer token, empty when the control has none.
        timeout_s: Deadline of one download, and how long to keep retrying an unreachable
            control.
        endpoint_name: The endpoint this replica serves, sent with DescribeModel so that a
            model deleted while the endpoint serves it is still described for it.
        tls: TLS towards the control; None for plaintext.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str = "",
        timeout_s: float = 300.0,
        endpoint_name: str = "",
        tls: ClientTls | None = None,
    ) -> None:
        self._address = address
        self._endpoint_name = endpoint_name
        self._channel = open_channel(
            address,
            tls=tls,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self._models = serving_pb2_grpc.ModelServiceStub(self._channel)
        self._training = training_pb2_grpc.TrainingServiceStub(self._channel)
        self._artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self._channel)
        self._dispatch = dispatch_pb2_grpc.DispatchServiceStub(self._channel)
        # grpc_health's type stubs declare no methods on its stub.
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)
        # Marked as a worker's: the model download uses the control's worker capacity, so
        # users' open streams cannot keep a replica from loading its model.
        self._metadata = (*token_metadata(token), WORKER_MARKER)
        self._timeout_s = timeout_s

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def control_answers(self, timeout_s: float = 2.0) -> bool:
        """True when the control answers a health check at all (whatever its status: a
        draining or starting control is there); False when unreachable or silent."""
        try:
            self._health.Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as err:
            return err.code() not in _RETRYABLE
        return True

    def describe_model(self, name: str) -> ModelSpec:
        """DescribeModel(name), as a `ModelSpec`."""
        request = serving_pb2.DescribeModelRequest(name=name, endpoint_name=self._endpoint_name)
        response = self._call(
            lambda: self._models.DescribeModel(
                request, timeout=_DESCRIBE_TIMEOUT_S, metadata=self._metadata
            ),
            f"DescribeModel({name!r})",
        )
        model = response.model
        return ModelSpec(
            name=model.name,
            model_data_uri=model.model_data_uri,
            entry_point=model.entry_point,
            source_uri=model.source_uri,
            environment=dict(model.environment),
            training_job_name=model.training_job_name,
        )

    def download(self, uri: str, dest: Path) -> None:
        """Downloads `uri` into `dest`; `transfer.download_file` checks size and sha256."""
        try:
            self._call(
                lambda: transfer.download_file(
                    self._artifacts, uri, dest, timeout_s=self._timeout_s, metadata=self._metadata
                ),
                f"downloading {uri}",
            )
        except OSError as err:
            raise ModelLoadFailed(f"downloading {uri} failed: {err}") from err

    def trained_sklearn_version(self, training_job_name: str) -> str | None:
        """runtime_versions.sklearn of the training job; None when it cannot be read.

        Only feeds a warning, so a failure here never stops the replica.
        """
        request = training_pb2.DescribeTrainingJobRequest(name=training_job_name)
        try:
            response = self._training.DescribeTrainingJob(
                request, timeout=_DESCRIBE_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.RpcError as err:
            log.warning(
                "cannot read training job %s for its scikit-learn version: %s",
                training_job_name,
                err.details(),
            )
            return None
        return response.training_job.runtime_versions.sklearn or None

    def report_runtime(
        self,
        endpoint_name: str,
        replica_id: str,
        model_name: str,
        runtime: Runtime,
        predict_path: PredictPath,
    ) -> tuple[str, str]:
        """Tells the control the runtime this replica serves `model_name` with, and its path.

        Returns:
            The control's runtime mismatch event and fast path refusal event, each empty when
            there was none or the report failed (they only feed events and DescribeEndpoint, so
            a failure never stops the replica).
        """
        request = dispatch_pb2.ReportReplicaRuntimeRequest(
            endpoint_name=endpoint_name,
            replica_id=replica_id,
            model_name=model_name,
            runtime_versions=training_job_pb2.RuntimeVersions(**runtime.as_dict()),
            predict_path=model_pb2.PredictPath(
                name=predict_path.name,
                reason=predict_path.reason,
                refused=predict_path.refused,
                max_rows=predict_path.max_rows or 0,
            ),
        )
        try:
            response = self._dispatch.ReportReplicaRuntime(
                request, timeout=_DESCRIBE_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.RpcError as err:
            log.warning("cannot report this replica's runtime: %s", err.details())
            return "", ""
        return response.mismatch, response.refusal

    def _call(self, call: Callable[[], T], what: str) -> T:
        deadline = time.monotonic() + self._timeout_s
        delay = 0.1
        while True:
            try:
                return call()
            except grpc.RpcError as err:
                code = err.code()
                if code not in _RETRYABLE or time.monotonic() + delay > deadline:
                    raise ModelLoadFailed(
                        f"{what} on the control at {self._address} failed: "
                        f"{code.name}: {err.details()}"
                    ) from err
                log.warning("%s: control unreachable (%s); retrying", what, code.name)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
