"""Batch transform through the client: `Transformer` against the real embedded control.

One control (`--local`, two batch workers, 4 KiB shards so a modest file is shared by both)
serves every scenario. Models come from `SKLearnModel.transformer()` (a local model.tar.gz and
serving script, uploaded by the client) and from `SKLearn.transformer()` after a real training
job. Every output is compared with the model's own `predict` on the same rows, in the same
order (issue 5, acceptance 1-3), and the description's shape is pinned.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker import (
    FailedPrecondition,
    Session,
    SKLearn,
    SKLearnModel,
    Transformer,
    UnexpectedStatusException,
)
from tests.harness import REPO_ROOT, ServiceProcess, run_service

pytestmark = pytest.mark.integration

EXAMPLE_DIR = REPO_ROOT / "examples" / "iris"
# predict_fn sleeps SLOW_S (the transform job's environment) per mini-batch, so that a job
# lasts long enough for both workers to take shards, or to be stopped.
SCRIPT = """
import os
import time

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    time.sleep(float(os.environ.get("SLOW_S", "0")))
    return model.predict(data)
"""
# Jobs that must be fast leave SLOW_S unset: a worker undoes a slow job's variables.
FAST: dict[str, str] = {}
CONTROL_FLAGS = (
    "--local",
    "--local-trainers",
    "1",
    "--local-batch-workers-max",
    "2",
    "--local-batch-idle-s",
    "60",
    "--transform-shard-bytes",
    "4096",
)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("batch-e2e")
    service = run_service("control", tmp / "control", [*CONTROL_FLAGS, "--data-dir", str(tmp)])
    try:
        yield service
    finally:
        service.stop(timeout_s=40)


@pytest.fixture(scope="module")
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address, token="") as client:
        yield client


@pytest.fixture(scope="module")
def iris_model() -> DecisionTreeClassifier:
    iris = load_iris()
    return DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)


@pytest.fixture(scope="module")
def model(
    session: Session, iris_model: DecisionTreeClassifier, tmp_path_factory: pytest.TempPathFactory
) -> SKLearnModel:
    """The iris tree behind a serving script, created on the control once."""
    folder = tmp_path_factory.mktemp("model")
    joblib.dump(iris_model, folder / "model.joblib")
    with tarfile.open(folder / "model.tar.gz", "w:gz") as tar:
        tar.add(folder / "model.joblib", arcname="model.joblib")
    (folder / "serve.py").write_text(SCRIPT)
    created = SKLearnModel(
        str(folder / "model.tar.gz"),
        entry_point=str(folder / "serve.py"),
        name="iris-batch",
        session=session,
    )
    created.create()
    return created


def _rows(count: int, seed: int) -> np.ndarray[Any, Any]:
    """Iris-like rows, rounded to one decimal as the CSV files hold them."""
    iris = load_iris().data
    rng = np.random.default_rng(seed)
    return np.round(iris[rng.integers(0, len(iris), count)] + rng.normal(0, 0.3, (count, 4)), 1)


def _csv(rows: np.ndarray[Any, Any], ids: bool = False) -> str:
    return "".join(
        (f"{index}," if ids else "") + ",".join(f"{value:.1f}" for value in row) + "\n"
        for index, row in enumerate(rows)
    )


def _labels(model: DecisionTreeClassifier, rows: np.ndarray[Any, Any]) -> str:
    return "".join(f"{label}\n" for label in model.predict(rows))


def _upload(session: Session, tmp_path: Path, files: dict[str, str], prefix: str) -> str:
    folder = tmp_path / prefix
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return session.upload_data(folder, key_prefix=prefix)


def _outputs(session: Session, tmp_path: Path, uri: str) -> dict[str, str]:
    """Every object below `uri`, by path relative to it."""
    target = tmp_path / "outputs" / uri.removeprefix("store://")
    session.download_data(target, uri)
    return {
        path.relative_to(target).as_posix(): path.read_text()
        for path in sorted(target.rglob("*"))
        if path.is_file()
    }


def _workers_that_scored(control: ServiceProcess, input_uri: str) -> int:
    logs = Path(control.port_file).parent.parent.glob("logs/batch-*.log")
    return sum(1 for path in logs if f"scoring {input_uri} " in path.read_text())


def test_many_small_files_and_one_large_file_shared_by_two_workers(
    session: Session,
    control: ServiceProcess,
    model: SKLearnModel,
    iris_model: DecisionTreeClassifier,
    tmp_path: Path,
) -> None:
    small = {f"part-{index}.csv": _rows(20 + index, index) for index in range(6)}
    small["sub/one-row.csv"] = _rows(1, 99)
    large = _rows(5000, 7)  # about 80 KB: some twenty 4 KiB shards
    files = {name: _csv(rows) for name, rows in small.items()}
    files["large.csv"] = _csv(large)
    data = _upload(session, tmp_path, files, "e2e/many")

    transformer = model.transformer(
        instance_count=2, assemble_with="Line", accept="text/csv", env={"SLOW_S": "0.05"}
    )
    transformer.transform(data, content_type="text/csv", split_type="Line")

    job = transformer.latest_transform_job
    assert job is not None
    assert transformer.output_path == f"store://transform-jobs/{job.name}"
    outputs = _outputs(session, tmp_path, transformer.output_path)
    expected = {f"{name}.out": _labels(iris_model, rows) for name, rows in small.items()}
    expected["large.csv.out"] = _labels(iris_model, large)
    assert outputs == expected
    assert _workers_that_scored(control, f"{data}/large.csv") == 2


def test_description_and_progress_shape(
    session: Session, model: SKLearnModel, tmp_path: Path
) -> None:
    rows = _rows(300, 3)
    data = _upload(session, tmp_path, {"x.csv": _csv(rows), "y.csv": _csv(rows[:5])}, "e2e/desc")
    transformer = Transformer(
        "iris-batch",
        instance_count=1,
        max_payload=1,
        strategy="SingleRecord",
        env=FAST,
        session=session,
    )
    transformer.transform(data, content_type="text/csv", split_type="Line", job_name="desc-1")

    description = session.describe_transform_job("desc-1")
    assert description["TransformJobName"] == "desc-1"
    assert description["TransformJobStatus"] == "Completed"
    assert description["ModelName"] == "iris-batch"
    assert description["BatchStrategy"] == "SingleRecord"
    assert description["MaxPayloadInMB"] == 1
    # Not asked for: omitted, as SageMaker describes what the request set (the worker used 1).
    assert "MaxConcurrentTransforms" not in description
    assert description["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": data}},
        "ContentType": "text/csv",
        "CompressionType": "None",
        "SplitType": "Line",
    }
    # No accept was asked for: the key is omitted, as boto3 omits unset fields.
    assert description["TransformOutput"] == {
        "S3OutputPath": "store://transform-jobs/desc-1",
        "AssembleWith": "None",
    }
    assert description["TransformResources"]["InstanceCount"] == 1
    assert description["DataProcessing"] == {
        "InputFilter": "$",
        "OutputFilter": "$",
        "JoinSource": "None",
    }
    assert "FailureReason" not in description
    assert (
        description["CreationTime"]
        <= description["TransformStartTime"]
        <= description["TransformEndTime"]
    )
    files = description["Files"]
    assert [file["InputUri"] for file in files] == [f"{data}/x.csv", f"{data}/y.csv"]
    for file, count in zip(files, (300, 5), strict=True):
        assert file["Status"] == "Completed"
        relative = file["InputUri"].removeprefix(f"{data}/")
        assert file["OutputUri"] == f"store://transform-jobs/desc-1/{relative}.out"
        assert file["RecordsDone"] == count
        assert file["BytesDone"] == file["BytesTotal"] > 0
        assert file["RecordsFailed"] == 0
    assert description["ShardsDone"] == description["ShardsTotal"] >= 2

    # The default accept is JSON: one array per SingleRecord request, concatenated.
    output = _outputs(session, tmp_path, "store://transform-jobs/desc-1/y.csv.out")["y.csv.out"]
    assert output.startswith("[")

    listed = session.list_transform_jobs(name_contains_prefix="desc-")
    assert [summary["TransformJobName"] for summary in listed] == ["desc-1"]
    assert listed[0]["TransformJobStatus"] == "Completed"
    assert session.list_transform_jobs(status_equals="Failed", name_contains_prefix="desc-") == []

    attached = Transformer.attach("desc-1", session=session)
    assert attached.model_name == "iris-batch"
    assert attached.strategy == "SingleRecord"
    assert attached.output_path == "store://transform-jobs/desc-1"
    assert attached.wait(logs=False)["TransformJobStatus"] == "Completed"


def test_join_and_filters_through_transform_arguments(
    session: Session, model: SKLearnModel, iris_model: DecisionTreeClassifier, tmp_path: Path
) -> None:
    rows = _rows(400, 5)
    data = _upload(session, tmp_path, {"ids.csv": _csv(rows, ids=True)}, "e2e/join")
    transformer = model.transformer(assemble_with="Line", accept="text/csv", env=FAST)
    transformer.transform(
        data,
        content_type="text/csv",
        split_type="Line",
        input_filter="$[1:]",  # drop the ID column before scoring
        join_source="Input",
        output_filter="$[0,-1]",  # keep the ID and the prediction
    )
    assert transformer.output_path is not None
    output = _outputs(session, tmp_path, transformer.output_path)["ids.csv.out"]
    labels = iris_model.predict(rows)
    assert output == "".join(f"{index},{label}\n" for index, label in enumerate(labels))


def _with_bad_line(text: str, line: int, record: str) -> str:
    lines = text.split("\n")
    lines[line - 1] = record
    return "\n".join(lines)


def test_a_bad_record_fails_its_file_with_file_and_line_in_the_reason(
    session: Session, model: SKLearnModel, iris_model: DecisionTreeClassifier, tmp_path: Path
) -> None:
    good = _rows(50, 11)
    bad = _with_bad_line(_csv(_rows(600, 12)), 433, "5.1,oops,1.4,0.2")
    data = _upload(session, tmp_path, {"bad.csv": bad, "good.csv": _csv(good)}, "e2e/bad")
    transformer = model.transformer(
        instance_count=2, assemble_with="Line", accept="text/csv", env=FAST
    )

    with pytest.raises(UnexpectedStatusException) as caught:
        transformer.transform(
            data, content_type="text/csv", split_type="Line", job_name="bad-record"
        )

    assert str(caught.value).startswith("Error for Transform job bad-record: Failed. Reason: ")
    assert caught.value.job_name == "bad-record"
    # Line 433 lies in a later shard of the file: it is counted in the whole file.
    assert f"{data}/bad.csv: line 433:" in caught.value.failure_reason
    assert "oops" in caught.value.failure_reason
    files = {
        file["InputUri"]: file for file in session.describe_transform_job("bad-record")["Files"]
    }
    assert files[f"{data}/bad.csv"]["Status"] == "Failed"
    assert "line 433" in files[f"{data}/bad.csv"]["FailureReason"]
    assert files[f"{data}/good.csv"]["Status"] == "Completed"
    assert _outputs(session, tmp_path, "store://transform-jobs/bad-record") == {
        "good.csv.out": _labels(iris_model, good)
    }


def test_record_errors_list_the_bad_rows(
    session: Session, model: SKLearnModel, iris_model: DecisionTreeClassifier, tmp_path: Path
) -> None:
    rows = _rows(600, 13)
    text = _with_bad_line(_with_bad_line(_csv(rows), 2, "a,b,c,d"), 433, "5.1,oops,1.4,0.2")
    data = _upload(session, tmp_path, {"x.csv": text}, "e2e/errors")
    transformer = model.transformer(
        instance_count=2, assemble_with="Line", accept="text/csv", env=FAST
    )
    transformer.transform(
        data, content_type="text/csv", split_type="Line", job_name="errors", record_errors=True
    )

    (file,) = session.describe_transform_job("errors")["Files"]
    assert (file["Status"], file["RecordsDone"], file["RecordsFailed"]) == ("Completed", 598, 2)
    assert file["ErrorsUri"] == "store://transform-jobs/errors/x.csv.out.errors"
    outputs = _outputs(session, tmp_path, "store://transform-jobs/errors")
    assert outputs["x.csv.out"] == _labels(iris_model, np.delete(rows, [1, 432], axis=0))
    errors = [json.loads(line) for line in outputs["x.csv.out.errors"].splitlines()]
    assert [error["line"] for error in errors] == [2, 433]
    assert "oops" in errors[1]["error"]


def test_stop_and_the_cli(
    session: Session, control: ServiceProcess, model: SKLearnModel, tmp_path: Path
) -> None:
    data = _upload(session, tmp_path, {"big.csv": _csv(_rows(4000, 17))}, "e2e/stop")
    # One record per call at 0.5 s each: the job cannot end by itself while the CLI runs (a
    # loaded machine takes seconds per CLI call), and a stop lands between two records.
    transformer = model.transformer(
        strategy="SingleRecord", assemble_with="Line", env={"SLOW_S": "0.5"}
    )
    transformer.transform(
        data, content_type="text/csv", split_type="Line", job_name="stop-me", wait=False
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "skmaker.cli", "--address", control.address, *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    described = cli("transform-jobs", "describe", "stop-me")
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["TransformJobStatus"] == "InProgress"
    listed = cli("transform-jobs", "list", "--status", "InProgress")
    assert "stop-me" in listed.stdout, listed.stderr

    transformer.stop_transform_job()  # waits until Stopped
    description = session.describe_transform_job("stop-me")
    assert description["TransformJobStatus"] == "Stopped"
    assert description["ShardsDone"] < description["ShardsTotal"]
    with pytest.raises(FailedPrecondition):
        transformer.stop_transform_job()
    stopped = cli("transform-jobs", "stop", "stop-me")
    assert stopped.returncode == 1
    assert "already ended" in stopped.stderr


def test_estimator_transformer_after_training(
    session: Session, iris_model: DecisionTreeClassifier, tmp_path: Path
) -> None:
    iris = load_iris()
    training = "".join(
        f"{label}," + ",".join(f"{value:.1f}" for value in row) + "\n"
        for label, row in zip(iris.target, iris.data, strict=True)
    )
    train_uri = _upload(session, tmp_path, {"iris.csv": training}, "e2e/train")
    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"max_leaf_nodes": 30},
        base_job_name="batch-e2e",
        session=session,
    )
    estimator.fit({"train": train_uri}, logs=False)
    rows = _rows(200, 19)
    data = _upload(session, tmp_path, {"rows.csv": _csv(rows)}, "e2e/estimator")

    transformer = estimator.transformer(instance_count=2, assemble_with="Line", accept="text/csv")
    transformer.transform(data, content_type="text/csv", split_type="Line")

    job = transformer.latest_transform_job
    assert job is not None and job.name.startswith("batch-e2e-")
    assert session.describe_model(transformer.model_name)["EntryPoint"] == "scikit_learn_iris.py"
    assert transformer.output_path is not None
    (archive,) = session.download_data(tmp_path / "model", estimator.model_data)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extract("model.joblib", tmp_path / "model", filter="data")
    trained = joblib.load(tmp_path / "model" / "model.joblib")
    output = _outputs(session, tmp_path, transformer.output_path)["rows.csv.out"]
    assert output == "".join(f"{label}\n" for label in trained.predict(rows))
