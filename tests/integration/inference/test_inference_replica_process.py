"""`python -m services.inference` as a real process: grpcurl, failure file, shared port, SIGTERM.

Replicas run standalone (`--model-dir/--code-dir/--entry-point`) through `tests.harness`, whose
`stop()` sends SIGTERM and asserts exit code 0. The control-backed start (DescribeModel +
download) is exercised against a real control once it serves ModelService.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from services.runtime.archives import make_tar_gz
from skmaker.v1 import (
    artifacts_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    model_pb2,
    serving_pb2,
    serving_pb2_grpc,
    transfer,
)
from tests.harness import REPO_ROOT, ServiceProcess, run_service

pytestmark = pytest.mark.integration

GRPCURL = REPO_ROOT / ".venv" / "bin" / "grpcurl"
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
MODEL_FN = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """(model dir with model.joblib, code dir with serve.py, the fitted model)."""
    root = tmp_path_factory.mktemp("bundle")
    model_dir, code_dir = root / "model", root / "code"
    model_dir.mkdir()
    code_dir.mkdir()
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)
    joblib.dump(model, model_dir / "model.joblib")
    (code_dir / "serve.py").write_text(MODEL_FN)
    return model_dir, code_dir, model


def expected(model: Any, rows: list[list[float]]) -> list[int]:
    return [int(v) for v in model.predict(np.array(rows, dtype=np.float32))]


def standalone_args(bundle: tuple[Path, Path, Any], work: Path, replica_id: str) -> list[str]:
    model_dir, code_dir, _ = bundle
    return [
        f"--model-dir={model_dir}",
        f"--code-dir={code_dir}",
        "--entry-point=serve.py",
        "--endpoint-name=iris",
        f"--replica-id={replica_id}",
        f"--work-dir={work}",
        "--shutdown-grace-s=2",
    ]


@pytest.fixture(scope="module")
def replica(
    bundle: tuple[Path, Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("replica")
    process = run_service("inference", work, standalone_args(bundle, work / "work", "r-1"))
    yield process
    process.stop()


def grpcurl(address: str, *args: str, data: str | None = None) -> str:
    command = [str(GRPCURL), "-plaintext"]
    if data is not None:
        command += ["-d", data]
    result = subprocess.run(
        [*command, address, *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_the_services(replica: ServiceProcess) -> None:
    services = set(grpcurl(replica.address, "list").split())
    assert {
        "skmaker.v1.InferenceService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_grpcurl_describes_the_methods(replica: ServiceProcess) -> None:
    predict = grpcurl(replica.address, "describe", "skmaker.v1.InferenceService.Predict")
    infer = grpcurl(replica.address, "describe", "inference.GRPCInferenceService.ModelInfer")
    assert "skmaker.v1.InferenceService.Predict is a method:" in predict
    assert "rpc ModelInfer ( .inference.ModelInferRequest )" in infer


def test_grpcurl_predict_csv_and_json_read_as_text(
    replica: ServiceProcess, bundle: tuple[Path, Path, Any]
) -> None:
    model = bundle[2]
    method = "skmaker.v1.InferenceService/Predict"
    one_row = '{"content_type":"text/csv","text":"5.1,3.5,1.4,0.2"}'
    csv = json.loads(grpcurl(replica.address, method, data=one_row))
    assert csv["content_type"] == "application/json"
    assert json.loads(csv["text"]) == expected(model, IRIS_ROWS[:1])
    assert csv["replica_id"] == "r-1"
    request = {
        "content_type": "application/json",
        "accept": "text/csv",
        "text": json.dumps(IRIS_ROWS),
    }
    as_csv = json.loads(grpcurl(replica.address, method, data=json.dumps(request)))
    assert as_csv["content_type"] == "text/csv"
    assert as_csv["text"].split() == [str(v) for v in expected(model, IRIS_ROWS)]


def test_grpcurl_model_infer(replica: ServiceProcess, bundle: tuple[Path, Path, Any]) -> None:
    request = {
        "model_name": "iris",
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP32",
                "shape": [3, 4],
                "contents": {"fp32_contents": [v for row in IRIS_ROWS for v in row]},
            }
        ],
    }
    answer = json.loads(
        grpcurl(
            replica.address, "inference.GRPCInferenceService/ModelInfer", data=json.dumps(request)
        )
    )
    (output,) = answer["outputs"]
    assert output["name"] == "predict"
    assert output["datatype"] == "INT64"
    labels = [int(v) for v in output["contents"]["int64_contents"]]
    assert labels == expected(bundle[2], IRIS_ROWS)


def test_grpcurl_bad_input_names_the_problem(replica: ServiceProcess) -> None:
    result = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            '{"content_type":"text/csv","text":"5.1,3.5"}',
            replica.address,
            "skmaker.v1.InferenceService/Predict",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "expected 4 features per row, got 2" in result.stderr


def test_missing_model_fn_exits_non_zero_with_a_failure_file(
    bundle: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "scikit_learn_iris.py").write_text(
        textwrap.dedent(
            """
            if __name__ == "__main__":
                print("training")
            """
        )
    )
    failure_file = tmp_path / "failure.txt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.inference",
            f"--model-dir={bundle[0]}",
            f"--code-dir={code_dir}",
            "--entry-point=scikit_learn_iris.py",
            f"--work-dir={tmp_path / 'work'}",
            "--grpc-port=0",
            "--metrics-port=0",
            f"--port-file={tmp_path / 'port.json'}",
            f"--failure-file={failure_file}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    reason = failure_file.read_text().strip()
    assert "entry point 'scikit_learn_iris.py' defines no model_fn" in reason
    assert reason in result.stderr


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.inference", "--grpc-port=0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--model-dir" in result.stderr


@pytest.fixture
def shared_port() -> Iterator[int]:
    """A port held by a bound, non-listening SO_REUSEPORT socket, so replicas can share it."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    yield int(holder.getsockname()[1])
    holder.close()


def replica_ids_over_fresh_connections(address: str, count: int) -> list[str]:
    request = inference_pb2.PredictRequest(content_type="text/csv", text="5.1,3.5,1.4,0.2")
    seen = []
    for _ in range(count):
        # A new channel is a new TCP connection, which the kernel places on one of the sockets.
        with grpc.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            seen.append(stub.Predict(request, timeout=10).replica_id)
    return seen


def test_two_replicas_share_a_port_and_one_can_leave(
    bundle: tuple[Path, Path, Any], tmp_path: Path, shared_port: int
) -> None:
    replicas = [
        run_service(
            "inference",
            tmp_path / name,
            [
                *standalone_args(bundle, tmp_path / name / "work", name),
                f"--shared-port={shared_port}",
            ],
            label=name,
        )
        for name in ("r-a", "r-b")
    ]
    try:
        for process in replicas:
            assert json.loads(process.port_file.read_text())["shared"] == shared_port
        shared = f"127.0.0.1:{shared_port}"
        assert set(replica_ids_over_fresh_connections(shared, 40)) == {"r-a", "r-b"}
        replicas[0].stop()  # SIGTERM: asserts exit 0
        assert set(replica_ids_over_fresh_connections(shared, 10)) == {"r-b"}
    finally:
        for process in replicas:
            if process.process.poll() is None:
                process.stop()


def test_replica_loads_its_model_from_the_control(
    bundle: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    control = run_service("control", tmp_path / "control", ["--data-dir", str(tmp_path / "data")])
    try:
        channel = control.channel()
        archive = tmp_path / "model.tar.gz"
        staging = tmp_path / "staging"
        (staging / "code").mkdir(parents=True)
        (staging / "model.joblib").write_bytes((bundle[0] / "model.joblib").read_bytes())
        (staging / "code" / "serve.py").write_text(MODEL_FN)
        make_tar_gz(staging, archive)
        uri = transfer.store_uri("models/iris/model.tar.gz")
        transfer.upload_file(artifacts_pb2_grpc.ArtifactServiceStub(channel), archive, uri)
        models = serving_pb2_grpc.ModelServiceStub(channel)
        model = model_pb2.Model(
            name="iris-model",
            model_data_uri=uri,
            entry_point="serve.py",
            environment={"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"},
        )
        try:
            models.CreateModel(serving_pb2.CreateModelRequest(model=model), timeout=10)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                pytest.skip("the control does not serve ModelService yet (CreateModel)")
            raise
        work = tmp_path / "replica"
        replica = run_service(
            "inference",
            work,
            [
                f"--control={control.address}",
                "--endpoint-name=iris",
                "--model-name=iris-model",
                "--replica-id=r-c",
                f"--work-dir={work / 'work'}",
                f"--failure-file={work / 'failure.txt'}",
            ],
        )
        try:
            stub = inference_pb2_grpc.InferenceServiceStub(replica.channel())
            request = inference_pb2.PredictRequest(content_type="text/csv", text="5.1,3.5,1.4,0.2")
            answer = stub.Predict(request, timeout=10)
            assert answer.content_type == "text/csv"
            assert answer.text.split() == [str(v) for v in expected(bundle[2], IRIS_ROWS[:1])]
            assert not (work / "failure.txt").exists()
        finally:
            replica.stop()
    finally:
        control.stop()


def test_sigterm_exits_zero(bundle: tuple[Path, Path, Any], tmp_path: Path) -> None:
    process = run_service("inference", tmp_path, standalone_args(bundle, tmp_path / "work", "r-t"))
    assert process.stop() == 0
    assert os.path.exists(process.port_file)
