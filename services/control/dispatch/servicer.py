"""DispatchService: the worker-facing acquire / heartbeat / complete API over the scheduler."""

from __future__ import annotations

import grpc

from services.control.dispatch import convert
from services.control.dispatch.scheduler import Scheduler
from skmaker.v1 import dispatch_pb2, dispatch_pb2_grpc


class DispatchServicer(dispatch_pb2_grpc.DispatchServiceServicer):
    """Leases tasks to workers and takes their reports."""

    def __init__(self, scheduler: Scheduler) -> None:
        """Serves `scheduler`."""
        self._scheduler = scheduler

    def AcquireTask(
        self, request: dispatch_pb2.AcquireTaskRequest, context: grpc.ServicerContext
    ) -> dispatch_pb2.AcquireTaskResponse:
        """Long-polls for a task; an empty answer means none became ready in time."""
        lease = self._scheduler.acquire(
            request.worker_id,
            convert.task_kinds_from_pb(request.kinds),
            request.wait_seconds,
            is_active=context.is_active,
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
