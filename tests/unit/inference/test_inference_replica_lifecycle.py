"""A replica's life in-process: loading (not serving, shared port unbound), failing, draining.

Also the model loader's control-backed path against a fake `ModelSource`: archives unpacked,
code from `source_uri` or `model/code`, the model's environment applied before import, the
requirements cache put on sys.path, and the scikit-learn version warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime import lifecycle
from services.sagemaker.scripts.requirements import COMPLETE_MARKER, requirements_digest
from services.sagemaker.serving.model_loader import ModelLoader, ModelLoadFailed, ModelSpec
from skmaker.v1 import inference_pb2, inference_pb2_grpc, open_inference_pb2_grpc
from skmaker.v1 import open_inference_pb2 as v2
from tests.harness import source_bundle
from tests.unit.inference.replicas import (
    IRIS_ROWS,
    MODEL_FN,
    expected_labels,
    start_replica,
    write_script,
)

CSV_ROW = "5.1,3.5,1.4,0.2"


def health_status(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def predict(channel: grpc.Channel) -> inference_pb2.PredictResponse:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    request = inference_pb2.PredictRequest(content_type="text/csv", text=CSV_ROW)
    return stub.Predict(request, timeout=10)


@pytest.fixture
def reserved_port() -> Iterator[int]:
    """A port held by a bound, non-listening SO_REUSEPORT socket: replicas may share it."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    yield int(holder.getsockname()[1])
    holder.close()


def wait_for(condition: Any, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def test_not_serving_and_no_shared_port_until_loaded(
    isolated_user_code: Path, iris_model_dir: Path, iris_model: Any, reserved_port: int
) -> None:
    release = isolated_user_code / "release"
    code_dir = write_script(
        isolated_user_code / "code",
        "slow.py",
        MODEL_FN.replace(
            "def model_fn(model_dir):\n",
            "def model_fn(model_dir):\n"
            "    import time\n"
            f"    while not os.path.exists({str(release)!r}):\n"
            "        time.sleep(0.01)\n",
        ),
    )
    port_file = isolated_user_code / "port.json"
    started: list[Any] = []
    starter = threading.Thread(
        target=lambda: started.append(
            start_replica(
                iris_model_dir,
                code_dir,
                "slow.py",
                shared_port=reserved_port,
                port_file=str(port_file),
            )
        )
    )
    starter.start()
    try:
        wait_for(port_file.exists)
        ports = json.loads(port_file.read_text())
        assert set(ports) == {"grpc", "metrics"}
        own = f"127.0.0.1:{ports['grpc']}"
        assert health_status(own) == health_pb2.HealthCheckResponse.NOT_SERVING
        with grpc.insecure_channel(own) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                predict(channel)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "still loading" in raised.value.details()
            ready = open_inference_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                v2.ServerReadyRequest(), timeout=5
            )
            assert not ready.ready
        # The kernel must not hand connections on the shared port to a loading replica.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", reserved_port), timeout=5).close()
        release.write_text("")
        starter.join(30)
        (replica,) = started
        try:
            assert replica.running.shared_port == reserved_port
            assert json.loads(port_file.read_text())["shared"] == reserved_port
            assert health_status(own) == health_pb2.HealthCheckResponse.SERVING
            with grpc.insecure_channel(f"127.0.0.1:{reserved_port}") as shared:
                answer = predict(shared)
            assert json.loads(answer.text) == expected_labels(iris_model, IRIS_ROWS[:1])
        finally:
            replica.stop()
    finally:
        release.write_text("")
        starter.join(30)


def test_draining_replica_refuses_new_requests(
    isolated_user_code: Path, iris_model_dir: Path
) -> None:
    code_dir = write_script(isolated_user_code / "code", "serve.py", MODEL_FN)
    replica = start_replica(iris_model_dir, code_dir, "serve.py")
    try:
        assert predict(replica.channel).text
        on_drain = replica.running.service.on_drain
        assert on_drain is not None
        on_drain()
        with pytest.raises(grpc.RpcError) as raised:
            predict(replica.channel)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert raised.value.details() == "replica is draining; retry on another replica"
        stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(replica.channel)
        assert not stub.ServerReady(v2.ServerReadyRequest(), timeout=5).ready
    finally:
        replica.stop()


def test_missing_model_fn_fails_start_and_writes_the_failure_file(
    isolated_user_code: Path, iris_model_dir: Path
) -> None:
    code_dir = write_script(isolated_user_code / "code", "train_only.py", "import os\n")
    failure_file = isolated_user_code / "failure.txt"
    port_file = isolated_user_code / "port.json"
    with pytest.raises(ModelLoadFailed, match="defines no model_fn") as raised:
        start_replica(
            iris_model_dir,
            code_dir,
            "train_only.py",
            failure_file=str(failure_file),
            port_file=str(port_file),
        )
    reason = failure_file.read_text()
    assert reason == str(raised.value) + "\n"
    assert "entry point 'train_only.py' defines no model_fn" in reason
    assert "\n" not in reason.rstrip("\n")
    # The own port was bound (to report NOT_SERVING while loading) and is released again.
    grpc_port = json.loads(port_file.read_text())["grpc"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", grpc_port), timeout=5).close()


def test_lifecycle_without_shared_port_writes_no_shared_key(tmp_path: Path) -> None:
    settings = lifecycle.ServiceSettings(port_file=str(tmp_path / "port.json"))
    running = lifecycle.start(lifecycle.Service(name="plain", servicers=[]), settings)
    try:
        assert running.shared_port is None
        assert set(json.loads((tmp_path / "port.json").read_text())) == {"grpc", "metrics"}
    finally:
        running.stop()


class FakeSource:
    """A ModelSource holding one model and its archives in memory."""

    def __init__(self, spec: ModelSpec, archives: dict[str, bytes], sklearn: str | None) -> None:
        self.spec = spec
        self.archives = archives
        self.sklearn = sklearn

    def describe_model(self, name: str) -> ModelSpec:
        if name != self.spec.name:
            raise ModelLoadFailed(f"DescribeModel({name!r}) failed: NOT_FOUND")
        return self.spec

    def download(self, uri: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.archives[uri])

    def trained_sklearn_version(self, training_job_name: str) -> str | None:
        return self.sklearn


ENV_AWARE_SCRIPT = (
    MODEL_FN
    + """
# Read at import time, which is why the environment must be applied first.
GREETING = os.environ["GREETING"]
import cached_helper  # from the requirements cache


def output_fn(prediction, accept):
    return f"{GREETING} {cached_helper.VALUE} {prediction.tolist()}", "text/plain"
"""
)


@pytest.fixture
def process_environ() -> Iterator[MutableMapping[str, str]]:
    """os.environ itself (the user module reads it at import), restored after the test."""
    saved = dict(os.environ)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("code_from", ["source_uri", "model/code"])
def test_loader_from_a_model_source(
    isolated_user_code: Path,
    iris_model_dir: Path,
    iris_model: Any,
    code_from: str,
    caplog: pytest.LogCaptureFixture,
    process_environ: MutableMapping[str, str],
) -> None:
    model_bytes = (iris_model_dir / "model.joblib").read_bytes()
    code = {"inference.py": ENV_AWARE_SCRIPT.encode(), "requirements.txt": b"cached-helper\n"}
    if code_from == "source_uri":
        archives = {
            "store://m/model.tar.gz": source_bundle({"model.joblib": model_bytes}),
            "store://m/sourcedir.tar.gz": source_bundle(code),
        }
        source_uri = "store://m/sourcedir.tar.gz"
    else:
        files = {"model.joblib": model_bytes, **{f"code/{k}": v for k, v in code.items()}}
        archives = {"store://m/model.tar.gz": source_bundle(files)}
        source_uri = ""
    spec = ModelSpec(
        name="iris-model",
        model_data_uri="store://m/model.tar.gz",
        entry_point="inference.py",
        source_uri=source_uri,
        environment={"GREETING": "hello", "SAGEMAKER_REGION": "eu-west-1"},
        training_job_name="iris-job",
    )
    # A finished install in the cache, so no pip runs: the loader must put it on sys.path.
    deps_dir = isolated_user_code / "deps"
    cached = deps_dir / requirements_digest(code["requirements.txt"], sys.executable)
    cached.mkdir(parents=True)
    (cached / COMPLETE_MARKER).write_text("")
    (cached / "cached_helper.py").write_text("VALUE = 42\n")
    environ = process_environ
    environ.pop("SAGEMAKER_REGION", None)
    loader = ModelLoader(isolated_user_code / "work" / "r1", deps_dir, environ)
    with caplog.at_level(logging.WARNING, logger="services.sagemaker.serving.model_loader"):
        loaded = loader.load_model(FakeSource(spec, archives, "0.1.0"), "iris-model")
    expected_code = (
        isolated_user_code / "work" / "r1" / ("code" if code_from == "source_uri" else "model/code")
    )
    assert loaded.code_dir == expected_code
    assert loaded.model_dir == isolated_user_code / "work" / "r1" / "model"
    assert not (isolated_user_code / "work" / "r1" / "downloads" / "model.tar.gz").exists()
    body, content_type = loaded.handler.invoke(CSV_ROW, "text/csv", "")
    labels = expected_labels(iris_model, IRIS_ROWS[:1])
    assert (body.decode(), content_type) == (f"hello 42 {labels}", "text/plain")
    assert environ["SAGEMAKER_PROGRAM"] == "inference.py"
    assert environ["SAGEMAKER_SUBMIT_DIRECTORY"] == str(expected_code)
    assert environ["SAGEMAKER_REGION"] == "eu-west-1"
    assert "trained with scikit-learn 0.1.0" in caplog.text


def test_loader_refuses_an_unsafe_archive(isolated_user_code: Path) -> None:
    spec = ModelSpec(name="m", model_data_uri="store://m.tar.gz", entry_point="x.py")
    source = FakeSource(spec, {"store://m.tar.gz": source_bundle({"../escape.py": b""})}, None)
    loader = ModelLoader(isolated_user_code / "work", isolated_user_code / "deps", {})
    with pytest.raises(ModelLoadFailed, match=r"cannot unpack model.tar.gz .*'\.\./escape\.py'"):
        loader.load_model(source, "m")
