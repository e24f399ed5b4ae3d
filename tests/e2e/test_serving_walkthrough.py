"""The serving half of the iris walkthrough, end to end through the client and real processes.

The embedded control (`--local`) trains SageMaker's iris script, deploys it with
`SKLearn.deploy` (the control starts inference replicas as its children), and the client
predicts held-out rows straight from the replicas; the answers must equal the trained model's
own `predict` on the same rows. Then the `skmaker` CLI describes and invokes the endpoint,
`delete_endpoint` stops the replicas (their ports refuse connections) and `delete_model`
removes the model. The walkthrough script (`make demo`) runs against the same control.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker import (
    NotFound,
    Predictor,
    Session,
    SKLearn,
    SKLearnModel,
    SKLearnPredictor,
    UnexpectedStatusException,
)
from skmaker.deserializers import JSONDeserializer
from skmaker.routing import addresses_target
from skmaker.serializers import CSVSerializer, JSONSerializer
from tests.harness import REPO_ROOT, ServiceProcess, run_service

pytestmark = pytest.mark.integration

EXAMPLE_DIR = REPO_ROOT / "examples" / "iris"
PORT_RELEASE_DEADLINE_S = 30.0


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The embedded control (`--local`: trainer and replicas are its children)."""
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


def _iris_split(folder: Path) -> pd.DataFrame:
    """Writes the training CSV without rows 40-49 of each species; returns those rows."""
    iris = load_iris(as_frame=True)
    frame = pd.concat([iris.target, iris.data], axis=1)
    held_out = [species * 50 + row for species in range(3) for row in range(40, 50)]
    folder.mkdir(parents=True)
    frame.drop(index=held_out).to_csv(folder / "iris.csv", header=False, index=False)
    return frame.loc[held_out]


def _load_trained_model(session: Session, model_uri: str, folder: Path) -> object:
    (archive,) = session.download_data(folder / "artifacts", model_uri)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extract("model.joblib", folder / "model", filter="data")
    return joblib.load(folder / "model" / "model.joblib")


def _refuses_connections(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return False
    except OSError:
        return True


def _wait_until_refused(addresses: list[str]) -> list[str]:
    """Polls until every address refuses connections; returns those still accepting."""
    end = time.monotonic() + PORT_RELEASE_DEADLINE_S
    open_ones = list(addresses)
    while open_ones and time.monotonic() < end:
        open_ones = [address for address in open_ones if not _refuses_connections(address)]
        if open_ones:
            time.sleep(0.1)
    return open_ones


def test_train_deploy_predict_delete(
    session: Session, control: ServiceProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_data = _iris_split(tmp_path / "iris")
    test_X, test_y = test_data.iloc[:, 1:], test_data.iloc[:, 0]
    train_uri = session.upload_data(str(tmp_path / "iris"), key_prefix="scikit-iris/data")
    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"max_leaf_nodes": 30},
        session=session,
    )
    estimator.fit({"train": train_uri}, logs=False)
    trained = _load_trained_model(session, estimator.model_data, tmp_path)

    predictor = estimator.deploy(
        initial_instance_count=1, autoscaling={"max_replicas": 2, "target_value": 4}
    )

    # The endpoint and its model are named as SageMaker names them, and InService.
    name = predictor.endpoint_name
    assert name.startswith("sagemaker-scikit-learn-"), name
    description = predictor.describe_endpoint()
    assert description["EndpointStatus"] == "InService", control.logs()
    assert description["ModelName"] == name
    serving = [r for r in description["Replicas"] if r["State"] == "Serving"]
    assert len(serving) == 1, description
    assert description["ScalingPolicy"]["MaxReplicas"] == 2
    assert description["ScalingPolicy"]["TargetValue"] == 4.0
    model_description = session.describe_model(name)
    assert model_description["PrimaryContainer"]["ModelDataUrl"] == estimator.model_data
    assert model_description["EntryPoint"] == "scikit_learn_iris.py"
    assert estimator.latest_training_job is not None
    assert model_description["TrainingJobName"] == estimator.latest_training_job.name

    # numpy in, numpy out: the same predictions as the trained model's own.
    predictions = predictor.predict(test_X.values)
    expected = trained.predict(test_X.values)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(predictions, expected)
    assert float(np.mean(predictions == test_y.values)) > 0.8

    # The same endpoint through other serializers, and through the session's InvokeEndpoint.
    csv_predictor = Predictor(name, session, CSVSerializer(), JSONDeserializer())
    assert csv_predictor.predict(test_X.values) == expected.tolist()
    body, content_type = session.invoke_endpoint(name, "5.1,3.5,1.4,0.2", "text/csv")
    assert (body, content_type) == (b"[0]", "application/json")
    # A caller that knows only the endpoint's name ($SKMAKER_ADDRESS finds the control).
    monkeypatch.setenv("SKMAKER_ADDRESS", control.address)
    with SKLearnPredictor(name) as by_name:
        np.testing.assert_array_equal(by_name.predict(test_X.values), expected)

    # A second replica: the predictor finds it and calls keep answering the same.
    predictor.update_endpoint(initial_instance_count=2)
    description = predictor.describe_endpoint()
    serving = [r for r in description["Replicas"] if r["State"] == "Serving"]
    assert (description["EndpointStatus"], len(serving)) == ("InService", 2), description
    router = predictor.sagemaker_session.endpoint_router(name)
    router.refresh()  # the background refresh would get there within seconds
    assert router.target == addresses_target([replica["Address"] for replica in serving])
    for _ in range(10):
        np.testing.assert_array_equal(predictor.predict(test_X.values), expected)

    # The CLI lists, describes and invokes it.
    listed = _cli(control.address, "endpoints", "list")
    assert listed.returncode == 0 and name in listed.stdout, listed.stderr
    described = _cli(control.address, "endpoints", "describe", name)
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["EndpointStatus"] == "InService"
    invoked = _cli(control.address, "endpoints", "invoke", name, "--body", "5.1,3.5,1.4,0.2")
    assert (invoked.returncode, invoked.stdout) == (0, "[0]\n"), invoked.stderr
    as_csv = _cli(
        control.address, "endpoints", "invoke", name, "--content-type", "application/json",
        "--body", "[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]", "--accept", "text/csv",
    )  # fmt: skip
    assert (as_csv.returncode, as_csv.stdout) == (0, "0\n2\n"), as_csv.stderr
    models = _cli(control.address, "models", "describe", name)
    assert models.returncode == 0 and json.loads(models.stdout)["ModelName"] == name

    # Deleting the endpoint stops its replicas: their ports refuse connections.
    replica_addresses = [replica["Address"] for replica in serving]
    predictor.delete_endpoint()
    assert _wait_until_refused(replica_addresses) == [], control.logs()
    with pytest.raises(NotFound):
        session.describe_endpoint(name)
    with pytest.raises(NotFound):
        predictor.predict(test_X.values)

    # The model outlives its endpoint until deleted.
    predictor.delete_model()
    with pytest.raises(NotFound):
        session.describe_model(name)


def _write_model_archive(folder: Path) -> tuple[Path, DecisionTreeClassifier]:
    """A hand-made model.tar.gz with model.joblib at its root, as SageMaker users build them."""
    features, labels = load_iris(return_X_y=True)
    model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(features, labels)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    with tarfile.open(folder / "model.tar.gz", "w:gz") as tar:
        tar.add(folder / "model.joblib", arcname="model.joblib")
    return folder / "model.tar.gz", model


CUSTOM_HANDLERS = """\
import json
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def input_fn(body, content_type):
    return json.loads(body)["instances"]


def predict_fn(rows, model):
    return model.predict_proba(rows)


def output_fn(probabilities, accept):
    return json.dumps({"probabilities": probabilities.tolist()}), "application/json"
"""


def test_sklearn_model_from_local_files_with_custom_handlers(
    session: Session, tmp_path: Path
) -> None:
    archive, model = _write_model_archive(tmp_path / "model")
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text(CUSTOM_HANDLERS)

    sklearn_model = SKLearnModel(
        str(archive), entry_point="inference.py", source_dir=str(code), session=session
    )
    predictor = sklearn_model.deploy(
        initial_instance_count=1, serializer=JSONSerializer(), deserializer=JSONDeserializer()
    )
    assert predictor is not None
    try:
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        answer = predictor.predict({"instances": rows})
        np.testing.assert_allclose(answer["probabilities"], model.predict_proba(rows))
        described = session.describe_model(str(sklearn_model.name))
        assert described["PrimaryContainer"]["ModelDataUrl"].startswith("store://models/")
        assert described["SourceUri"].endswith("/sourcedir.tar.gz")
    finally:
        predictor.delete_endpoint()
        predictor.delete_model()


def test_a_script_without_model_fn_fails_the_deploy_with_the_reason(
    session: Session, tmp_path: Path
) -> None:
    archive, _ = _write_model_archive(tmp_path / "model")
    script = tmp_path / "no_model_fn.py"
    script.write_text("def predict_fn(data, model):\n    return model.predict(data)\n")

    model = SKLearnModel(str(archive), entry_point=str(script), session=session, name="no-fn")
    with pytest.raises(UnexpectedStatusException) as caught:
        model.deploy(initial_instance_count=1)

    assert str(caught.value).startswith("Error hosting endpoint no-fn: Failed. Reason: ")
    assert "model_fn" in caught.value.failure_reason
    session.delete_endpoint("no-fn", wait=True)
    model.delete_model()


def test_the_walkthrough_script_runs(control: ServiceProcess) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE_DIR / "walkthrough.py")],
        env={**os.environ, "SKMAKER_ADDRESS": control.address},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{control.logs()}"
    assert "accuracy on 30 held-out rows" in result.stdout
    assert "deleted endpoint and model" in result.stdout
