"""The boto3-shaped SageMaker client's transform job operations (Describe/List/Stop)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skmaker.boto.client_base import BotoShapedClient
from skmaker.boto.paging import ListShape

_TRANSFORM_JOBS = ListShape(
    "TransformJobSummaries",
    "TransformJobName",
    "TransformJobArn",
    "transform-job",
    "TransformJobStatus",
)


class TransformJobOperations(BotoShapedClient):
    """DescribeTransformJob, ListTransformJobs, StopTransformJob."""

    def describe_transform_job(self, *, TransformJobName: str) -> dict[str, Any]:
        """DescribeTransformJob's response (plus skmaker's per-file progress in `Files`)."""
        description = self._call(
            "describe_transform_job",
            lambda: self._session.describe_transform_job(TransformJobName),
        )
        description["TransformJobArn"] = self._arn("transform-job", TransformJobName)
        return self._answer(description)

    def list_transform_jobs(
        self,
        *,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        CreationTimeAfter: datetime | None = None,
        CreationTimeBefore: datetime | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """ListTransformJobs' response: `TransformJobSummaries`, and `NextToken`."""
        del ignored
        return self._list(
            "list_transform_jobs",
            _TRANSFORM_JOBS,
            lambda: self._session.list_transform_jobs(status_equals=StatusEquals),
            next_token=NextToken,
            max_results=MaxResults,
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
        )

    def stop_transform_job(self, *, TransformJobName: str) -> dict[str, Any]:
        """StopTransformJob (empty response)."""
        self._call("stop_transform_job", lambda: self._session.stop_transform_job(TransformJobName))
        return self._answer({})
