"""TransformService: decode the request, call `TransformJobs`, encode the answer."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from services.control.transform import convert
from services.control.transform.jobs import TransformJobs
from services.control.transform.values import TransformJob
from skmaker.v1 import transform_pb2, transform_pb2_grpc


class TransformServicer(transform_pb2_grpc.TransformServiceServicer):
    """The public transform-job API."""

    def __init__(
        self,
        transform_jobs: TransformJobs,
        status_message: Callable[[TransformJob], str] = lambda job: "",
    ) -> None:
        """Serves `transform_jobs`; `status_message` says why a job waits (TransformWaits)."""
        self._jobs = transform_jobs
        self._status_message = status_message

    def CreateTransformJob(
        self, request: transform_pb2.CreateTransformJobRequest, context: grpc.ServicerContext
    ) -> transform_pb2.CreateTransformJobResponse:
        """Validates, plans shards and queues them."""
        job = self._jobs.create(request.name, convert.spec_from_pb(request.spec))
        return transform_pb2.CreateTransformJobResponse(transform_job=convert.job_to_pb(job))

    def DescribeTransformJob(
        self, request: transform_pb2.DescribeTransformJobRequest, context: grpc.ServicerContext
    ) -> transform_pb2.DescribeTransformJobResponse:
        """Returns one job with per-file progress."""
        job = self._jobs.describe(request.name)
        message = convert.job_to_pb(job)
        message.status_message = self._status_message(job)
        return transform_pb2.DescribeTransformJobResponse(transform_job=message)

    def ListTransformJobs(
        self, request: transform_pb2.ListTransformJobsRequest, context: grpc.ServicerContext
    ) -> transform_pb2.ListTransformJobsResponse:
        """Lists jobs newest first."""
        page = self._jobs.list(
            status=convert.status_from_pb(request.status),
            name_prefix=request.name_prefix,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return convert.page_to_pb(page)

    def StopTransformJob(
        self, request: transform_pb2.StopTransformJobRequest, context: grpc.ServicerContext
    ) -> transform_pb2.StopTransformJobResponse:
        """Stops a job: queued shards are withdrawn, running ones told to stop."""
        job = self._jobs.stop(request.name)
        return transform_pb2.StopTransformJobResponse(transform_job=convert.job_to_pb(job))
