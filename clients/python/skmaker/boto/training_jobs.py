"""The boto3-shaped SageMaker client's training job operations (Create/Describe/List/Stop)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from skmaker import hyperparameters as hp
from skmaker.boto.client_base import BotoShapedClient
from skmaker.boto.paging import ListShape
from skmaker.inputs import TrainingInput

_TRAINING_JOBS = ListShape(
    "TrainingJobSummaries", "TrainingJobName", "TrainingJobArn", "training-job", "TrainingJobStatus"
)


class TrainingJobOperations(BotoShapedClient):
    """CreateTrainingJob, DescribeTrainingJob, ListTrainingJobs, StopTrainingJob."""

    def create_training_job(
        self,
        *,
        TrainingJobName: str,
        AlgorithmSpecification: Mapping[str, Any],
        HyperParameters: Mapping[str, str] | None = None,
        InputDataConfig: Sequence[Mapping[str, Any]] = (),
        OutputDataConfig: Mapping[str, Any] | None = None,
        StoppingCondition: Mapping[str, Any] | None = None,
        Environment: Mapping[str, str] | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """CreateTrainingJob the way the SageMaker SDK's framework estimators send it: the
        script in the `sagemaker_program` hyperparameter, its code archive in
        `sagemaker_submit_directory` (both JSON-encoded); the image, role and resources are
        ignored. Returns `{"TrainingJobArn": ...}`.
        """
        del ignored  # TrainingImage, RoleArn, ResourceConfig, ...: AWS-only
        encoded = dict(HyperParameters or {})
        program = hp.decode_value(encoded.get(hp.PROGRAM, '""'))
        source = hp.decode_value(encoded.get(hp.SUBMIT_DIRECTORY, '""'))
        channels = {}
        for channel in InputDataConfig:
            source_data = channel.get("DataSource", {}).get("S3DataSource", {})
            channels[channel["ChannelName"]] = TrainingInput(
                source_data.get("S3Uri", ""), content_type=channel.get("ContentType")
            )
        self._call(
            "create_training_job",
            lambda: self._session.create_training_job(
                TrainingJobName,
                entry_point=str(program),
                source_uri=str(source),
                hyperparameters=encoded,
                channels=channels,
                metric_definitions=AlgorithmSpecification.get("MetricDefinitions", ()),
                environment=Environment,
                max_run=int((StoppingCondition or {}).get("MaxRuntimeInSeconds", 86400)),
                output_uri=str((OutputDataConfig or {}).get("S3OutputPath", "")),
            ),
        )
        return self._answer({"TrainingJobArn": self._arn("training-job", TrainingJobName)})

    def describe_training_job(self, *, TrainingJobName: str) -> dict[str, Any]:
        """DescribeTrainingJob's response."""
        return self._answer(
            self._call(
                "describe_training_job",
                lambda: self._session.describe_training_job(TrainingJobName),
            )
        )

    def list_training_jobs(
        self,
        *,
        NextToken: str | None = None,
        MaxResults: int | None = None,
        CreationTimeAfter: datetime | None = None,
        CreationTimeBefore: datetime | None = None,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        SortBy: str | None = None,
        SortOrder: str | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """ListTrainingJobs' response: `TrainingJobSummaries` (with `TrainingJobArn`), and
        `NextToken` while more remain."""
        del ignored
        return self._list(
            "list_training_jobs",
            _TRAINING_JOBS,
            lambda: self._session.list_training_jobs(status_equals=StatusEquals),
            next_token=NextToken,
            max_results=MaxResults,
            name_contains=NameContains,
            creation_time_after=CreationTimeAfter,
            creation_time_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
        )

    def stop_training_job(self, *, TrainingJobName: str) -> dict[str, Any]:
        """StopTrainingJob: asks the job to stop (empty response)."""
        self._call("stop_training_job", lambda: self._session.stop_training_job(TrainingJobName))
        return self._answer({})
