"""TuningService: decode the request, call `TuningJobs`, encode the answer."""

from __future__ import annotations

import grpc

from services.control.tuning import convert
from services.control.tuning.jobs import TuningJobs
from skmaker.v1 import tuning_pb2, tuning_pb2_grpc


class TuningServicer(tuning_pb2_grpc.TuningServiceServicer):
    """The public tuning-job API."""

    def __init__(self, tuning_jobs: TuningJobs) -> None:
        """Serves `tuning_jobs`."""
        self._jobs = tuning_jobs

    def CreateTuningJob(
        self, request: tuning_pb2.CreateTuningJobRequest, context: grpc.ServicerContext
    ) -> tuning_pb2.CreateTuningJobResponse:
        """Validates and starts a tuning job."""
        job = self._jobs.create(request.name, convert.tuning_spec_from_pb(request.spec))
        return tuning_pb2.CreateTuningJobResponse(tuning_job=convert.tuning_job_to_pb(job))

    def DescribeTuningJob(
        self, request: tuning_pb2.DescribeTuningJobRequest, context: grpc.ServicerContext
    ) -> tuning_pb2.DescribeTuningJobResponse:
        """Returns one job with its trials."""
        job = self._jobs.describe(request.name)
        return tuning_pb2.DescribeTuningJobResponse(tuning_job=convert.tuning_job_to_pb(job))

    def ListTuningJobs(
        self, request: tuning_pb2.ListTuningJobsRequest, context: grpc.ServicerContext
    ) -> tuning_pb2.ListTuningJobsResponse:
        """Lists jobs newest first, without their trials."""
        page = self._jobs.list(
            status=convert.tuning_status_from_pb(request.status),
            name_prefix=request.name_prefix,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return tuning_pb2.ListTuningJobsResponse(
            tuning_jobs=[convert.tuning_job_to_pb(job) for job in page.jobs],
            next_page_token=page.next_page_token,
        )

    def StopTuningJob(
        self, request: tuning_pb2.StopTuningJobRequest, context: grpc.ServicerContext
    ) -> tuning_pb2.StopTuningJobResponse:
        """Stops launching trials and stops the running ones."""
        job = self._jobs.stop(request.name)
        return tuning_pb2.StopTuningJobResponse(tuning_job=convert.tuning_job_to_pb(job))
