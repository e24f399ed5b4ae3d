"""Automatic model tuning through the real embedded control, two trainers and the client.

Each test tunes a tiny script written here with `HyperparameterTuner` and checks what the
issue's acceptance asks: parallel trials keep exactly `max_parallel_jobs` running and halve the
wall time; Grid covers every combination once; Random and Bayesian stay inside the ranges and
repeat themselves with the same seed; early stopping stops weak trials and says so; a kill -9
of the control loses and double-counts no trial; the analytics table has SageMaker's columns.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from skmaker import (
    CategoricalParameter,
    ContinuousParameter,
    HyperparameterTuner,
    IntegerParameter,
    Session,
    SKLearn,
)
from tests.harness import ServiceProcess, run_service, script_visible_dir, wait_for_serving

pytestmark = pytest.mark.integration

TRAINER_ARGS = "--stop-grace-s 5 --acquire-wait-s 2"
METRIC = "score"
METRIC_DEFINITIONS = [{"Name": METRIC, "Regex": r"score: (-?[0-9.]+)"}]

# Sleeps --sleep seconds, then logs `score: <value>` --steps times (the last one is the final
# value): value = x * weight(kind) at every step, so a trial's curve is flat at its final value.
SCRIPT = """
    import argparse, os, sys, time
    parser = argparse.ArgumentParser()
    parser.add_argument("-x", type=float, default=1.0)  # one-char keys arrive as -x
    parser.add_argument("--kind", default="a")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--release", default="")
    args, _ = parser.parse_known_args()
    print("started", args.x, args.kind, flush=True)
    while args.release and not os.path.exists(args.release):
        time.sleep(0.05)
    time.sleep(args.sleep)
    value = args.x * {"a": 1.0, "b": 2.0, "c": 3.0}.get(args.kind, 1.0)
    for step in range(args.steps):
        print(f"score: {value}", flush=True)
        time.sleep(args.step_sleep)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "done.txt"), "w").write(str(value))
"""


def _control_args(data_dir: Path) -> list[str]:
    # The embedded default's trainers: one, and more started as trials queue (up to the
    # core count; this machine has 2, the most max_parallel_jobs asks for here).
    return [
        "--local",
        "--local-trainers-max",
        "2",
        "--data-dir",
        str(data_dir),
        "--trainer-args",
        TRAINER_ARGS,
    ]


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One embedded control (trainers follow the trials), shared by the tests that don't kill it."""
    root = tmp_path_factory.mktemp("tuning")
    service = run_service("control", root / "control", _control_args(root / "data"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address) as client:
        yield client


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("src")
    (folder / "train.py").write_text(textwrap.dedent(SCRIPT))
    return folder


@pytest.fixture
def data_uri(session: Session, tmp_path: Path) -> str:
    folder = tmp_path / "rows"
    folder.mkdir()
    (folder / "rows.csv").write_text("1,2\n")
    return session.upload_data(str(folder), key_prefix=f"tuning/{tmp_path.name}")


def _tuner(
    session: Session,
    source_dir: Path,
    ranges: Mapping[str, Any],
    static: Mapping[str, Any] | None = None,
    **options: Any,
) -> HyperparameterTuner:
    estimator = SKLearn(
        entry_point="train.py",
        source_dir=str(source_dir),
        hyperparameters=dict(static or {}),
        session=session,
    )
    return HyperparameterTuner(
        estimator,
        METRIC,
        dict(ranges),
        metric_definitions=METRIC_DEFINITIONS,
        **options,
    )


def _trials(tuner: HyperparameterTuner) -> list[dict[str, Any]]:
    return list(tuner.describe()["TrainingJobs"])


def _most_overlapping(trials: list[dict[str, Any]]) -> int:
    """The largest number of trials whose [start, end] intervals cover one instant."""
    events = []
    for trial in trials:
        events += [(trial["TrainingStartTime"], 1), (trial["TrainingEndTime"], -1)]
    running = most = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts on ties
        running += change
        most = max(most, running)
    return most


def _fit_and_watch(tuner: HyperparameterTuner, data_uri: str) -> list[int]:
    """Runs the tuning job; returns the InProgress counts seen meanwhile."""
    tuner.fit({"train": data_uri}, wait=False)
    in_progress = []
    while True:
        description = tuner.describe()
        in_progress.append(description["TrainingJobStatusCounters"]["InProgress"])
        if description["HyperParameterTuningJobStatus"] in {"Completed", "Failed", "Stopped"}:
            break
        time.sleep(0.1)
    return in_progress


def test_parallel_trials_keep_two_running_and_refill_a_freed_slot(
    session: Session, source_dir: Path, data_uri: str
) -> None:
    ranges = {"x": ContinuousParameter(0.1, 1.0)}
    options = {"static": {"sleep": 1.0}, "max_jobs": 4, "random_seed": 1}
    serial = _tuner(session, source_dir, ranges, max_parallel_jobs=1, **options)  # type: ignore[arg-type]
    serial_counts = _fit_and_watch(serial, data_uri)
    parallel = _tuner(session, source_dir, ranges, max_parallel_jobs=2, **options)  # type: ignore[arg-type]
    parallel_counts = _fit_and_watch(parallel, data_uri)

    assert max(serial_counts) == 1
    assert max(parallel_counts) == 2
    description = parallel.describe()
    assert description["HyperParameterTuningJobStatus"] == "Completed"
    assert description["TrainingJobStatusCounters"]["Completed"] == 4
    trials = _trials(parallel)
    assert [trial["TrialNumber"] for trial in trials] == [1, 2, 3, 4]
    assert _most_overlapping(trials) == 2
    assert _most_overlapping(_trials(serial)) == 1
    # A freed slot is refilled, and only a freed one: trial 3 starts once one of 1 and 2 has
    # ended, and runs beside the other (how soon is a matter for a benchmark, not a test).
    first_end = min(t["TrainingEndTime"] for t in trials[:2])
    assert trials[2]["TrainingStartTime"] >= first_end
    # Trial 4 needs a second freed slot: two of trials 1-3 have ended by its start.
    assert trials[3]["TrainingStartTime"] >= sorted(t["TrainingEndTime"] for t in trials[:3])[1]

    # Each trial is an ordinary training job with the contract's hyperparameters.
    job = session.describe_training_job(trials[0]["TrainingJobName"])
    name = description["HyperParameterTuningJobName"]
    assert job["TuningJobName"] == name
    assert trials[0]["TrainingJobName"].startswith(f"{name}-001-")
    assert job["HyperParameters"]["_tuning_objective_metric"] == json.dumps(METRIC)
    assert job["HyperParameters"]["sagemaker_estimator_class_name"] == '"SKLearn"'
    assert job["HyperParameters"]["x"] == trials[0]["TunedHyperParameters"]["x"]
    best = description["BestTrainingJob"]
    values = [t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(values)
    assert parallel.best_training_job() == best["TrainingJobName"]


def test_grid_covers_every_combination_once_and_analytics_has_sagemakers_columns(
    session: Session, source_dir: Path, data_uri: str, control: ServiceProcess
) -> None:
    ranges = {"x": IntegerParameter(1, 3), "kind": CategoricalParameter(["a", "b"])}
    tuner = _tuner(session, source_dir, ranges, strategy="Grid", max_parallel_jobs=2)
    tuner.fit({"train": data_uri})

    trials = _trials(tuner)
    combos = sorted(
        (t["TunedHyperParameters"]["x"], json.loads(t["TunedHyperParameters"]["kind"]))
        for t in trials
    )
    assert combos == [(str(x), kind) for x in (1, 2, 3) for kind in ("a", "b")]
    description = tuner.describe()
    assert (
        description["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"]
        == 6
    )
    assert tuner.describe()["BestTrainingJob"]["TunedHyperParameters"] == {
        "x": "3",
        "kind": '"b"',
    }

    frame = tuner.analytics().dataframe()
    assert list(frame.columns) == [
        "kind",
        "x",
        "TrainingJobName",
        "TrainingJobStatus",
        "FinalObjectiveValue",
        "TrainingStartTime",
        "TrainingEndTime",
        "TrainingElapsedTimeSeconds",
    ]
    assert len(frame) == 6
    assert frame["x"].dtype == float and set(frame["kind"]) == {"a", "b"}
    assert (frame["FinalObjectiveValue"] == frame["x"] * frame["kind"].map({"a": 1, "b": 2})).all()
    assert (frame["TrainingElapsedTimeSeconds"] >= 0).all()

    attached = HyperparameterTuner.attach(tuner.latest_tuning_job.name, session=session)  # type: ignore[union-attr]
    assert attached.best_training_job() == tuner.best_training_job()
    assert attached.hyperparameter_ranges() == tuner.hyperparameter_ranges()
    cli = subprocess.run(
        [sys.executable, "-m", "skmaker.cli", "--address", control.address, "tuning-jobs", "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert tuner.latest_tuning_job.name in cli.stdout  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", ["Random", "Bayesian"])
def test_random_and_bayesian_stay_in_range_and_repeat_with_the_same_seed(
    session: Session, source_dir: Path, data_uri: str, strategy: str
) -> None:
    ranges = {
        "x": ContinuousParameter(0.001, 10.0, "Logarithmic"),
        "steps": IntegerParameter(1, 3),
        "kind": CategoricalParameter(["a", "b", "c"]),
    }
    runs = []
    for _ in range(2):  # both at once: one trainer each, one trial at a time
        tuner = _tuner(session, source_dir, ranges, strategy=strategy, max_jobs=3, random_seed=42)
        tuner.fit({"train": data_uri}, wait=False)
        runs.append(tuner)
    sequences = []
    for tuner in runs:
        assert tuner.wait()["HyperParameterTuningJobStatus"] == "Completed"
        sequences.append([t["TunedHyperParameters"] for t in _trials(tuner)])
    assert sequences[0] == sequences[1]
    for tuned in sequences[0]:
        assert 0.001 <= float(tuned["x"]) <= 10.0
        assert int(tuned["steps"]) in {1, 2, 3}
        assert json.loads(tuned["kind"]) in {"a", "b", "c"}


def test_early_stopping_stops_trials_below_the_running_median(
    session: Session, source_dir: Path, data_uri: str
) -> None:
    tuner = _tuner(
        session,
        source_dir,
        {"x": IntegerParameter(1, 10)},
        static={"steps": 6, "step-sleep": 0.25},
        strategy="Random",
        max_jobs=6,
        random_seed=1,  # x = 5, 8, 1, 4, 2, 1: trials 4-6 trail the median of 5, 8 and 1
        early_stopping_type="Auto",
    )
    tuner.fit({"train": data_uri})

    trials = _trials(tuner)
    stopped = [t for t in trials if t["StoppedEarly"]]
    assert stopped, trials
    for trial in stopped:
        assert trial["TrainingJobStatus"] == "Stopped"
        assert trial["ObjectiveStatus"] == "Failed"
        earlier = sorted(
            float(t["TunedHyperParameters"]["x"])
            for t in trials
            if t["TrialNumber"] < trial["TrialNumber"] and t["TrainingJobStatus"] == "Completed"
        )
        # Each curve is flat at x: a stopped trial trailed the median of the earlier ones.
        assert len(earlier) >= 3
        assert float(trial["TunedHyperParameters"]["x"]) < earlier[len(earlier) // 2]
    assert [t["TrialNumber"] for t in stopped] == [4, 5, 6]
    description = tuner.describe()
    assert description["TrainingJobStatusCounters"]["Stopped"] == len(stopped)
    assert description["HyperParameterTuningJobStatus"] == "Completed"


def test_kill_9_of_the_control_mid_tuning_loses_and_double_counts_no_trial(
    tmp_path: Path, source_dir: Path
) -> None:
    release = script_visible_dir() / "release"
    # Two trainers of their own, as a deployment runs them: --local trainers would stop with the
    # control they are children of.
    args = ["--data-dir", str(tmp_path / "data"), "--lease-s", "5"]
    first = run_service("control", tmp_path / "first", args)
    trainers = [
        run_service(
            "trainer",
            tmp_path / f"trainer-{index}",
            [
                *("--control", first.address, "--work-dir", str(tmp_path / f"work-{index}")),
                *TRAINER_ARGS.split(),
            ],
            label=f"trainer-{index}",
        )
        for index in (0, 1)
    ]
    try:
        with Session(first.address) as session:
            folder = tmp_path / "rows"
            folder.mkdir()
            (folder / "rows.csv").write_text("1\n")
            uri = session.upload_data(str(folder), key_prefix="rows")
            tuner = _tuner(
                session,
                source_dir,
                {"x": ContinuousParameter(0.1, 1.0)},
                static={"release": str(release)},
                max_jobs=4,
                max_parallel_jobs=2,
                random_seed=5,
            )
            tuner.fit({"train": uri}, wait=False)
            name = tuner.latest_tuning_job.name  # type: ignore[union-attr]
            _wait_for(lambda: tuner.describe()["TrainingJobStatusCounters"]["InProgress"] == 2)
            _wait_for(lambda: _all_started(session, tuner))
        port = first.grpc_port
        first.kill()  # kill -9 of the control; the trainers keep running the trials
        second = run_service("control", tmp_path / "second", [*args, f"--port={port}"])
        try:
            wait_for_serving(second.address, 30)
            with Session(second.address) as session:
                attached = HyperparameterTuner.attach(name, session=session)
                assert attached.describe()["HyperParameterTuningJobStatus"] == "InProgress"
                release.touch()
                description = attached.wait()
                trials = description["TrainingJobs"]
                assert description["HyperParameterTuningJobStatus"] == "Completed"
                assert [t["TrialNumber"] for t in trials] == [1, 2, 3, 4]
                assert description["TrainingJobStatusCounters"] == {
                    "Completed": 4,
                    "InProgress": 0,
                    "RetryableError": 0,
                    "NonRetryableError": 0,
                    "Stopped": 0,
                }
                names = {t["TrainingJobName"] for t in trials}
                listed = session.list_training_jobs(name_contains_prefix=f"{name}-")
                assert {job["TrainingJobName"] for job in listed} == names
                for trial in trials[:2]:  # the trials that ran across the restart, once each
                    job = session.describe_training_job(trial["TrainingJobName"])
                    assert job["AttemptCount"] == 1
        finally:
            second.stop()
    finally:
        first.kill()
        for trainer in trainers:
            trainer.stop()


def _all_started(session: Session, tuner: HyperparameterTuner) -> bool:
    trials = _trials(tuner)
    return len(trials) == 2 and all(
        any(line.text.startswith("started") for line in session.training_job_log_lines(name))
        for name in (t["TrainingJobName"] for t in trials)
    )


def _wait_for(predicate: Any, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met in time")
