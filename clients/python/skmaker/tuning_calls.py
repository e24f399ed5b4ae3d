"""`TuningCalls`: the hyperparameter-tuning part of `Session`.

Mixed into `Session`, which owns the channel to the control and the call policy (deadlines,
retrying UNAVAILABLE for idempotent calls, mapping errors). Creates, describes, lists and stops
tuning jobs on the control's TuningService; results are boto3-shaped dicts
(`skmaker.descriptions.tuning_job_description`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from skmaker import descriptions
from skmaker.inputs import TrainingInput
from skmaker.job_specs import parameter_ranges_pb, training_job_spec
from skmaker.v1 import tuning_job_pb2, tuning_pb2, tuning_pb2_grpc


class TuningCalls:
    """Tuning-job calls of a `Session`; see that class for the connection settings."""

    # Provided by Session.
    _rpc: Callable[..., Any]
    _collect_pages: Callable[..., list[dict[str, Any]]]
    store_uri: Callable[[str], str]
    _channels_in_store: Callable[[Mapping[str, TrainingInput]], dict[str, TrainingInput]]

    def _init_tuning(self, channel: grpc.Channel) -> None:
        """Binds the TuningService stub."""
        self._tuning = tuning_pb2_grpc.TuningServiceStub(channel)

    def create_tuning_job(
        self,
        name: str,
        *,
        training_job: Mapping[str, Any],
        objective_metric_name: str,
        parameter_ranges: Mapping[str, Sequence[Mapping[str, Any]]],
        strategy: str = "Bayesian",
        objective_type: str = "Maximize",
        max_jobs: int | None = None,
        max_parallel_jobs: int = 1,
        early_stopping_type: str = "Off",
        random_seed: int | None = None,
        warm_start_parents: Sequence[str] = (),
        warm_start_type: str = "",
        hyperband_min_resource: int = 0,
        hyperband_max_resource: int = 0,
    ) -> dict[str, Any]:
        """Creates a hyperparameter tuning job; returns its description (not retried).

        Args:
            name: the tuning job's name (at most 32 chars).
            training_job: the template of every trial, as keyword arguments of
                `create_training_job` without the name; its hyperparameters are the static
                ones and its metric definitions must name the objective.
            objective_metric_name: the metric the tuner optimizes (its final value).
            parameter_ranges: boto3's `ParameterRanges` (`IntegerParameterRanges`,
                `ContinuousParameterRanges`, `CategoricalParameterRanges`).
            strategy: Bayesian, Random, Grid or Hyperband.
            objective_type: Maximize or Minimize.
            max_jobs: trials in total; None means 1 (Grid: every combination).
            max_parallel_jobs: trials running at once.
            early_stopping_type: Off or Auto.
            random_seed: makes the sequence of trials reproducible.
            warm_start_parents: earlier tuning jobs whose trials seed this one.
            warm_start_type: IdenticalDataAndAlgorithm or TransferLearning (with parents).
            hyperband_min_resource: Hyperband's smallest resource; 0 means 1.
            hyperband_max_resource: Hyperband's largest resource; 0 lets the tuner infer it.

        Raises:
            AlreadyExists, InvalidArgument, NotFound: as the server decides.
        """
        template = dict(training_job)
        for field in ("source_uri", "output_uri"):
            if field in template:
                template[field] = self.store_uri(template[field])
        if "channels" in template:
            template["channels"] = self._channels_in_store(template["channels"])
        spec = tuning_job_pb2.TuningJobSpec(
            training_job_template=training_job_spec(**template),
            objective_metric_name=objective_metric_name,
            objective_type=objective_type,
            parameter_ranges=parameter_ranges_pb(parameter_ranges),
            strategy=strategy,
            max_jobs=max_jobs or 0,
            max_parallel_jobs=max_parallel_jobs,
            early_stopping_type=early_stopping_type,
            random_seed=random_seed,
            warm_start_parent_names=list(warm_start_parents),
            warm_start_type=warm_start_type,
            hyperband_min_resource=hyperband_min_resource,
            hyperband_max_resource=hyperband_max_resource,
        )
        request = tuning_pb2.CreateTuningJobRequest(name=name, spec=spec)
        response = self._rpc(self._tuning.CreateTuningJob, request, idempotent=False)
        return descriptions.tuning_job_description(response.tuning_job)

    def describe_tuning_job(self, tuning_job_name: str) -> dict[str, Any]:
        """A DescribeHyperParameterTuningJob-shaped dict (see `skmaker.descriptions`).

        Raises:
            NotFound: when there is no such tuning job.
        """
        request = tuning_pb2.DescribeTuningJobRequest(name=tuning_job_name)
        response = self._rpc(self._tuning.DescribeTuningJob, request, idempotent=True)
        return descriptions.tuning_job_description(response.tuning_job)

    def list_tuning_jobs(
        self,
        *,
        status_equals: str | None = None,
        name_contains_prefix: str = "",
        max_results: int | None = None,
    ) -> list[dict[str, Any]]:
        """Summaries of tuning jobs, newest first (boto3's `HyperParameterTuningJobSummaries`).

        Args:
            status_equals: only jobs in this status (InProgress, Completed, Failed, ...).
            name_contains_prefix: only jobs whose name starts with this.
            max_results: stop after this many; all when None.
        """
        status = descriptions.tuning_status_value(status_equals) if status_equals else 0
        return self._collect_pages(
            self._tuning.ListTuningJobs,
            lambda size, token: tuning_pb2.ListTuningJobsRequest(
                status=status,  # type: ignore[arg-type]
                name_prefix=name_contains_prefix,
                page_size=size,
                page_token=token,
            ),
            lambda response: [descriptions.tuning_job_summary(j) for j in response.tuning_jobs],
            max_results,
        )

    def list_training_jobs_for_tuning_job(self, tuning_job_name: str) -> list[dict[str, Any]]:
        """The tuning job's trials (ListTrainingJobsForHyperParameterTuningJob), by number.

        Raises:
            NotFound: when there is no such tuning job.
        """
        return list(self.describe_tuning_job(tuning_job_name)["TrainingJobs"])

    def stop_tuning_job(self, tuning_job_name: str) -> dict[str, Any]:
        """Stops launching trials and stops the running ones; returns the description.

        Raises:
            NotFound: when there is no such tuning job.
            FailedPrecondition: when the tuning job has already ended.
        """
        request = tuning_pb2.StopTuningJobRequest(name=tuning_job_name)
        response = self._rpc(self._tuning.StopTuningJob, request, idempotent=False)
        return descriptions.tuning_job_description(response.tuning_job)
