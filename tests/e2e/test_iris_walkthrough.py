"""The iris walkthrough end to end: real embedded control and trainer, driven by the client.

Upload iris, train the SageMaker example script with `SKLearn.fit` while its log streams,
check the model archive in the store predicts iris, describe the job with the `skmaker` CLI,
and rebuild the estimator with `SKLearn.attach`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from skmaker import NotFound, Session, SKLearn, UnexpectedStatusException
from tests.harness import REPO_ROOT, ServiceProcess, run_service

pytestmark = pytest.mark.integration

EXAMPLE_DIR = REPO_ROOT / "examples" / "iris"


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The embedded control (`--local` starts a trainer child), stopped cleanly after."""
    service = run_service(
        "control", tmp_path / "control", ["--local", "--data-dir", str(tmp_path / "data")]
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def session(control: ServiceProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    monkeypatch.delenv("SKMAKER_TOKEN", raising=False)
    monkeypatch.delenv("SKMAKER_TLS_CA", raising=False)
    with Session(control.address) as client:
        yield client


def _cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs `python -m skmaker.cli --address <address> <args>`, capturing its output."""
    command = [sys.executable, "-m", "skmaker.cli", "--address", address, *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _write_iris(folder: Path) -> None:
    iris = load_iris(as_frame=True)
    folder.mkdir(parents=True)
    pd.concat([iris.target, iris.data], axis=1).to_csv(
        folder / "iris.csv", header=False, index=False
    )


def test_iris_walkthrough(
    session: Session,
    control: ServiceProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write_iris(tmp_path / "iris")
    train_uri = session.upload_data(str(tmp_path / "iris"), key_prefix="scikit-iris/data")
    assert train_uri == "store://scikit-iris/data"

    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"max_leaf_nodes": 30},
        session=session,
    )
    estimator.fit({"train": train_uri})

    streamed = capsys.readouterr().out
    assert "trained on 150 rows" in streamed, control.logs()
    assert estimator.latest_training_job is not None
    job_name = estimator.latest_training_job.name
    description = estimator.latest_training_job.describe()
    assert description["TrainingJobStatus"] == "Completed"
    assert description["HyperParameters"]["max_leaf_nodes"] == "30"
    assert description["HyperParameters"]["sagemaker_program"] == '"scikit_learn_iris.py"'

    # The archive holds model.joblib at its root, and the model predicts iris.
    model_uri = estimator.model_data
    assert model_uri.endswith("/model.tar.gz")
    (archive,) = session.download_data(tmp_path / "artifacts", model_uri)
    with tarfile.open(archive, "r:gz") as tar:
        assert "model.joblib" in tar.getnames()
        tar.extract("model.joblib", tmp_path / "model", filter="data")
    model = joblib.load(tmp_path / "model" / "model.joblib")
    iris = load_iris()
    accuracy = float(np.mean(model.predict(iris.data) == iris.target))
    assert accuracy > 0.9

    # The CLI describes the same job as JSON.
    described = _cli(control.address, "training-jobs", "describe", job_name)
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["ModelArtifacts"]["S3ModelArtifacts"] == model_uri
    listed = _cli(control.address, "training-jobs", "list", "--status", "Completed")
    assert listed.returncode == 0, listed.stderr
    assert job_name in listed.stdout

    # attach() rebuilds the estimator from the job.
    attached = SKLearn.attach(job_name, session=session)
    assert attached.entry_point == "scikit_learn_iris.py"
    assert attached.hyperparameters()["max_leaf_nodes"] == "30"
    assert attached.model_data == model_uri

    # The whole log can be printed again.
    attached.logs()
    assert "trained on 150 rows" in capsys.readouterr().out


def test_failing_script_raises_with_the_reason(session: Session, tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("raise SystemExit('the data is wrong')\n")

    with pytest.raises(UnexpectedStatusException) as caught:
        SKLearn(entry_point=str(script), session=session).fit(logs=False)

    assert caught.value.status == "Failed"
    assert str(caught.value).startswith(f"Error for Training job {caught.value.job_name}: Failed.")
    assert caught.value.failure_reason


def test_cli_reports_an_unknown_job(control: ServiceProcess) -> None:
    result = _cli(control.address, "training-jobs", "describe", "no-such-job")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")


def test_unknown_job_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound):
        session.describe_training_job("no-such-job")


def test_output_path_is_the_prefix_of_the_job_output(session: Session, tmp_path: Path) -> None:
    script = tmp_path / "writes_model.py"
    script.write_text(
        "import os\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'm.txt'), 'w').write('x')\n"
    )
    estimator = SKLearn(entry_point=str(script), output_path="store://results", session=session)

    estimator.fit(logs=False, job_name="with-output-path")

    assert estimator.model_data == "store://results/with-output-path/output/model.tar.gz"
