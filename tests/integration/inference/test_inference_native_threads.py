"""A replica sizes the model's native thread pools to its cores and its RPC threads.

The handler reports, from inside the RPC thread that serves the call, the size of every native
pool threadpoolctl sees there (OpenMP's size is per thread, so only a call can tell).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import joblib
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier

from services.runtime import native_threads
from skmaker.v1 import inference_pb2, inference_pb2_grpc
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

REPORTING_HANDLER = """
import os

import joblib
import numpy as np
import threadpoolctl


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    model.predict(data)  # the pools exist and have run once in this thread
    pools = threadpoolctl.threadpool_info()
    return {
        "openmp": sorted({p["num_threads"] for p in pools if p["user_api"] == "openmp"}),
        "blas": sorted({p["num_threads"] for p in pools if p["user_api"] == "blas"}),
    }


def output_fn(prediction, accept):
    import json

    return json.dumps(prediction)
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundle")
    model_dir, code_dir = root / "model", root / "code"
    model_dir.mkdir()
    code_dir.mkdir()
    features, labels = make_classification(n_samples=300, n_features=5, random_state=0)
    joblib.dump(
        HistGradientBoostingClassifier(max_iter=5).fit(features, labels),
        model_dir / "model.joblib",
    )
    (code_dir / "serve.py").write_text(REPORTING_HANDLER)
    return model_dir, code_dir


def start_replica(bundle: tuple[Path, Path], work: Path, *extra: str) -> ServiceProcess:
    model_dir, code_dir = bundle
    return run_service(
        "inference",
        work,
        [
            f"--model-dir={model_dir}",
            f"--code-dir={code_dir}",
            "--entry-point=serve.py",
            "--endpoint-name=hgb",
            f"--work-dir={work / 'work'}",
            "--shutdown-grace-s=2",
            *extra,
        ],
    )


def pools_seen_by_calls(address: str, calls: int = 8) -> list[dict[str, list[int]]]:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.PredictRequest(
            endpoint_name="hgb", content_type="text/csv", body=b"0.1,0.2,0.3,0.4,0.5"
        )
        answers = [stub.Predict(request, timeout=30) for _ in range(calls)]
    return [json.loads(answer.text or answer.body) for answer in answers]


@pytest.fixture
def no_thread_variables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in native_threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.mark.usefixtures("no_thread_variables")
def test_each_call_gets_its_share_of_the_cores(bundle: tuple[Path, Path], tmp_path: Path) -> None:
    # 2 RPC threads: each call's share is cores // 2 (1 on a 2-core machine).
    expected = native_threads.threads_per_call(2)
    replica = start_replica(bundle, tmp_path, "--max-workers=2")
    try:
        seen = pools_seen_by_calls(replica.address)
    finally:
        replica.stop()
    assert all(pools == {"openmp": [expected], "blas": [expected]} for pools in seen), seen
    assert f"native thread pools per call: blas={expected}, openmp={expected}" in replica.logs()


@pytest.mark.usefixtures("no_thread_variables")
def test_many_rpc_threads_run_native_code_single_threaded(
    bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    replica = start_replica(bundle, tmp_path)  # 32 RPC threads by default
    try:
        seen = pools_seen_by_calls(replica.address)
    finally:
        replica.stop()
    assert all(pools == {"openmp": [1], "blas": [1]} for pools in seen), seen


@pytest.mark.usefixtures("no_thread_variables")
def test_the_operators_variable_wins(
    bundle: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    replica = start_replica(bundle, tmp_path, "--native-threads=2")
    try:
        seen = pools_seen_by_calls(replica.address)
    finally:
        replica.stop()
    assert all(pools == {"openmp": [3], "blas": [2]} for pools in seen), seen
