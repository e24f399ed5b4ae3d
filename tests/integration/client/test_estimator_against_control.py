"""SKLearn against a real control with a trainer: fit(), attach(), logs(), model_data.

The module shares one embedded control (`--local`: one trainer child); every job really runs
its script. Arguments refused before any call are checked in
tests/unit/client/test_client_estimator.py.
"""

from __future__ import annotations

import logging
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_control import upload_bundle, wait_until, write_code

from skmaker import (
    FailedPrecondition,
    NotFound,
    Session,
    SKLearn,
    TrainingInput,
    UnexpectedStatusException,
)
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

# Prints what the platform handed the script, and a metric.
REPORTING_SCRIPT = """
    import json, os, sys
    print("hello from the script")
    print("args", json.dumps(sys.argv[1:]))
    print("MODE", os.environ.get("MODE"))
    for channel in ("TRAIN", "TEST"):
        print(channel, sorted(os.listdir(os.environ["SM_CHANNEL_" + channel])))
    print("acc=0.93")
"""


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("control")
    # file:// channels are read from the test's temporary folders, which the trainer allows.
    roots = f"--trainer-args=--file-channel-roots {tmp_path_factory.getbasetemp()}"
    service = run_service(
        "control", workdir, ["--local", "--data-dir", str(workdir / "data"), roots]
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address, token="") as client:
        yield client


@pytest.fixture(scope="module")
def data_uri(session: Session, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A training channel in the store: store://data/train holding rows.csv."""
    folder = tmp_path_factory.mktemp("train")
    (folder / "rows.csv").write_text("1,2\n")
    return session.upload_data(folder, key_prefix="data/train")


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A source folder: train.py, which prints two lines, and a helper module."""
    return write_code(
        tmp_path / "code",
        {"train.py": "print('hello from the script')\nprint('done')\n", "helper.py": ""},
    )


def _printed_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_fit_uploads_code_and_creates_the_job(
    session: Session, data_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = write_code(tmp_path / "code", {"train.py": REPORTING_SCRIPT, "helper.py": ""})
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "holdout.csv").write_text("3,4\n")
    estimator = SKLearn(
        entry_point="train.py",
        source_dir=code,
        hyperparameters={"max_leaf_nodes": 30, "kernel": "rbf"},
        metric_definitions=[{"Name": "acc", "Regex": "acc=([0-9.]+)"}],
        environment={"MODE": "fast"},
        output_path="store://results",
        base_job_name="iris",
        session=session,
    )

    estimator.fit({"train": data_uri, "test": TrainingInput(f"file://{tmp_path / 'test'}")})

    assert estimator.latest_training_job is not None
    name = estimator.latest_training_job.name
    assert name.startswith("iris-")
    printed = _printed_lines(capsys)
    assert printed[printed.index("hello from the script") :][:5] == [
        "hello from the script",
        'args ["--kernel", "rbf", "--max_leaf_nodes", "30"]',
        "MODE fast",
        "TRAIN ['rows.csv']",
        "TEST ['holdout.csv']",
    ]
    assert printed[-1].startswith("Training seconds: ")

    source_uri = f"store://jobs/{name}/source/sourcedir.tar.gz"
    description = session.describe_training_job(name)
    assert description["TrainingJobStatus"] == "Completed"
    assert description["AlgorithmSpecification"]["EntryPoint"] == "train.py"
    assert description["AlgorithmSpecification"]["SourceUri"] == source_uri
    assert description["HyperParameters"] == {
        "max_leaf_nodes": "30",
        "kernel": '"rbf"',
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": f'"{source_uri}"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": f'"{name}"',
        "sagemaker_region": '"local"',
    }
    assert [
        (c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"])
        for c in description["InputDataConfig"]
    ] == [("train", data_uri), ("test", f"file://{tmp_path / 'test'}")]
    assert [(m["MetricName"], m["Value"]) for m in description["FinalMetricDataList"]] == [
        ("acc", 0.93)
    ]
    assert description["Environment"] == {"MODE": "fast"}
    assert description["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert description["OutputDataConfig"] == {"S3OutputPath": "store://results"}
    assert description["TrainingTimeInSeconds"] >= 0
    assert description["CreationTime"].tzinfo is not None
    assert "FailureReason" not in description

    (archive,) = session.download_data(tmp_path / "source", source_uri)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["helper.py", "train.py"]
    assert estimator.model_data == f"store://results/{name}/output/model.tar.gz"
    assert session.download_data(tmp_path / "model", estimator.model_data)
    assert estimator.hyperparameters()["sagemaker_job_name"] == f'"{name}"'


def test_plain_string_input_is_the_training_channel(
    session: Session, data_uri: str, code: Path
) -> None:
    estimator = SKLearn(entry_point="train.py", source_dir=code, session=session)
    estimator.fit(data_uri, logs=False)

    assert estimator.latest_training_job is not None
    name = estimator.latest_training_job.name
    assert name.startswith("sagemaker-scikit-learn-")
    description = session.describe_training_job(name)
    assert [
        (c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"])
        for c in description["InputDataConfig"]
    ] == [("training", data_uri)]
    assert estimator.model_data == f"store://jobs/{name}/output/model.tar.gz"  # the default


def test_bad_code_or_inputs_fail_before_any_call(
    session: Session, tmp_path: Path, code: Path
) -> None:
    missing_script = SKLearn(entry_point="absent.py", source_dir=code, session=session)
    with pytest.raises(ValueError, match="not found in source_dir"):
        missing_script.fit("store://data", job_name="bad-input")
    local_input = SKLearn(entry_point="train.py", source_dir=code, session=session)
    with pytest.raises(ValueError, match="upload_data"):
        local_input.fit({"train": str(tmp_path)}, job_name="bad-input")

    assert session.list_training_jobs(name_contains_prefix="bad-input") == []
    with pytest.raises(NotFound):
        session.download_data(tmp_path / "nothing", "store://jobs/bad-input")


def test_failed_job_raises_unexpected_status(session: Session, tmp_path: Path) -> None:
    code = write_code(tmp_path / "code", {"train.py": "raise SystemExit('boom')\n"})
    estimator = SKLearn(entry_point="train.py", source_dir=code, session=session)

    with pytest.raises(UnexpectedStatusException) as caught:
        estimator.fit(job_name="will-fail", logs=False)

    assert str(caught.value).startswith(
        "Error for Training job will-fail: Failed. Reason: AlgorithmError: ExecuteUserScriptError"
    )
    assert 'ErrorMessage "boom"' in caught.value.failure_reason
    assert session.describe_training_job("will-fail")["TrainingJobStatus"] == "Failed"


def test_stopped_job_returns_normally_with_a_warning(
    session: Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = "import time\nprint('working', flush=True)\nwhile True:\n    time.sleep(0.05)\n"
    code = write_code(tmp_path / "code", {"train.py": script})
    estimator = SKLearn(entry_point="train.py", source_dir=code, session=session)

    def stop_once_running() -> None:
        # As someone stopping the job from the CLI while the notebook waits on fit().
        wait_until(lambda: _secondary_status(session, "to-stop") == "Training", "to-stop runs")
        session.stop_training_job("to-stop")

    stopper = threading.Thread(target=stop_once_running)
    stopper.start()
    try:
        with caplog.at_level(logging.WARNING, logger="skmaker"):
            estimator.fit(job_name="to-stop", logs=False)
    finally:
        stopper.join(30)

    assert session.describe_training_job("to-stop")["TrainingJobStatus"] == "Stopped"
    assert "training job to-stop stopped" in caplog.messages


def _secondary_status(session: Session, name: str) -> str:
    try:
        return str(session.describe_training_job(name)["SecondaryStatus"])
    except NotFound:
        return ""  # not created yet


def test_fit_without_wait_returns_a_job_handle(session: Session, code: Path) -> None:
    estimator = SKLearn(entry_point="train.py", source_dir=code, session=session)
    estimator.fit(wait=False, job_name="no-wait")

    assert estimator.latest_training_job is not None
    assert estimator.latest_training_job.describe()["TrainingJobName"] == "no-wait"
    assert estimator.latest_training_job.wait(logs=False)["TrainingJobStatus"] == "Completed"


def test_stopping_a_finished_job_is_a_failed_precondition(session: Session, code: Path) -> None:
    estimator = SKLearn(entry_point="train.py", source_dir=code, session=session)
    estimator.fit(job_name="finished", logs=False)

    assert estimator.latest_training_job is not None
    with pytest.raises(FailedPrecondition, match="already ended"):
        estimator.latest_training_job.stop()


def test_remote_source_dir_is_used_as_is(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle_uri = upload_bundle(
        session, tmp_path, {"src/train.py": "print('from the stored bundle')\n"}, "code"
    )
    assert bundle_uri == "store://code/sourcedir.tar.gz"
    estimator = SKLearn(entry_point="src/train.py", source_dir=bundle_uri, session=session)

    estimator.fit(job_name="remote-code")

    assert "from the stored bundle" in _printed_lines(capsys)
    algorithm = session.describe_training_job("remote-code")["AlgorithmSpecification"]
    assert (algorithm["SourceUri"], algorithm["EntryPoint"]) == (bundle_uri, "src/train.py")
    with pytest.raises(NotFound):  # no code of its own was uploaded
        session.download_data(tmp_path / "nothing", "store://jobs/remote-code/source")


def test_model_data_is_the_jobs_model_archive(session: Session, code: Path) -> None:
    estimator = SKLearn(entry_point="train.py", source_dir=code, session=session)
    estimator.fit(job_name="modelled", logs=False)

    assert estimator.model_data == "store://jobs/modelled/output/model.tar.gz"


def test_attach_rebuilds_the_estimator(session: Session, code: Path) -> None:
    SKLearn(
        entry_point="train.py",
        source_dir=code,
        hyperparameters={"max_leaf_nodes": 30, "layers": [64, 32]},
        output_path="store://results",
        session=session,
        base_job_name="iris",
    ).fit(logs=False, job_name="iris-2024-03-05-07-08-09-123")

    attached = SKLearn.attach("iris-2024-03-05-07-08-09-123", session=session)

    assert attached.entry_point == "train.py"
    assert attached.source_dir == (
        "store://jobs/iris-2024-03-05-07-08-09-123/source/sourcedir.tar.gz"
    )
    assert attached._hyperparameters == {"max_leaf_nodes": 30, "layers": [64, 32]}
    assert attached.base_job_name == "iris"
    assert attached.output_path == "store://results"
    assert attached.model_data == (
        "store://results/iris-2024-03-05-07-08-09-123/output/model.tar.gz"
    )
    assert attached.hyperparameters()["sagemaker_program"] == '"train.py"'


def test_attach_to_an_unknown_job_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound):
        SKLearn.attach("never-ran", session=session)


def test_logs_prints_the_whole_log(
    session: Session, code: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    estimator = SKLearn(entry_point="train.py", source_dir=code, session=session)
    estimator.fit(logs=False)
    capsys.readouterr()

    estimator.logs()

    printed = _printed_lines(capsys)
    start = printed.index("hello from the script")
    assert printed[start : start + 2] == ["hello from the script", "done"]
