"""`python -m services.gateway` as a real process in front of the real control (`--local`).

One control serves two endpoints: `iris` (2 replicas of a tree on iris) and `shifted` (one
replica of a tree whose labels are shifted by 10, created after the gateway started). The
gateway reads its routing table from the control; every call goes through its one port:
skmaker Predict for both endpoints, spread over both replicas, V2 ModelInfer, grpcurl, the
client's `Session(gateway_address=...)`, an unknown endpoint, and a replica SIGTERMed under
load. Everything runs twice: with HAProxy forwarding (`--data-plane haproxy`) and with the
Python gateway forwarding (`--data-plane python`). The gateway's SIGTERM must exit 0 (asserted
when each stack ends).
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker import Session
from skmaker.v1 import (
    artifacts_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    model_pb2,
    open_inference_pb2,
    open_inference_pb2_grpc,
    serving_pb2,
    serving_pb2_grpc,
    transfer,
)
from tests.harness import REPO_ROOT, ServiceProcess, is_running, run_service

pytestmark = pytest.mark.integration

GRPCURL = REPO_ROOT / ".venv" / "bin" / "grpcurl"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 3.3, 6.0, 2.5]]
CSV = "\n".join(",".join(str(v) for v in row) for row in ROWS)
SERVING_SCRIPT = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""
IN_SERVICE = model_pb2.ENDPOINT_STATUS_IN_SERVICE
SERVING = model_pb2.REPLICA_STATE_SERVING


def _iris_model(label_offset: int) -> DecisionTreeClassifier:
    iris = load_iris()
    return DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target + label_offset)


def _expected(label_offset: int) -> list[int]:
    predicted = _iris_model(label_offset).predict(np.asarray(ROWS, dtype=np.float32))
    return [int(label) for label in predicted]


def _create_model(control: ServiceProcess, tmp: Path, name: str, label_offset: int) -> None:
    buffer = io.BytesIO()
    joblib.dump(_iris_model(label_offset), buffer)
    archive = tmp / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in (
            ("model.joblib", buffer.getvalue()),
            ("code/inference.py", SERVING_SCRIPT.encode()),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    channel = control.channel()
    uri = f"store://models/{name}/model.tar.gz"
    transfer.upload_file(artifacts_pb2_grpc.ArtifactServiceStub(channel), archive, uri)
    serving_pb2_grpc.ModelServiceStub(channel).CreateModel(
        serving_pb2.CreateModelRequest(
            model=model_pb2.Model(name=name, model_data_uri=uri, entry_point="inference.py")
        ),
        timeout=10,
    )


def _create_endpoint(control: ServiceProcess, name: str, model: str, replicas: int) -> None:
    serving_pb2_grpc.EndpointServiceStub(control.channel()).CreateEndpoint(
        serving_pb2.CreateEndpointRequest(name=name, model_name=model, initial_replicas=replicas),
        timeout=10,
    )


def _wait_in_service(control: ServiceProcess, name: str, timeout_s: float = 60.0) -> Any:
    stub = serving_pb2_grpc.EndpointServiceStub(control.channel())
    deadline = time.monotonic() + timeout_s
    while True:
        endpoint = stub.DescribeEndpoint(
            serving_pb2.DescribeEndpointRequest(name=name), timeout=10
        ).endpoint
        if endpoint.status == IN_SERVICE:
            return endpoint
        assert time.monotonic() < deadline, f"{endpoint}\n{control.logs()}"
        time.sleep(0.1)


def _replica_pids(data_dir: Path) -> dict[tuple[str, str], int]:
    """Live inference replicas working under `data_dir`, by (endpoint, replica id)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if "services.inference" in args and any(str(data_dir) in arg for arg in args):
            flags = dict(itertools.pairwise(args))
            found[(flags["--endpoint-name"], flags["--replica-id"])] = int(entry.name)
    return found


@dataclass
class Stack:
    control: ServiceProcess
    gateway: ServiceProcess
    data_dir: Path


@pytest.fixture(scope="module", params=["haproxy", "python"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if request.param == "haproxy" and shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (make test installs it)")
    tmp = tmp_path_factory.mktemp(f"gateway-stack-{request.param}")
    data_dir = tmp / "data"
    control = run_service(
        "control", tmp, ["--local", "--local-trainers", "0", "--data-dir", str(data_dir)]
    )
    gateway: ServiceProcess | None = None
    try:
        _create_model(control, tmp, "tree", 0)
        _create_model(control, tmp, "shifted-tree", 10)
        _create_endpoint(control, "iris", "tree", 2)
        _wait_in_service(control, "iris")
        gateway = run_service(
            "gateway", tmp, ["--control", control.address, "--data-plane", request.param]
        )
        # Created while the gateway runs: found by its refresh or by a describe on a miss.
        _create_endpoint(control, "shifted", "shifted-tree", 1)
        _wait_in_service(control, "shifted")
        yield Stack(control, gateway, data_dir)
    finally:
        try:
            if gateway is not None:
                assert gateway.stop() == 0  # SIGTERM: drains and exits 0
        finally:
            control.stop()
            for pid in _replica_pids(data_dir).values():
                os.kill(pid, signal.SIGKILL)


def _predict(address: str, endpoint: str) -> Any:
    with grpc.insecure_channel(address) as channel:
        return _predict_on(channel, endpoint)


def _predict_on(channel: grpc.Channel, endpoint: str, timeout: float = 10) -> Any:
    return inference_pb2_grpc.InferenceServiceStub(channel).Predict(
        inference_pb2.PredictRequest(
            endpoint_name=endpoint, content_type="text/csv", accept="text/csv", text=CSV
        ),
        timeout=timeout,
    )


def _labels(answer: Any) -> list[int]:
    return [int(float(line)) for line in answer.text.split()]


def test_predict_through_the_gateway_for_two_endpoints(stack: Stack) -> None:
    iris = _predict(stack.gateway.address, "iris")
    shifted = _predict(stack.gateway.address, "shifted")
    assert _labels(iris) == _expected(0)
    assert _labels(shifted) == _expected(10)


def test_the_gateway_spreads_calls_over_both_replicas(stack: Stack) -> None:
    endpoint = _wait_in_service(stack.control, "iris")
    replica_ids = {r.id for r in endpoint.replicas if r.state == SERVING}
    assert len(replica_ids) == 2
    with grpc.insecure_channel(stack.gateway.address) as channel:
        served = collections.Counter(_predict_on(channel, "iris").replica_id for _ in range(60))
    assert set(served) == replica_ids, served
    assert min(served.values()) >= 10, served


def test_v2_model_infer_through_the_gateway(stack: Stack) -> None:
    tensor = open_inference_pb2.ModelInferRequest.InferInputTensor(
        name="input-0",
        datatype="FP32",
        shape=[len(ROWS), 4],
        contents=open_inference_pb2.InferTensorContents(
            fp32_contents=[v for row in ROWS for v in row]
        ),
    )
    with grpc.insecure_channel(stack.gateway.address) as channel:
        stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(
            open_inference_pb2.ModelInferRequest(model_name="shifted", inputs=[tensor]),
            timeout=10,
        )
        assert list(answer.outputs[0].contents.int64_contents) == _expected(10)
        assert stub.ServerReady(open_inference_pb2.ServerReadyRequest(), timeout=10).ready


def test_grpcurl_through_the_gateway(stack: Stack) -> None:
    result = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            '{"endpoint_name":"iris","content_type":"text/csv","text":"5.1,3.5,1.4,0.2"}',
            stack.gateway.address,
            "skmaker.v1.InferenceService/Predict",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["text"] == "[0]" and answer["content_type"] == "application/json"


def test_grpcurl_describes_predict_on_the_gateway(stack: Stack) -> None:
    result = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            stack.gateway.address,
            "describe",
            "skmaker.v1.InferenceService.Predict",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "rpc Predict ( .skmaker.v1.PredictRequest )" in result.stdout


def test_the_log_names_the_port_callers_use(stack: Stack) -> None:
    # With HAProxy in front, the Python server listens on a loopback port of its own; the
    # line people read to find the gateway must name the one in the port file.
    log = stack.gateway.stderr_path.read_text()
    assert f"gateway listening grpc={stack.gateway.grpc_port} " in log, stack.gateway.logs()


@pytest.mark.parametrize("megabytes", [10, 100])
def test_an_oversized_predict_is_resource_exhausted_on_either_data_plane(
    stack: Stack, megabytes: int
) -> None:
    # 10 MB: over the replicas' 6 MiB payload limit; 100 MB: over the Python gateway's own
    # message limit too. Through HAProxy both used to reach the caller as CANCELLED.
    request = inference_pb2.PredictRequest(
        endpoint_name="iris", content_type="text/csv", body=b"1" * (megabytes * 1024 * 1024)
    )
    with grpc.insecure_channel(stack.gateway.address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        assert _labels(_predict_on(channel, "iris")) == _expected(0)


def test_an_unknown_endpoint_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _predict(stack.gateway.address, "no-such-endpoint")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_client_predicts_through_the_gateway(stack: Stack) -> None:
    from skmaker import SKLearnPredictor

    with Session(stack.control.address, gateway_address=stack.gateway.address) as session:
        predictor = SKLearnPredictor("iris", session=session)
        assert predictor.predict(np.asarray(ROWS)).astype(int).tolist() == _expected(0)


def test_a_replica_draining_under_load_fails_no_call(stack: Stack) -> None:
    endpoint = _wait_in_service(stack.control, "iris")
    victim = endpoint.replicas[0].id
    pid = _replica_pids(stack.data_dir)[("iris", victim)]
    failures: list[str] = []
    served: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def load() -> None:
        # Bounded: at most 3000 calls per thread, and the test stops the threads itself.
        with grpc.insecure_channel(stack.gateway.address) as channel:
            for _ in range(3000):
                if stop.is_set():
                    return
                try:
                    served[_predict_on(channel, "iris").replica_id] += 1
                except grpc.RpcError as err:
                    failures.append(f"{err.code().name}: {err.details()}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # calls flow to both replicas first
        before = served[victim]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while is_running(pid):
            assert time.monotonic() < deadline, "the SIGTERMed replica did not exit"
            time.sleep(0.05)
        time.sleep(1.0)  # and calls go on after it left
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert before > 0, served
    assert failures == [], failures[:5]
    assert sum(served.values()) > 100, served
