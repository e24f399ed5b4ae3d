"""DispatchService: the worker-facing acquire / heartbeat / complete API over the scheduler,
and the replicas' runtime reports."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from services.control.dispatch import convert
from services.control.dispatch.scheduler import Scheduler
from services.control.hosting.convert import predict_path_from_pb
from services.control.hosting.endpoint_values import PredictPath
from services.control.training.convert import runtime_from_pb
from services.control.training.values import RuntimeVersions
from services.runtime.errors import Unimplemented
from skmaker.v1 import dispatch_pb2, dispatch_pb2_grpc

# (endpoint name, replica id, model name, serving runtime, predict path) -> the runtime
# mismatch event and the fast path refusal event, each "" when there was none.
RuntimeReport = Callable[[str, str, str, RuntimeVersions, PredictPath | None], tuple[str, str]]


class DispatchServicer(dispatch_pb2_grpc.DispatchServiceServicer):
    """Leases tasks to workers and takes their reports."""

    def __init__(self, scheduler: Scheduler, report_runtime: RuntimeReport | None = None) -> None:
        """Serves `scheduler`; replica runtime reports go to `report_runtime` when given."""
        self._scheduler = scheduler
        self._report_runtime = report_runtime

    def AcquireTask(
        self, request: dispatch_pb2.AcquireTaskRequest, context: grpc.ServicerContext
    ) -> dispatch_pb2.AcquireTaskResponse:
        """Long-polls for a task; an empty answer means none became ready in time."""
        lease = self._scheduler.acquire(
            request.worker_id,
            convert.task_kinds_from_pb(request.kinds),
            request.wait_seconds,
            is_active=context.is_active,
            script_runtime=request.script_runtime,
        )
        if lease is None:
            return dispatch_pb2.AcquireTaskResponse()
        return dispatch_pb2.AcquireTaskResponse(task=convert.lease_to_pb(lease))

    def Heartbeat(
        self, request: dispatch_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> dispatch_pb2.HeartbeatResponse:
        """Renews the lease and stores the worker's news."""
        answer = self._scheduler.heartbeat(convert.heartbeat_from_pb(request))
        return convert.heartbeat_answer_to_pb(answer)

    def CompleteTask(
        self, request: dispatch_pb2.CompleteTaskRequest, context: grpc.ServicerContext
    ) -> dispatch_pb2.CompleteTaskResponse:
        """Ends the task as the worker reports."""
        self._scheduler.complete(convert.completion_from_pb(request))
        return dispatch_pb2.CompleteTaskResponse()

    def ReportReplicaRuntime(
        self, request: dispatch_pb2.ReportReplicaRuntimeRequest, context: grpc.ServicerContext
    ) -> dispatch_pb2.ReportReplicaRuntimeResponse:
        """Compares a replica's runtime with its model's training runtime and keeps what
        answers its predicts (services.control.hosting.runtime_versions)."""
        if self._report_runtime is None:
            raise Unimplemented("this control keeps no endpoints")
        path = None
        if request.HasField("predict_path"):
            path = predict_path_from_pb(request.model_name, request.predict_path)
        mismatch, refusal = self._report_runtime(
            request.endpoint_name,
            request.replica_id,
            request.model_name,
            runtime_from_pb(request.runtime_versions),
            path,
        )
        return dispatch_pb2.ReportReplicaRuntimeResponse(mismatch=mismatch, refusal=refusal)
