"""Which path serves an endpoint's predicts, through a real control (`--local`) and replicas.

Two models with default handlers: a decision tree classifier, which the verified fast path
serves (ONNX Runtime), and a decision tree regressor whose values (thousands, to 1e-6) float32
cannot hold, so ONNX Runtime's answers differ from scikit-learn's: the verification refuses it,
scikit-learn serves it, the endpoint's events say so once, and DescribeEndpoint shows each
replica's path with the reason.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris, make_regression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from skmaker import Session, SKLearnPredictor
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

SERVING_SCRIPT = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("control")
    service = run_service("control", workdir, ["--local", "--data-dir", str(workdir / "data")])
    yield service
    assert service.stop() == 0


def _deploy(session: Session, tmp: Path, name: str, model: Any, replicas: int) -> dict[str, Any]:
    """model.tar.gz (model.joblib, code/inference.py) -> a model and an InService endpoint."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    archive = tmp / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in (
            ("model.joblib", buffer.getvalue()),
            ("code/inference.py", SERVING_SCRIPT.encode()),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    uri = session.upload_data(archive, key_prefix=f"models/{name}")
    session.create_model(name, model_data_uri=uri, entry_point="inference.py")
    return session.create_endpoint(name, model_name=name, initial_replicas=replicas, wait=True)


def test_a_refused_fast_path_is_an_event_and_shown_per_replica(
    control: ServiceProcess, tmp_path: Path
) -> None:
    features, target = make_regression(600, 6, random_state=0)
    wrong = DecisionTreeRegressor(random_state=0).fit(features, target * 1000)
    with Session(control.address, token="") as session:
        _deploy(session, tmp_path, "refused", wrong, replicas=2)
        try:
            described = session.describe_endpoint("refused")
            paths = [replica.get("PredictPath") for replica in described["Replicas"]]
            assert len(paths) == 2
            for path in paths:
                assert path is not None, described["Replicas"]
                assert (path["Name"], path["Refused"]) == ("scikit-learn", True)
                assert path["Reason"].startswith("onnxruntime: values differ from scikit-learn's")
            refusals = [
                event["Message"]
                for event in described["Events"]
                if event["Message"].startswith("fast path refused")
            ]
            # Both replicas refused for the same reason: one event.
            assert len(refusals) == 1, described["Events"]
            assert refusals[0].startswith(
                "fast path refused for model refused: onnxruntime: values differ from "
                "scikit-learn's by up to"
            )
            assert "; scikit-learn serves (replica r-" in refusals[0]
            rows = np.random.default_rng(3).normal(size=(40, 6)) * 2
            answers = SKLearnPredictor("refused", session=session).predict(rows)
            # scikit-learn's own float64 values, not ONNX Runtime's float32 ones.
            assert np.asarray(answers).tolist() == wrong.predict(rows).tolist()
        finally:
            session.delete_endpoint("refused", wait=True)


def test_a_verified_fast_path_is_shown_without_an_event(
    control: ServiceProcess, tmp_path: Path
) -> None:
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)
    with Session(control.address, token="") as session:
        _deploy(session, tmp_path, "verified", model, replicas=1)
        try:
            described = session.describe_endpoint("verified")
            (replica,) = described["Replicas"]
            path = replica["PredictPath"]
            assert (path["Name"], path["Refused"]) == ("onnxruntime", False)
            assert path["Reason"].startswith("verified on ")
            assert path["MaxRows"] > 0
            assert not [e for e in described["Events"] if "fast path" in e["Message"]]
            answers = SKLearnPredictor("verified", session=session).predict(iris.data[:30])
            assert np.asarray(answers).tolist() == model.predict(iris.data[:30]).tolist()
        finally:
            session.delete_endpoint("verified", wait=True)
