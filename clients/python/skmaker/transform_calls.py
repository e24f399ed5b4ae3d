"""`TransformCalls`: the transform-job (batch transform) part of `Session`.

Mixed into `Session`, which owns the channel to the control and the call policy (deadlines,
retrying UNAVAILABLE for idempotent calls, mapping errors). Creates, describes, lists, stops
and waits for transform jobs on the control's TransformService. Results are boto3-shaped
dicts (`skmaker.transform_descriptions.transform_job_description`); arguments left None are
not sent, so the service's defaults apply, as SageMaker omits them from CreateTransformJob.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from skmaker import transform_descriptions
from skmaker.errors import UnexpectedStatusException
from skmaker.v1 import transform_job_pb2, transform_pb2, transform_pb2_grpc

_log = logging.getLogger("skmaker")

# A transform job's progress changes by the second: poll often, but not more than once a second.
DEFAULT_TRANSFORM_POLL_S = 1.0
TERMINAL_TRANSFORM_STATUSES = frozenset({"Completed", "Failed", "Stopped"})

TransformProgress = Callable[[dict[str, Any]], None]


class TransformCalls:
    """Transform-job calls of a `Session`; see that class for the connection settings."""

    # Provided by Session.
    _rpc: Callable[..., Any]
    _collect_pages: Callable[..., list[dict[str, Any]]]
    store_uri: Callable[[str], str]

    def _init_transform(self, channel: grpc.Channel) -> None:
        """Binds the TransformService stub."""
        self._transforms = transform_pb2_grpc.TransformServiceStub(channel)

    def create_transform_job(
        self,
        job_name: str,
        *,
        model_name: str,
        input_uri: str,
        output_uri: str | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        split_type: str | None = None,
        compression_type: str | None = None,
        strategy: str | None = None,
        max_payload: int | None = None,
        max_concurrent_transforms: int | None = None,
        assemble_with: str | None = None,
        input_filter: str | None = None,
        join_source: str | None = None,
        output_filter: str | None = None,
        instance_count: int = 1,
        environment: Mapping[str, str] | None = None,
        record_errors: bool = False,
        skip_header: bool = False,
    ) -> dict[str, Any]:
        """Creates a transform job; returns its description, InProgress (not retried).

        Arguments left None take the service's defaults (contract §4.2-4.3).

        Args:
            job_name: the transform job's name.
            model_name: the model to score with.
            input_uri: `store://` URI of one object, or of a prefix: every object below it is
                scored into its own `<key relative to the prefix>.out`.
            output_uri: `store://` prefix for the outputs; default
                `store://transform-jobs/<job_name>`.
            content_type: MIME type of the records, given to the model's input_fn.
            accept: MIME type of the outputs; default the model's (JSON for scikit-learn).
            split_type: "None" (a whole object is one request; the default) or "Line".
            compression_type: "None" or "Gzip".
            strategy: "MultiRecord" or "SingleRecord"; unset, the model's
                execution_parameters_fn decides, else MultiRecord.
            max_payload: MaxPayloadInMB, 1-100; unset, execution_parameters_fn, else 6.
            max_concurrent_transforms: mini-batches scored at once per worker; unset,
                execution_parameters_fn, else 1.
            assemble_with: "None" (concatenate the answers; default) or "Line".
            input_filter: JSONPath applied to each record before scoring (default "$").
            join_source: "None" (default) or "Input" (the output joins input and prediction).
            output_filter: JSONPath applied to each output record (default "$").
            instance_count: batch workers to use, at least 1.
            environment: extra environment variables for the model's handlers.
            record_errors: skmaker extension: write bad records to `<input>.out.errors` and
                keep scoring the file, instead of failing it.
            skip_header: skmaker extension: drop the first line of each file (a CSV header).

        Raises:
            AlreadyExists, InvalidArgument, NotFound: as the server decides (NotFound for a
                missing model or an input URI with nothing stored at or below it).
        """
        spec = transform_job_pb2.TransformJobSpec(
            model_name=model_name,
            input_uri=self.store_uri(input_uri),
            output_uri=self.store_uri(output_uri or ""),
            content_type=content_type or "",
            accept=accept or "",
            split_type=split_type or "",
            batch_strategy=strategy or "",
            max_payload_mb=max_payload or 0,
            max_concurrent_transforms=max_concurrent_transforms or 0,
            assemble_with=assemble_with or "",
            compression_type=compression_type or "",
            data_processing=transform_job_pb2.DataProcessing(
                input_filter=input_filter or "",
                join_source=join_source or "",
                output_filter=output_filter or "",
            ),
            instance_count=instance_count,
            environment={str(key): str(value) for key, value in (environment or {}).items()},
            record_errors=record_errors,
            skip_header=skip_header,
        )
        request = transform_pb2.CreateTransformJobRequest(name=job_name, spec=spec)
        response = self._rpc(self._transforms.CreateTransformJob, request, idempotent=False)
        return transform_descriptions.transform_job_description(response.transform_job)

    def describe_transform_job(self, job_name: str) -> dict[str, Any]:
        """A DescribeTransformJob-shaped dict of one job, with per-file progress in `Files`.

        Raises:
            NotFound: when there is no such transform job.
        """
        request = transform_pb2.DescribeTransformJobRequest(name=job_name)
        response = self._rpc(self._transforms.DescribeTransformJob, request, idempotent=True)
        return transform_descriptions.transform_job_description(response.transform_job)

    def list_transform_jobs(
        self,
        *,
        status_equals: str | None = None,
        name_contains_prefix: str = "",
        max_results: int | None = None,
    ) -> list[dict[str, Any]]:
        """Summaries of transform jobs, newest first (boto3's `TransformJobSummaries`).

        Args:
            status_equals: only jobs in this status (InProgress, Completed, Failed, ...).
            name_contains_prefix: only jobs whose name starts with this.
            max_results: stop after this many; all when None.
        """
        status = (
            transform_descriptions.transform_status_value(status_equals) if status_equals else 0
        )
        return self._collect_pages(
            self._transforms.ListTransformJobs,
            lambda size, token: transform_pb2.ListTransformJobsRequest(
                status=status,  # type: ignore[arg-type]
                name_prefix=name_contains_prefix,
                page_size=size,
                page_token=token,
            ),
            lambda response: [
                transform_descriptions.transform_job_summary(j) for j in response.transform_jobs
            ],
            max_results,
        )

    def stop_transform_job(self, name: str) -> dict[str, Any]:
        """Asks a transform job to stop; returns its description (Stopping or Stopped).

        Files already scored keep their `.out`; the others get none.

        Raises:
            NotFound: when there is no such transform job.
            FailedPrecondition: when the job has already ended.
        """
        request = transform_pb2.StopTransformJobRequest(name=name)
        response = self._rpc(self._transforms.StopTransformJob, request, idempotent=False)
        return transform_descriptions.transform_job_description(response.transform_job)

    def wait_for_transform_job(
        self,
        job_name: str,
        poll_s: float = DEFAULT_TRANSFORM_POLL_S,
        progress: TransformProgress | None = None,
    ) -> dict[str, Any]:
        """Polls until the transform job ends; returns its description.

        Polling starts fast (a small job ends in well under a second) and backs off to one
        describe per `poll_s`. A Stopped job returns normally, as in SageMaker.

        Args:
            job_name: the transform job.
            poll_s: the longest time between two describes.
            progress: called with every description read, the last one included.

        Raises:
            UnexpectedStatusException: when the job ended Failed ("Error for Transform job
                <name>: Failed. Reason: ..."; the reason names the failed files and lines).
            NotFound: when there is no such transform job.
        """
        interval_s = 0.1
        said = ""
        while True:
            description = self.describe_transform_job(job_name)
            if progress is not None:
                progress(description)
            waiting = description.get("StatusMessage", "")
            if waiting and waiting != said:
                # Why its shards wait (a runtime being built, no batch worker on it), once.
                _log.warning("transform job %s: %s", job_name, waiting)
            said = waiting
            status = description["TransformJobStatus"]
            if status in TERMINAL_TRANSFORM_STATUSES:
                if status == "Failed":
                    raise UnexpectedStatusException.for_transform_job(
                        job_name, status, description.get("FailureReason", "(none)")
                    )
                return description
            time.sleep(interval_s)
            interval_s = min(poll_s, interval_s * 1.5)
