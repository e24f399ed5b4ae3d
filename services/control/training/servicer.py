"""TrainingService: decode the request, call `TrainingJobs`, encode the answer."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from services.control.training import convert
from services.control.training.jobs import TrainingJobs
from skmaker.v1 import training_pb2, training_pb2_grpc


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    """The public training-job API."""

    def __init__(self, training_jobs: TrainingJobs) -> None:
        """Serves `training_jobs`."""
        self._jobs = training_jobs

    def CreateTrainingJob(
        self, request: training_pb2.CreateTrainingJobRequest, context: grpc.ServicerContext
    ) -> training_pb2.CreateTrainingJobResponse:
        """Stores and queues a job."""
        job = self._jobs.create(request.name, convert.spec_from_pb(request.spec))
        return training_pb2.CreateTrainingJobResponse(training_job=convert.training_job_to_pb(job))

    def DescribeTrainingJob(
        self, request: training_pb2.DescribeTrainingJobRequest, context: grpc.ServicerContext
    ) -> training_pb2.DescribeTrainingJobResponse:
        """Returns one job."""
        job = self._jobs.describe(request.name)
        return training_pb2.DescribeTrainingJobResponse(
            training_job=convert.training_job_to_pb(job)
        )

    def ListTrainingJobs(
        self, request: training_pb2.ListTrainingJobsRequest, context: grpc.ServicerContext
    ) -> training_pb2.ListTrainingJobsResponse:
        """Lists jobs newest first."""
        page = self._jobs.list(
            status=convert.status_from_pb(request.status),
            name_prefix=request.name_prefix,
            tuning_job_name=request.tuning_job_name,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return training_pb2.ListTrainingJobsResponse(
            training_jobs=[convert.training_job_to_pb(job) for job in page.jobs],
            next_page_token=page.next_page_token,
        )

    def StopTrainingJob(
        self, request: training_pb2.StopTrainingJobRequest, context: grpc.ServicerContext
    ) -> training_pb2.StopTrainingJobResponse:
        """Stops a job, or asks its worker to."""
        job = self._jobs.stop(request.name)
        return training_pb2.StopTrainingJobResponse(training_job=convert.training_job_to_pb(job))

    def GetTrainingJobLogs(
        self, request: training_pb2.GetTrainingJobLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[training_pb2.GetTrainingJobLogsResponse]:
        """Streams log lines; with follow, until the job ends or the caller cancels."""
        batches = self._jobs.follow_logs(
            request.name, request.from_sequence, request.follow, is_active=context.is_active
        )
        for batch in batches:
            yield convert.log_batch_to_pb(batch)
