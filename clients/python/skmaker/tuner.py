"""`HyperparameterTuner`: SageMaker's automatic model tuning, run by skmaker's control.

    tuner = HyperparameterTuner(
        estimator,                                   # an SKLearn estimator
        objective_metric_name="validation:accuracy",
        hyperparameter_ranges={"max_leaf_nodes": IntegerParameter(2, 30),
                               "criterion": CategoricalParameter(["gini", "entropy"])},
        metric_definitions=[{"Name": "validation:accuracy",
                             "Regex": "validation accuracy: ([0-9.]+)"}],
        max_jobs=6, max_parallel_jobs=2,
    )
    tuner.fit({"train": train_uri})                  # waits for every trial
    tuner.best_training_job()                        # the best trial's training job name
    predictor = tuner.deploy(initial_instance_count=1)
    tuner.analytics().dataframe()                    # one row per trial (needs pandas)

`fit()` packs and uploads the estimator's code exactly as `SKLearn.fit` does and creates a
tuning job whose template is the estimator's training job: its hyperparameters are the static
ones (a tuned name drops its static value), `sagemaker_estimator_class_name` and
`sagemaker_estimator_module` are added as the SageMaker SDK adds them for Framework
estimators, and the control adds `_tuning_objective_metric`. Every trial is an ordinary
training job named `<tuning-job>-<NNN>-<8 hex>`. Arguments that only mean something on AWS
(`tags`, `max_runtime_in_seconds`, ...) are accepted and ignored with one warning.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from skmaker import hyperparameters as hp
from skmaker import naming
from skmaker.analytics import HyperparameterTuningJobAnalytics
from skmaker.arguments import warn_ignored
from skmaker.autoscaling import AutoScalingPolicy
from skmaker.deserializers import BaseDeserializer
from skmaker.errors import UnexpectedStatusException
from skmaker.estimator import SKLearn
from skmaker.inputs import TrainingInput, channels_from_inputs
from skmaker.model import DEPLOY_SAGEMAKER_ONLY_ARGS
from skmaker.parameter import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    NumericParameter,
    ParameterRange,
)
from skmaker.predictor import Predictor
from skmaker.serializers import BaseSerializer
from skmaker.session import Session
from skmaker.v1 import names

log = logging.getLogger("skmaker")

TUNING_JOB_NAME_MAX_LENGTH = names.MAX_NAME_LENGTH[names.Resource.TUNING_JOB]
DEFAULT_BASE_TUNING_JOB_NAME = "sklearn-tuning"
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
# What the SageMaker SDK writes for its SKLearn estimator (sagemaker/sklearn/estimator.py).
ESTIMATOR_CLASS_NAME = "SKLearn"
ESTIMATOR_MODULE = "sagemaker.sklearn.estimator"
# Arguments of sagemaker.tuner.HyperparameterTuner that have no effect on skmaker.
SAGEMAKER_ONLY_ARGS = frozenset(
    {
        "tags",
        "max_runtime_in_seconds",
        "completion_criteria_config",
        "autotune",
        "hyperparameters_to_keep_static",
        "estimator_name",
    }
)
_POLL_S = 2.0


class WarmStartTypes(enum.StrEnum):
    """How parent tuning jobs seed a new one (SageMaker's `WarmStartTypes`)."""

    IDENTICAL_DATA_AND_ALGORITHM = "IdenticalDataAndAlgorithm"
    TRANSFER_LEARNING = "TransferLearning"


class WarmStartConfig:
    """Parent tuning jobs whose completed trials seed a new one (SageMaker's name).

    Args:
        warm_start_type: IdenticalDataAndAlgorithm or TransferLearning (a `WarmStartTypes`).
        parents: 1-5 names of earlier tuning jobs.
    """

    def __init__(self, warm_start_type: WarmStartTypes | str, parents: Sequence[str] | set[str]):
        self.type = WarmStartTypes(warm_start_type)
        self.parents = set(parents)

    def __repr__(self) -> str:
        return f"WarmStartConfig({self.type.value!r}, parents={sorted(self.parents)!r})"


class HyperparameterTuner:
    """Tunes an `SKLearn` estimator's hyperparameters with `sagemaker.tuner`'s API.

    Args:
        estimator: the estimator whose training job every trial runs.
        objective_metric_name: a `Name` of the metric definitions; its final value in each
            trial's log is the trial's objective.
        hyperparameter_ranges: name -> `IntegerParameter`, `ContinuousParameter` or
            `CategoricalParameter`.
        metric_definitions: `[{"Name": ..., "Regex": ...}]`; default the estimator's.
        strategy: Bayesian (default), Random, Grid or Hyperband.
        objective_type: Maximize (default) or Minimize.
        max_jobs: trials in total; None means 1 (Grid: every combination).
        max_parallel_jobs: trials running at once.
        early_stopping_type: Off (default), or Auto to stop trials whose intermediate
            objective values trail the median of earlier trials.
        base_tuning_job_name: prefix of generated tuning job names.
        random_seed: makes the sequence of trials reproducible.
        warm_start_config: parent tuning jobs to learn from.
        strategy_config: Hyperband's resources, as boto3's
            `{"HyperbandStrategyConfig": {"MinResource": .., "MaxResource": ..}}`.
        **sagemaker_only_args: `tags`, `max_runtime_in_seconds` and the other SageMaker
            arguments in `SAGEMAKER_ONLY_ARGS`; accepted and ignored with a warning.

    Raises:
        TypeError: for an argument SageMaker's tuner does not have either.
        ValueError: for a range that is not one of the three parameter kinds.
    """

    def __init__(
        self,
        estimator: SKLearn,
        objective_metric_name: str,
        hyperparameter_ranges: Mapping[str, ParameterRange],
        metric_definitions: Sequence[Mapping[str, str]] | None = None,
        strategy: str = "Bayesian",
        objective_type: str = "Maximize",
        max_jobs: int | None = None,
        max_parallel_jobs: int = 1,
        early_stopping_type: str = "Off",
        base_tuning_job_name: str | None = None,
        random_seed: int | None = None,
        warm_start_config: WarmStartConfig | None = None,
        strategy_config: Mapping[str, Any] | None = None,
        **sagemaker_only_args: Any,
    ) -> None:
        warn_ignored(sagemaker_only_args, SAGEMAKER_ONLY_ARGS, "HyperparameterTuner")
        for name, parameter in hyperparameter_ranges.items():
            if not isinstance(parameter, NumericParameter | CategoricalParameter):
                raise ValueError(
                    f"the range of {name!r} must be an IntegerParameter, ContinuousParameter "
                    f"or CategoricalParameter, got {parameter!r}"
                )
        self.estimator = estimator
        self.objective_metric_name = objective_metric_name
        self._hyperparameter_ranges = dict(hyperparameter_ranges)
        self.metric_definitions = [
            dict(m) for m in (metric_definitions or estimator.metric_definitions)
        ]
        self.strategy = strategy
        self.objective_type = objective_type
        self.max_jobs = max_jobs
        self.max_parallel_jobs = max_parallel_jobs
        self.early_stopping_type = early_stopping_type
        self.base_tuning_job_name = base_tuning_job_name
        self.random_seed = random_seed
        self.warm_start_config = warm_start_config
        self.strategy_config = dict(strategy_config or {})
        self.latest_tuning_job: TuningJob | None = None
        self._current_job_name: str | None = None

    def __repr__(self) -> str:
        return f"HyperparameterTuner(job={self._current_job_name!r})"

    @property
    def sagemaker_session(self) -> Session:
        """The estimator's session."""
        return self.estimator.sagemaker_session

    def hyperparameter_ranges(self) -> dict[str, list[dict[str, Any]]]:
        """The ranges as boto3's `ParameterRanges` (SageMaker's method of the same name)."""
        ranges: dict[str, list[dict[str, Any]]] = {
            IntegerParameter.range_key: [],
            ContinuousParameter.range_key: [],
            CategoricalParameter.range_key: [],
        }
        for name, parameter in self._hyperparameter_ranges.items():
            ranges[parameter.range_key].append(parameter.as_tuning_range(name))
        return ranges

    # -- running -----------------------------------------------------------------------------

    def fit(
        self,
        inputs: str | TrainingInput | Mapping[str, str | TrainingInput] | None = None,
        job_name: str | None = None,
        include_cls_metadata: bool = False,
        estimator_kwargs: Mapping[str, Any] | None = None,
        wait: bool = True,
        **kwargs: Any,
    ) -> None:
        """Uploads the estimator's code and starts a tuning job; with `wait`, waits for it.

        Args:
            inputs: the channels, as for `SKLearn.fit`.
            job_name: the tuning job's name (at most 32 chars); default
                `<base_tuning_job_name>-<yymmdd-HHMMSS-mmm>`.
            include_cls_metadata: accepted for compatibility; the estimator class and module
                are always sent, as SageMaker does for Framework estimators.
            estimator_kwargs: accepted for compatibility (single-estimator tuning only).
            wait: block until the tuning job ends.
            **kwargs: accepted for compatibility (SageMaker passes them to the estimator).

        Raises:
            ValueError: a bad name or inputs, or code that does not exist (before any call).
            UnexpectedStatusException: when `wait` and the tuning job ended Failed.
            SkmakerClientError: when the server refuses the tuning job.
        """
        del include_cls_metadata, estimator_kwargs, kwargs
        channels = channels_from_inputs(inputs)
        name = (
            _validate_tuning_job_name(job_name)
            if job_name is not None
            else tuning_job_name_from_base(
                self.base_tuning_job_name or DEFAULT_BASE_TUNING_JOB_NAME
            )
        )
        estimator = self.estimator
        program, source_uri, _sha256 = estimator._stage_code(name)
        static = {
            key: value
            for key, value in hp.encode(estimator._hyperparameters).items()
            if key not in self._hyperparameter_ranges
        }
        static.update(
            hp.reserved(
                entry_point=program,
                submit_directory=source_uri,
                job_name=name,
                log_level=estimator.container_log_level,
            )
        )
        static.update(
            hp.encode(
                {
                    "sagemaker_estimator_class_name": ESTIMATOR_CLASS_NAME,
                    "sagemaker_estimator_module": ESTIMATOR_MODULE,
                }
            )
        )
        hyperband = self.strategy_config.get("HyperbandStrategyConfig", {})
        warm = self.warm_start_config
        log.info("Creating hyperparameter tuning job with name: %s", name)
        self.sagemaker_session.create_tuning_job(
            name,
            training_job={
                "entry_point": program,
                "source_uri": source_uri,
                "hyperparameters": static,
                "channels": channels,
                "metric_definitions": self.metric_definitions,
                "environment": {str(k): str(v) for k, v in estimator.environment.items()},
                "max_run": estimator.max_run,
                "output_uri": estimator.output_path or "",
                "shell_compat": estimator.shell_compat,
                "framework_version": estimator.framework_version or "",
            },
            objective_metric_name=self.objective_metric_name,
            parameter_ranges=self.hyperparameter_ranges(),
            strategy=self.strategy,
            objective_type=self.objective_type,
            max_jobs=self.max_jobs,
            max_parallel_jobs=self.max_parallel_jobs,
            early_stopping_type=self.early_stopping_type,
            random_seed=self.random_seed,
            warm_start_parents=sorted(warm.parents) if warm else (),
            warm_start_type=warm.type.value if warm else "",
            hyperband_min_resource=int(hyperband.get("MinResource", 0)),
            hyperband_max_resource=int(hyperband.get("MaxResource", 0)),
        )
        self._current_job_name = name
        self.latest_tuning_job = TuningJob(self.sagemaker_session, name)
        if wait:
            self.wait()

    def _require_job(self) -> TuningJob:
        if self.latest_tuning_job is None:
            raise ValueError("No tuning job available; call fit() or attach() first")
        return self.latest_tuning_job

    def wait(self) -> dict[str, Any]:
        """Waits for the latest tuning job to end, printing its trial counts as they change.

        Raises:
            UnexpectedStatusException: when the tuning job ended Failed.
        """
        return self._require_job().wait()

    def describe(self) -> dict[str, Any]:
        """The latest tuning job's DescribeHyperParameterTuningJob-shaped dict."""
        return self._require_job().describe()

    def stop_tuning_job(self) -> None:
        """Stops the latest tuning job: no more trials, the running ones are stopped."""
        self._require_job().stop()

    def stop(self) -> None:
        """Alias of `stop_tuning_job`."""
        self.stop_tuning_job()

    # -- results -----------------------------------------------------------------------------

    def best_training_job(self) -> str:
        """The name of the best trial's training job.

        Raises:
            ValueError: before any trial produced the objective (as SageMaker's Exception).
        """
        description = self.describe()
        best = description.get("BestTrainingJob")
        if not best:
            raise ValueError(
                "Best training job not available for tuning job: "
                f"{description['HyperParameterTuningJobName']}"
            )
        return str(best["TrainingJobName"])

    def best_estimator(self) -> SKLearn:
        """The estimator of the best training job (`SKLearn.attach` of it)."""
        return SKLearn.attach(self.best_training_job(), session=self.sagemaker_session)

    def deploy(
        self,
        initial_instance_count: int = 1,
        instance_type: str | None = None,
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
        endpoint_name: str | None = None,
        wait: bool = True,
        model_name: str | None = None,
        autoscaling: AutoScalingPolicy | Mapping[str, Any] | None = None,
        **sagemaker_only_args: Any,
    ) -> Predictor:
        """Deploys the best training job's model; returns its `SKLearnPredictor`.

        As in SageMaker, the endpoint (and here the model too) is named after the best
        training job unless told otherwise. The other arguments are `SKLearn.deploy`'s.
        """
        warn_ignored(
            {"instance_type": instance_type, **sagemaker_only_args},
            DEPLOY_SAGEMAKER_ONLY_ARGS,
            "deploy",
        )
        best = self.best_training_job()
        return self.best_estimator().deploy(
            initial_instance_count,
            serializer=serializer,
            deserializer=deserializer,
            endpoint_name=endpoint_name or best,
            wait=wait,
            model_name=model_name or best,
            autoscaling=autoscaling,
        )

    def analytics(self) -> HyperparameterTuningJobAnalytics:
        """The trials of the latest tuning job as a table (`.dataframe()`)."""
        job = self._require_job()
        return HyperparameterTuningJobAnalytics(job.name, self.sagemaker_session)

    # -- warm start --------------------------------------------------------------------------

    def transfer_learning_tuner(
        self, additional_parents: set[str] | None = None, estimator: SKLearn | None = None
    ) -> HyperparameterTuner:
        """A copy of this tuner warm-started (TransferLearning) from the latest tuning job."""
        return self._warm_started(WarmStartTypes.TRANSFER_LEARNING, additional_parents, estimator)

    def identical_dataset_and_algorithm_tuner(
        self, additional_parents: set[str] | None = None
    ) -> HyperparameterTuner:
        """A copy of this tuner warm-started (IdenticalDataAndAlgorithm) from the latest job."""
        return self._warm_started(
            WarmStartTypes.IDENTICAL_DATA_AND_ALGORITHM, additional_parents, None
        )

    def _warm_started(
        self, kind: WarmStartTypes, additional: set[str] | None, estimator: SKLearn | None
    ) -> HyperparameterTuner:
        parents = {self._require_job().name, *(additional or set())}
        return HyperparameterTuner(
            estimator or self.estimator,
            self.objective_metric_name,
            self._hyperparameter_ranges,
            metric_definitions=self.metric_definitions,
            strategy=self.strategy,
            objective_type=self.objective_type,
            max_jobs=self.max_jobs,
            max_parallel_jobs=self.max_parallel_jobs,
            early_stopping_type=self.early_stopping_type,
            base_tuning_job_name=self.base_tuning_job_name,
            random_seed=self.random_seed,
            warm_start_config=WarmStartConfig(kind, parents),
            strategy_config=self.strategy_config,
        )

    # -- attach ------------------------------------------------------------------------------

    @classmethod
    def attach(
        cls,
        tuning_job_name: str,
        session: Session | None = None,
        sagemaker_session: Any = None,
        job_details: Mapping[str, Any] | None = None,
        estimator_cls: Any = None,
    ) -> HyperparameterTuner:
        """Rebuilds the tuner of an existing tuning job (it may still be running).

        The estimator comes from the tuning job's training-job definition: its entry point,
        code archive and static hyperparameters (without the reserved ones).

        Raises:
            NotFound: when there is no such tuning job.
        """
        del estimator_cls  # skmaker tunes SKLearn estimators only
        if session is None and isinstance(sagemaker_session, Session):
            session = sagemaker_session
        session = session or Session()
        description = dict(job_details or session.describe_tuning_job(tuning_job_name))
        definition = description["TrainingJobDefinition"]
        algorithm = definition["AlgorithmSpecification"]
        static = definition["StaticHyperParameters"]
        config = description["HyperParameterTuningJobConfig"]
        estimator = SKLearn(
            entry_point=algorithm.get("EntryPoint") or hp.decode_value(static[hp.PROGRAM]),
            source_dir=algorithm.get("SourceUri") or None,
            hyperparameters=hp.user_hyperparameters(static),
            metric_definitions=algorithm["MetricDefinitions"],
            max_run=definition["StoppingCondition"]["MaxRuntimeInSeconds"],
            environment=definition["Environment"],
            session=session,
            output_path=definition["OutputDataConfig"]["S3OutputPath"] or None,
            shell_compat=bool(algorithm.get("ShellCompat", False)),
        )
        warm = description.get("WarmStartConfig")
        tuner = cls(
            estimator,
            config["HyperParameterTuningJobObjective"]["MetricName"],
            _ranges_from_description(config["ParameterRanges"]),
            metric_definitions=algorithm["MetricDefinitions"],
            strategy=config["Strategy"],
            objective_type=config["HyperParameterTuningJobObjective"]["Type"],
            max_jobs=config["ResourceLimits"]["MaxNumberOfTrainingJobs"],
            max_parallel_jobs=config["ResourceLimits"]["MaxParallelTrainingJobs"],
            early_stopping_type=config["TrainingJobEarlyStoppingType"],
            random_seed=config.get("RandomSeed"),
            warm_start_config=(
                WarmStartConfig(
                    warm["WarmStartType"],
                    {
                        p["HyperParameterTuningJobName"]
                        for p in warm["ParentHyperParameterTuningJobs"]
                    },
                )
                if warm
                else None
            ),
            strategy_config=config.get("StrategyConfig"),
        )
        tuner._current_job_name = tuning_job_name
        tuner.latest_tuning_job = TuningJob(session, tuning_job_name)
        return tuner


class TuningJob:
    """A handle on one tuning job: SageMaker's `tuner.latest_tuning_job`.

    Args:
        sagemaker_session: the session that reaches the job.
        name: the tuning job's name.
    """

    def __init__(self, sagemaker_session: Session, name: str) -> None:
        self.sagemaker_session = sagemaker_session
        self.name = name

    def __repr__(self) -> str:
        return f"TuningJob({self.name!r})"

    def describe(self) -> dict[str, Any]:
        """The DescribeHyperParameterTuningJob-shaped dict."""
        return self.sagemaker_session.describe_tuning_job(self.name)

    def stop(self) -> None:
        """Stops the tuning job."""
        self.sagemaker_session.stop_tuning_job(self.name)

    def wait(self, poll_s: float = _POLL_S) -> dict[str, Any]:
        """Polls until the job ends, printing the trial counts whenever they change.

        Raises:
            UnexpectedStatusException: when the tuning job ended Failed.
        """
        interval_s = 0.2
        shown = ""
        while True:
            description = self.describe()
            status = description["HyperParameterTuningJobStatus"]
            progress = _progress_line(description)
            if progress != shown:
                print(progress, flush=True)
                shown = progress
            if status in TERMINAL_STATUSES:
                break
            time.sleep(interval_s)
            interval_s = min(poll_s, interval_s * 1.5)
        if status == "Failed":
            reason = description.get("FailureReason", "(none)")
            raise UnexpectedStatusException(
                self.name,
                status,
                reason,
                message=f"Error for HyperParameterTuning job {self.name}: {status}. "
                f"Reason: {reason}",
            )
        return description


def _progress_line(description: Mapping[str, Any]) -> str:
    """One line of trial counts for `wait()`.

    SageMaker's InProgress counter includes trials whose training job waits for a trainer,
    so the line splits it: a trial is running once a trainer took its job (it has a
    TrainingStartTime), and waiting before that.
    """
    counters = description["TrainingJobStatusCounters"]
    limits = description["HyperParameterTuningJobConfig"]["ResourceLimits"]
    launched = sum(counters.values())
    in_progress = [
        trial
        for trial in description.get("TrainingJobs", ())
        if trial["TrainingJobStatus"] == "InProgress"
    ]
    running = sum(1 for trial in in_progress if "TrainingStartTime" in trial)
    parts = [f"{running} running"]
    if len(in_progress) > running:
        parts.append(f"{len(in_progress) - running} waiting for a trainer")
    parts.append(f"{counters['Completed']} completed")
    if counters["NonRetryableError"]:
        parts.append(f"{counters['NonRetryableError']} failed")
    if counters["Stopped"]:
        parts.append(f"{counters['Stopped']} stopped")
    best = description.get("BestTrainingJob")
    if best:
        metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
        parts.append(f"best {metric['MetricName']}={metric['Value']:g}")
    return (
        f"tuning job {description['HyperParameterTuningJobName']} "
        f"{description['HyperParameterTuningJobStatus']}: "
        f"{launched}/{limits['MaxNumberOfTrainingJobs']} trials launched; " + ", ".join(parts)
    )


def _ranges_from_description(ranges: Mapping[str, Any]) -> dict[str, ParameterRange]:
    parameters: dict[str, ParameterRange] = {}
    for entry in ranges.get("IntegerParameterRanges", ()):
        parameters[entry["Name"]] = IntegerParameter(
            int(entry["MinValue"]), int(entry["MaxValue"]), entry["ScalingType"]
        )
    for entry in ranges.get("ContinuousParameterRanges", ()):
        parameters[entry["Name"]] = ContinuousParameter(
            float(entry["MinValue"]), float(entry["MaxValue"]), entry["ScalingType"]
        )
    for entry in ranges.get("CategoricalParameterRanges", ()):
        parameters[entry["Name"]] = CategoricalParameter(list(entry["Values"]))
    return parameters


def _validate_tuning_job_name(name: str) -> str:
    return naming.validate_name(name, kind="tuning job")


def tuning_job_name_from_base(base: str, now: datetime | None = None) -> str:
    """`<base>-<yymmdd-HHMMSS-mmm>` in UTC, `base` trimmed so the name has at most 32 chars.

    Raises:
        ValueError: when `base` has characters a tuning job name may not contain.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%y%m%d-%H%M%S-") + f"{moment.microsecond // 1000:03d}"
    trimmed = base[: TUNING_JOB_NAME_MAX_LENGTH - len(stamp) - 1].rstrip("-")
    return _validate_tuning_job_name(f"{trimmed}-{stamp}")
