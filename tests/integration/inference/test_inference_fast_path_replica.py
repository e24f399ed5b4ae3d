"""A replica serves a tree model on the verified fast path and stacks concurrent calls.

Real replica processes on loopback: which path serves is in the log and on /metrics, and under
32 concurrent callers each call gets exactly its own rows' answers, or its own error.
"""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier

from skmaker.v1 import inference_pb2, inference_pb2_grpc
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

SERVE = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    root = tmp_path_factory.mktemp("bundle")
    model_dir, code_dir = root / "model", root / "code"
    model_dir.mkdir()
    code_dir.mkdir()
    features, labels = make_classification(800, 6, n_informative=4, n_classes=3, random_state=0)
    model = GradientBoostingClassifier(n_estimators=40, random_state=0).fit(features, labels)
    joblib.dump(model, model_dir / "model.joblib")
    (code_dir / "serve.py").write_text(SERVE)
    return model_dir, code_dir, model


def start(bundle: tuple[Path, Path, Any], work: Path, env: dict[str, str]) -> ServiceProcess:
    model_dir, code_dir, _ = bundle
    return run_service(
        "inference",
        work,
        [
            f"--model-dir={model_dir}",
            f"--code-dir={code_dir}",
            "--entry-point=serve.py",
            "--endpoint-name=trees",
            f"--work-dir={work / 'work'}",
            "--shutdown-grace-s=2",
        ],
        env=env,
    )


def metrics_text(replica: ServiceProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{replica.metrics_port}/metrics") as answer:
        return answer.read().decode()


def csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows)


def test_the_fast_path_serves_and_says_so(bundle: tuple[Path, Path, Any], tmp_path: Path) -> None:
    _, _, model = bundle
    replica = start(bundle, tmp_path, {})
    try:
        rows = np.random.default_rng(5).normal(size=(50, 6))
        with replica.channel() as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            answer = stub.Predict(
                inference_pb2.PredictRequest(
                    endpoint_name="trees", content_type="text/csv", text=csv(rows)
                ),
                timeout=30,
            )
        assert json.loads(answer.text or answer.body) == model.predict(rows).tolist()
        text = metrics_text(replica)
    finally:
        assert replica.stop() == 0
    assert 'skmaker_inference_predict_path{endpoint="trees",path="onnxruntime"} 1.0' in text
    assert 'skmaker_inference_predict_path{endpoint="trees",path="scikit-learn"} 0.0' in text
    assert 'skmaker_inference_micro_batching{endpoint="trees"} 1.0' in text
    assert "predict path onnxruntime" in replica.logs()
    assert "verified on" in replica.logs()


def test_concurrent_calls_each_get_their_own_answers_and_errors(
    bundle: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    _, _, model = bundle
    # scikit-learn's predict takes long enough per call that 32 callers overlap and stack.
    replica = start(bundle, tmp_path, {"SKMAKER_FAST_PATH": "0"})
    rng = np.random.default_rng(11)
    calls = [rng.normal(size=(1 + i % 4, 6)) for i in range(320)]
    bad = {7, 100, 233}
    for index in bad:
        calls[index][0, 2] = np.nan  # GradientBoosting takes no NaN: the call fails

    def send(stub: Any, index: int) -> tuple[int, Any]:
        request = inference_pb2.PredictRequest(
            endpoint_name="trees", content_type="text/csv", text=csv(calls[index])
        )
        try:
            answer = stub.Predict(request, timeout=60)
        except grpc.RpcError as err:
            return index, err
        return index, json.loads(answer.text or answer.body)

    try:
        with replica.channel() as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            with ThreadPoolExecutor(32) as pool:
                results = list(pool.map(lambda i: send(stub, i), range(len(calls))))
        text = metrics_text(replica)
    finally:
        assert replica.stop() == 0
    for index, result in results:
        if index in bad:
            assert isinstance(result, grpc.RpcError), index
            assert result.code() == grpc.StatusCode.UNKNOWN
            assert "NaN" in result.details()
        else:
            assert result == model.predict(calls[index].astype(np.float32)).tolist(), index
    stacked = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("skmaker_inference_stacked_calls_total{")
    ]
    assert stacked and stacked[0] > 0, "no call was stacked with another"
    assert 'skmaker_inference_predict_path{endpoint="trees",path="scikit-learn"} 1.0' in text
