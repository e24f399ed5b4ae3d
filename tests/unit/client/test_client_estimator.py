"""SKLearn against the in-process fake control: arguments, fit(), attach() and helpers."""

from __future__ import annotations

import tarfile
import warnings
from io import BytesIO
from pathlib import Path

import pytest
from fake_control_server import FakeControl

from skmaker import Session, SKLearn, TrainingInput, UnexpectedStatusException
from skmaker.v1 import training_job_pb2


@pytest.fixture
def script(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    (code / "helper.py").write_text("")
    return code / "train.py"


def test_no_warning_without_sagemaker_only_args(script: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SKLearn(entry_point=str(script))


def test_sagemaker_only_args_give_one_warning_naming_them(script: Path) -> None:
    with pytest.warns(UserWarning) as caught:
        SKLearn(
            entry_point=str(script),
            role="arn:aws:iam::1:role/x",
            instance_type="ml.m5.large",
            framework_version="1.2-1",
            py_version="py3",
            instance_count=1,
        )
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "skmaker ignores these SageMaker-only arguments: "
        "framework_version, instance_type, py_version, role"
    )


def test_a_real_sagemaker_session_is_ignored_with_the_warning(script: Path) -> None:
    with pytest.warns(UserWarning, match="sagemaker_session"):
        SKLearn(entry_point=str(script), sagemaker_session=object())


def test_sagemaker_session_may_be_a_skmaker_session(script: Path, session: Session) -> None:
    estimator = SKLearn(entry_point=str(script), sagemaker_session=session)
    assert estimator.sagemaker_session is session


def test_instance_count_other_than_one_is_refused_as_in_sagemaker(script: Path) -> None:
    with pytest.raises(AttributeError, match="does not support distributed training"):
        SKLearn(entry_point=str(script), instance_count=2)


def test_unknown_arguments_are_a_type_error(script: Path) -> None:
    with pytest.raises(TypeError, match="hyperparameter"):
        SKLearn(entry_point=str(script), hyperparameter={"a": 1})


def test_fit_uploads_code_and_creates_the_job(
    script: Path, session: Session, fake_control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    estimator = SKLearn(
        entry_point="train.py",
        source_dir=script.parent,
        hyperparameters={"max_leaf_nodes": 30, "kernel": "rbf"},
        metric_definitions=[{"Name": "acc", "Regex": "acc=([0-9.]+)"}],
        environment={"MODE": "fast"},
        output_path="store://results",
        base_job_name="iris",
        session=session,
    )
    estimator.fit({"train": "store://data/train", "test": TrainingInput("file:///srv/test")})

    (request,) = fake_control.create_requests
    name = request.name
    assert name.startswith("iris-")
    source_uri = f"store://jobs/{name}/source/sourcedir.tar.gz"
    spec = request.spec
    assert (spec.entry_point, spec.source_uri) == ("train.py", source_uri)
    assert dict(spec.hyperparameters) == {
        "max_leaf_nodes": "30",
        "kernel": '"rbf"',
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": f'"{source_uri}"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": f'"{name}"',
        "sagemaker_region": '"local"',
    }
    assert [(c.name, c.uri) for c in spec.channels] == [
        ("train", "store://data/train"),
        ("test", "file:///srv/test"),
    ]
    assert [(m.name, m.regex) for m in spec.metric_definitions] == [("acc", "acc=([0-9.]+)")]
    assert dict(spec.environment) == {"MODE": "fast"}
    assert spec.max_runtime_seconds == 86400
    assert spec.output_uri == "store://results"

    archive = fake_control.objects[f"jobs/{name}/source/sourcedir.tar.gz"]
    with tarfile.open(fileobj=BytesIO(archive), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["helper.py", "train.py"]

    assert capsys.readouterr().out == "hello from the script\ndone\nTraining seconds: 3\n"
    assert estimator.latest_training_job is not None
    assert estimator.latest_training_job.name == name
    assert estimator.model_data == f"store://{name}/output/model.tar.gz"
    assert estimator.hyperparameters()["sagemaker_job_name"] == f'"{name}"'


def test_plain_string_input_is_the_training_channel(
    script: Path, session: Session, fake_control: FakeControl
) -> None:
    SKLearn(entry_point=str(script), session=session).fit("store://data", logs=False)

    (request,) = fake_control.create_requests
    assert [(c.name, c.uri) for c in request.spec.channels] == [("training", "store://data")]
    assert request.name.startswith("sagemaker-scikit-learn-")
    assert request.spec.output_uri == ""


def test_bad_code_or_inputs_fail_before_any_call(
    tmp_path: Path, session: Session, fake_control: FakeControl
) -> None:
    (tmp_path / "src").mkdir()
    estimator = SKLearn(entry_point="absent.py", source_dir=tmp_path / "src", session=session)
    with pytest.raises(ValueError, match="not found in source_dir"):
        estimator.fit("store://data")
    with pytest.raises(ValueError, match="upload_data"):
        estimator.fit({"train": str(tmp_path)})
    assert fake_control.create_requests == []
    assert fake_control.objects == {}


def test_failed_job_raises_unexpected_status(
    script: Path, session: Session, fake_control: FakeControl
) -> None:
    fake_control.next_status = training_job_pb2.TRAINING_JOB_STATUS_FAILED
    fake_control.next_failure_reason = "AlgorithmError: ExecuteUserScriptError"
    estimator = SKLearn(entry_point=str(script), session=session)

    with pytest.raises(UnexpectedStatusException) as caught:
        estimator.fit("store://data", job_name="will-fail", logs=False)

    assert str(caught.value) == (
        "Error for Training job will-fail: Failed. Reason: AlgorithmError: ExecuteUserScriptError"
    )
    assert caught.value.failure_reason == "AlgorithmError: ExecuteUserScriptError"


def test_stopped_job_returns_normally(
    script: Path, session: Session, fake_control: FakeControl
) -> None:
    fake_control.next_status = training_job_pb2.TRAINING_JOB_STATUS_STOPPED
    SKLearn(entry_point=str(script), session=session).fit("store://data", logs=False)


def test_fit_without_wait_returns_a_job_handle(script: Path, session: Session) -> None:
    estimator = SKLearn(entry_point=str(script), session=session)
    estimator.fit("store://data", wait=False, job_name="no-wait")

    assert estimator.latest_training_job is not None
    assert estimator.latest_training_job.describe()["TrainingJobName"] == "no-wait"


def test_remote_source_dir_is_used_as_is(session: Session, fake_control: FakeControl) -> None:
    estimator = SKLearn(
        entry_point="src/train.py", source_dir="store://code/sourcedir.tar.gz", session=session
    )
    estimator.fit(wait=False, job_name="remote-code")

    (request,) = fake_control.create_requests
    assert request.spec.source_uri == "store://code/sourcedir.tar.gz"
    assert request.spec.entry_point == "src/train.py"
    assert fake_control.objects == {}


def test_model_data_before_fit_raises(script: Path) -> None:
    with pytest.raises(ValueError, match="not associated with a training job"):
        _ = SKLearn(entry_point=str(script)).model_data


def test_attach_rebuilds_the_estimator(
    script: Path, session: Session, fake_control: FakeControl
) -> None:
    SKLearn(
        entry_point="train.py",
        source_dir=script.parent,
        hyperparameters={"max_leaf_nodes": 30, "layers": [64, 32]},
        output_path="store://results",
        session=session,
        base_job_name="iris",
    ).fit("store://data", logs=False, job_name="iris-2024-03-05-07-08-09-123")

    attached = SKLearn.attach("iris-2024-03-05-07-08-09-123", session=session)

    assert attached.entry_point == "train.py"
    assert attached.source_dir == (
        "store://jobs/iris-2024-03-05-07-08-09-123/source/sourcedir.tar.gz"
    )
    assert attached._hyperparameters == {"max_leaf_nodes": 30, "layers": [64, 32]}
    assert attached.base_job_name == "iris"
    assert attached.output_path == "store://results"
    assert attached.model_data.endswith("/output/model.tar.gz")
    assert attached.hyperparameters()["sagemaker_program"] == '"train.py"'


def test_logs_prints_the_whole_log(
    script: Path, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    estimator = SKLearn(entry_point=str(script), session=session)
    estimator.fit("store://data", logs=False)
    capsys.readouterr()

    estimator.logs()

    assert capsys.readouterr().out == "hello from the script\ndone\n"
