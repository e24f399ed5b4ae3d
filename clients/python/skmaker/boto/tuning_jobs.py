"""The boto3-shaped SageMaker client's hyperparameter tuning job operations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skmaker.boto.client_base import BotoShapedClient
from skmaker.boto.paging import ListShape, filtered

_TUNING_JOBS = ListShape(
    "HyperParameterTuningJobSummaries",
    "HyperParameterTuningJobName",
    "HyperParameterTuningJobArn",
    "hyper-parameter-tuning-job",
    "HyperParameterTuningJobStatus",
)
_TRIALS = ListShape(
    "TrainingJobSummaries", "TrainingJobName", "TrainingJobArn", "training-job", "TrainingJobStatus"
)


class TuningJobOperations(BotoShapedClient):
    """DescribeHyperParameterTuningJob, ListHyperParameterTuningJobs,
    ListTrainingJobsForHyperParameterTuningJob, StopHyperParameterTuningJob."""

    def describe_hyper_parameter_tuning_job(
        self,
        *,
        HyperParameterTuningJobName: str,
    ) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob's response (plus skmaker's `TrainingJobs`)."""
        description = self._call(
            "describe_hyper_parameter_tuning_job",
            lambda: self._session.describe_tuning_job(HyperParameterTuningJobName),
        )
        description["HyperParameterTuningJobArn"] = self._arn(
            "hyper-parameter-tuning-job", HyperParameterTuningJobName
        )
        return self._answer(description)

    def list_hyper_parameter_tuning_jobs(
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
        """ListHyperParameterTuningJobs' response: `HyperParameterTuningJobSummaries`."""
        del ignored
        return self._list(
            "list_hyper_parameter_tuning_jobs",
            _TUNING_JOBS,
            lambda: self._session.list_tuning_jobs(status_equals=StatusEquals),
            next_token=NextToken,
            max_results=MaxResults,
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
        )

    def list_training_jobs_for_hyper_parameter_tuning_job(
        self,
        *,
        HyperParameterTuningJobName: str,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        StatusEquals: str | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
    ) -> dict[str, Any]:
        """The trials' `TrainingJobSummaries`, by default newest first; SortBy
        FinalObjectiveMetricValue sorts by the objective."""
        trials = self._call(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            lambda: self._session.list_training_jobs_for_tuning_job(HyperParameterTuningJobName),
        )
        if StatusEquals:
            trials = [t for t in trials if t["TrainingJobStatus"] == StatusEquals]
        if SortBy == "FinalObjectiveMetricValue":
            scored = [t for t in trials if "FinalHyperParameterTuningJobObjectiveMetric" in t]
            scored.sort(
                key=lambda t: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
                reverse=(SortOrder or "Descending") == "Descending",
            )
            trials = scored + [t for t in trials if t not in scored]
        else:
            trials = filtered(
                trials,
                "TrainingJobName",
                sort_by=SortBy,
                sort_order=SortOrder,
                status_key="TrainingJobStatus",
            )
        return self._list_page(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            _TRIALS,
            trials,
            NextToken,
            MaxResults,
        )

    def stop_hyper_parameter_tuning_job(
        self,
        *,
        HyperParameterTuningJobName: str,
    ) -> dict[str, Any]:
        """StopHyperParameterTuningJob (empty response)."""
        self._call(
            "stop_hyper_parameter_tuning_job",
            lambda: self._session.stop_tuning_job(HyperParameterTuningJobName),
        )
        return self._answer({})
