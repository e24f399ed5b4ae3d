"""The tuner's client side without a server: ranges, names, descriptions, analytics rows."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest

from skmaker import (
    CategoricalParameter,
    ContinuousParameter,
    HyperparameterTuner,
    HyperparameterTuningJobAnalytics,
    IntegerParameter,
    Session,
    SKLearn,
    WarmStartConfig,
    WarmStartTypes,
    descriptions,
)
from skmaker.analytics import _analytics_row
from skmaker.job_specs import parameter_ranges_pb
from skmaker.tuner import _progress_line, tuning_job_name_from_base
from skmaker.v1 import training_job_pb2, tuning_job_pb2


def _estimator() -> SKLearn:
    return SKLearn(
        entry_point="train.py",
        metric_definitions=[{"Name": "acc", "Regex": "acc: ([0-9.]+)"}],
        session=Session("127.0.0.1:1"),
    )


def test_ranges_have_sagemakers_boto3_shape() -> None:
    tuner = HyperparameterTuner(
        _estimator(),
        "acc",
        {
            "n": IntegerParameter(2, 30),
            "c": ContinuousParameter(0.001, 10, scaling_type="Logarithmic"),
            "kernel": CategoricalParameter(["rbf", 3, True]),
        },
    )
    ranges = tuner.hyperparameter_ranges()
    assert ranges == {
        "IntegerParameterRanges": [
            {"Name": "n", "MinValue": "2", "MaxValue": "30", "ScalingType": "Auto"}
        ],
        "ContinuousParameterRanges": [
            {"Name": "c", "MinValue": "0.001", "MaxValue": "10", "ScalingType": "Logarithmic"}
        ],
        "CategoricalParameterRanges": [{"Name": "kernel", "Values": ["rbf", "3", "true"]}],
    }
    wire = parameter_ranges_pb(ranges)
    assert wire.integer_parameter_ranges[0].max_value == 30
    assert wire.continuous_parameter_ranges[0].min_value == pytest.approx(0.001)
    assert list(wire.categorical_parameter_ranges[0].values) == ["rbf", "3", "true"]
    assert tuner.metric_definitions == [{"Name": "acc", "Regex": "acc: ([0-9.]+)"}]
    assert CategoricalParameter("one").values == ["one"]


def test_sagemaker_only_and_unknown_arguments_warn() -> None:
    with pytest.warns(UserWarning, match="max_runtime_in_seconds"):
        HyperparameterTuner(
            _estimator(), "acc", {"n": IntegerParameter(1, 2)}, max_runtime_in_seconds=600
        )
    with pytest.warns(UserWarning, match="HyperparameterTuner\\(\\) does not know: bogus"):
        HyperparameterTuner(_estimator(), "acc", {"n": IntegerParameter(1, 2)}, bogus=1)
    with pytest.raises(ValueError, match="IntegerParameter"):
        HyperparameterTuner(_estimator(), "acc", {"n": (1, 2)})  # type: ignore[dict-item]


def test_generated_tuning_job_names_fit_in_32_chars() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert tuning_job_name_from_base("iris", moment) == "iris-260102-030405-678"
    long_name = tuning_job_name_from_base("a-very-long-base-name-for-tuning", moment)
    assert len(long_name) <= 32 and long_name.endswith("-260102-030405-678")
    with pytest.raises(ValueError, match="32"):
        HyperparameterTuner(_estimator(), "acc", {"n": IntegerParameter(1, 2)}).fit(
            job_name="x" * 33
        )


def test_warm_start_config_takes_sagemakers_types() -> None:
    config = WarmStartConfig(WarmStartTypes.TRANSFER_LEARNING, parents={"a", "b"})
    assert config.type == "TransferLearning" and config.parents == {"a", "b"}
    assert WarmStartConfig("IdenticalDataAndAlgorithm", ["a"]).parents == {"a"}
    with pytest.raises(ValueError):
        WarmStartConfig("Everything", ["a"])


def _tuning_job() -> tuning_job_pb2.TuningJob:
    trial = tuning_job_pb2.Trial(
        number=1,
        training_job_name="tune-001-abcdef12",
        tuned_hyperparameters={"n": "7", "kernel": '"rbf"'},
        training_job_status=training_job_pb2.TRAINING_JOB_STATUS_COMPLETED,
        final_objective_value=0.9,
        objective_status="Succeeded",
    )
    trial.training_start_time.FromSeconds(100)
    trial.training_end_time.FromSeconds(112)
    job = tuning_job_pb2.TuningJob(
        name="tune",
        status=tuning_job_pb2.TUNING_JOB_STATUS_COMPLETED,
        spec=tuning_job_pb2.TuningJobSpec(
            objective_metric_name="acc", strategy="Random", max_jobs=1, max_parallel_jobs=1
        ),
        counters=tuning_job_pb2.TrialCounters(completed=1),
        trials=[trial],
        best_trial=trial,
    )
    job.spec.random_seed = 3
    return job


def test_the_description_is_shaped_like_describe_hyper_parameter_tuning_job() -> None:
    described = descriptions.tuning_job_description(_tuning_job())
    assert described["HyperParameterTuningJobName"] == "tune"
    assert described["HyperParameterTuningJobStatus"] == "Completed"
    config = described["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Random" and config["RandomSeed"] == 3
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "acc"}
    assert described["TrainingJobStatusCounters"]["Completed"] == 1
    assert described["ObjectiveStatusCounters"] == {"Succeeded": 1, "Pending": 0, "Failed": 0}
    best = described["BestTrainingJob"]
    assert best["TrainingJobName"] == "tune-001-abcdef12"
    assert best["FinalHyperParameterTuningJobObjectiveMetric"] == {
        "MetricName": "acc",
        "Value": 0.9,
    }
    assert best["TunedHyperParameters"] == {"n": "7", "kernel": '"rbf"'}


def test_analytics_rows_have_sagemakers_columns_and_decoded_values() -> None:
    summary = descriptions.tuning_job_description(_tuning_job())["TrainingJobs"][0]
    row = _analytics_row(summary)
    assert list(row) == [
        "kernel",
        "n",
        "TrainingJobName",
        "TrainingJobStatus",
        "FinalObjectiveValue",
        "TrainingStartTime",
        "TrainingEndTime",
        "TrainingElapsedTimeSeconds",
    ]
    assert row["n"] == 7.0 and row["kernel"] == "rbf"
    assert row["FinalObjectiveValue"] == 0.9
    assert row["TrainingElapsedTimeSeconds"] == 12.0


def test_dataframe_says_how_to_get_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    analytics = HyperparameterTuningJobAnalytics("tune", Session("127.0.0.1:1"))
    with pytest.raises(ImportError, match="pip install pandas"):
        analytics.dataframe()


def test_progress_counts_as_running_only_trials_a_trainer_took() -> None:
    # SageMaker counts a trial InProgress from its creation; the line must not call a trial
    # whose job still waits for a trainer "running" (2 parallel trials, 1 trainer).
    job = tuning_job_pb2.TuningJob(
        name="tune",
        status=tuning_job_pb2.TUNING_JOB_STATUS_IN_PROGRESS,
        spec=tuning_job_pb2.TuningJobSpec(
            objective_metric_name="acc", max_jobs=4, max_parallel_jobs=2
        ),
        counters=tuning_job_pb2.TrialCounters(in_progress=2),
    )
    for number in (0, 1):
        trial = job.trials.add(
            number=number,
            training_job_name=f"tune-00{number}",
            training_job_status=training_job_pb2.TRAINING_JOB_STATUS_IN_PROGRESS,
            objective_status="Pending",
        )
        if number == 0:
            trial.training_start_time.FromSeconds(100)
    line = _progress_line(descriptions.tuning_job_description(job))
    assert "2/4 trials launched; 1 running, 1 waiting for a trainer, 0 completed" in line
