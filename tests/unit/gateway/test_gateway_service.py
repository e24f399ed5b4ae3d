"""The gateway in-process, in front of real standalone inference replicas (processes).

Two endpoints: `iris` (two replicas of a tree on iris) and `shifted` (one replica of a tree
whose labels are shifted by 10, so answers tell which endpoint served them). The routing table
is a fixed one (`--routes`); the control's table source is covered by the integration tests.
"""

from __future__ import annotations

import collections
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from services.gateway import app
from services.gateway.config import GatewaySettings
from services.gateway.forwarder import PREDICT
from services.runtime import lifecycle
from skmaker.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    open_inference_pb2,
    open_inference_pb2_grpc,
)
from tests.harness import ServiceProcess, run_service

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
CSV = "\n".join(",".join(str(v) for v in row) for row in ROWS)
SERVE = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def _model_dir(folder: Path, label_offset: int) -> Path:
    folder.mkdir(parents=True)
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target + label_offset)
    joblib.dump(model, folder / "model.joblib")
    return folder


def _expected(label_offset: int) -> list[int]:
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target + label_offset)
    return [int(v) for v in model.predict(np.asarray(ROWS, dtype=np.float32))]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    """Replica processes by id: iris-a and iris-b serve `iris`, shifted-a serves `shifted`."""
    root = tmp_path_factory.mktemp("gateway-replicas")
    code = root / "code"
    code.mkdir()
    (code / "serve.py").write_text(SERVE)
    models = {"iris": _model_dir(root / "iris", 0), "shifted": _model_dir(root / "shifted", 10)}
    started: dict[str, ServiceProcess] = {}
    try:
        for replica_id, endpoint in (
            ("iris-a", "iris"),
            ("iris-b", "iris"),
            ("shifted-a", "shifted"),
        ):
            work = root / replica_id
            started[replica_id] = run_service(
                "inference",
                work,
                [
                    "--model-dir",
                    str(models[endpoint]),
                    "--code-dir",
                    str(code),
                    "--entry-point",
                    "serve.py",
                    "--endpoint-name",
                    endpoint,
                    "--replica-id",
                    replica_id,
                    "--work-dir",
                    str(work / "work"),
                    "--shutdown-grace-s",
                    "1",
                ],
                label=replica_id,
            )
        yield started
    finally:
        for process in started.values():
            process.stop()


def _start_gateway(routes: str, **overrides: Any) -> lifecycle.RunningService:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 1.0,
        "routes": routes,
        # The Python data plane's own forwarding (HAProxy's is tested in tests/integration).
        "data_plane": "python",
    }
    values.update(overrides)
    settings = GatewaySettings(**values)
    settings.check()
    return lifecycle.start(app.build(settings), settings)


@pytest.fixture(scope="module")
def gateway(replicas: dict[str, ServiceProcess]) -> Iterator[lifecycle.RunningService]:
    routes = (
        f"iris={replicas['iris-a'].address},{replicas['iris-b'].address};"
        f"shifted={replicas['shifted-a'].address}"
    )
    running = _start_gateway(routes)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(gateway: lifecycle.RunningService) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield channel


def _predict(channel: grpc.Channel, endpoint: str, text: str = CSV) -> Any:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    return stub.Predict(
        inference_pb2.PredictRequest(
            endpoint_name=endpoint, content_type="text/csv", accept="text/csv", text=text
        ),
        timeout=10,
    )


def _labels(answer: Any) -> list[int]:
    return [int(float(line)) for line in answer.text.split()]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


# ----------------------------------------------------------------- routing


def test_predict_is_routed_by_endpoint_name(channel: grpc.Channel) -> None:
    iris = _predict(channel, "iris")
    shifted = _predict(channel, "shifted")
    assert _labels(iris) == _expected(0) and iris.replica_id.startswith("iris-")
    assert _labels(shifted) == _expected(10) and shifted.replica_id == "shifted-a"


def test_calls_spread_over_both_replicas(channel: grpc.Channel) -> None:
    served = collections.Counter(_predict(channel, "iris").replica_id for _ in range(60))
    assert set(served) == {"iris-a", "iris-b"}
    assert min(served.values()) >= 10, served


def test_concurrent_calls_go_to_the_less_busy_replica(channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    request = inference_pb2.PredictRequest(endpoint_name="iris", content_type="text/csv", text=CSV)
    calls = [stub.Predict.future(request, timeout=10) for _ in range(40)]
    served = collections.Counter(call.result().replica_id for call in calls)
    assert set(served) == {"iris-a", "iris-b"} and min(served.values()) >= 8, served


def test_an_empty_endpoint_name_is_invalid_and_names_the_field(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _predict(channel, "")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "endpoint_name" in str(refused.value.details())


def test_an_unknown_endpoint_is_not_found(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _predict(channel, "ghost")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost" in str(refused.value.details())


def test_a_malformed_request_is_invalid(channel: grpc.Channel) -> None:
    raw = channel.unary_unary(PREDICT)
    with pytest.raises(grpc.RpcError) as refused:
        raw(b"\x0a\x09iri", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in str(refused.value.details())


def test_the_replicas_errors_come_back_as_they_are(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _predict(channel, "iris", text="1,2")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected 4 features per row, got 2" in str(refused.value.details())
    assert _labels(_predict(channel, "iris")) == _expected(0)


# ----------------------------------------------------------------- Open Inference V2


def test_v2_model_calls_are_routed_by_model_name(channel: grpc.Channel) -> None:
    stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    tensor = open_inference_pb2.ModelInferRequest.InferInputTensor(
        name="input-0",
        datatype="FP32",
        shape=[len(ROWS), 4],
        contents=open_inference_pb2.InferTensorContents(
            fp32_contents=[v for row in ROWS for v in row]
        ),
    )
    for endpoint, offset in (("iris", 0), ("shifted", 10)):
        answer = stub.ModelInfer(
            open_inference_pb2.ModelInferRequest(model_name=endpoint, id="7", inputs=[tensor]),
            timeout=10,
        )
        assert answer.model_name == endpoint and answer.id == "7"
        assert list(answer.outputs[0].contents.int64_contents) == _expected(offset)
        ready = stub.ModelReady(open_inference_pb2.ModelReadyRequest(name=endpoint), timeout=10)
        assert ready.ready
        metadata = stub.ModelMetadata(
            open_inference_pb2.ModelMetadataRequest(name=endpoint), timeout=10
        )
        assert metadata.inputs[0].shape[-1] == 4
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(open_inference_pb2.ModelInferRequest(inputs=[tensor]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model_name" in str(refused.value.details())
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelReady(open_inference_pb2.ModelReadyRequest(name="ghost"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_v2_server_calls_are_answered_by_the_gateway(channel: grpc.Channel) -> None:
    stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(open_inference_pb2.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(open_inference_pb2.ServerReadyRequest(), timeout=10).ready
    metadata = stub.ServerMetadata(open_inference_pb2.ServerMetadataRequest(), timeout=10)
    assert metadata.name == "skmaker-gateway"


def test_metrics_count_calls_by_endpoint_and_outcome(
    gateway: lifecycle.RunningService, channel: grpc.Channel
) -> None:
    _predict(channel, "shifted")
    with pytest.raises(grpc.RpcError):
        _predict(channel, "ghost")
    text = _scrape(gateway.metrics_port)
    ok = next(
        line
        for line in text.splitlines()
        if line.startswith('skmaker_gateway_requests_total{endpoint="shifted",outcome="ok"}')
    )
    assert float(ok.split()[-1]) >= 1
    assert 'skmaker_gateway_requests_total{endpoint="",outcome="not_found"}' in text
    assert "ghost" not in text, "names from requests never become labels"
    assert 'skmaker_gateway_replicas{endpoint="iris"} 2.0' in text
    assert 'skmaker_gateway_replica_outstanding{endpoint="iris"} 0.0' in text
    assert 'skmaker_gateway_request_latency_seconds_count{endpoint="shifted"}' in text


# ----------------------------------------------------------------- retries and deadlines


class _Draining(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers every call UNAVAILABLE, as a draining replica does."""

    def __init__(self) -> None:
        self.calls = 0

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls += 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica is draining")

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture
def draining() -> Iterator[tuple[str, _Draining]]:
    from concurrent import futures

    handler = _Draining()
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", handler
    server.stop(0)


def test_unavailable_is_retried_on_another_replica(
    replicas: dict[str, ServiceProcess], draining: tuple[str, _Draining]
) -> None:
    address, handler = draining
    running = _start_gateway(f"iris={address},{replicas['iris-a'].address}", eject_s=60.0)
    try:
        with grpc.insecure_channel(running.address) as channel:
            answers = [_predict(channel, "iris") for _ in range(20)]
        assert {a.replica_id for a in answers} == {"iris-a"}
        # Ejected after its first UNAVAILABLE: later calls do not try it again.
        assert handler.calls == 1
        text = _scrape(running.metrics_port)
        assert 'skmaker_gateway_retries_total{endpoint="iris"} 1.0' in text
    finally:
        running.stop()


def test_when_every_replica_is_unavailable_the_caller_is_told(
    draining: tuple[str, _Draining],
) -> None:
    address, handler = draining
    running = _start_gateway(f"iris={address}", retries=2)
    try:
        with grpc.insecure_channel(running.address) as channel, pytest.raises(grpc.RpcError) as e:
            _predict(channel, "iris")
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert handler.calls == 1, "the one replica is not called again for the same call"
    finally:
        running.stop()


class _RecordingChannel:
    """Stands in for a replica channel: records each call's timeout and metadata."""

    seen: list[tuple[float, tuple[tuple[str, str], ...]]] = []

    def __init__(self, address: str) -> None:
        answer = inference_pb2.PredictResponse(text="[0]", replica_id=address)

        def call(request: bytes, timeout: float, metadata: Any) -> bytes:
            self.seen.append((timeout, tuple(metadata)))
            return answer.SerializeToString()

        self.calls = collections.defaultdict(lambda: call)

    def close(self) -> None:
        pass


def test_the_callers_deadline_and_the_token_are_forwarded() -> None:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "routes": "iris=127.0.0.1:1",  # never dialled: the recording channel answers
        "auth_token": "s3cret",
        "default_timeout_s": 30.0,
        "data_plane": "python",
    }
    settings = GatewaySettings(**values)
    running = lifecycle.start(app.build(settings, connect=_RecordingChannel), settings)  # type: ignore[arg-type]
    _RecordingChannel.seen.clear()
    token = (("authorization", "Bearer s3cret"),)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            request = inference_pb2.PredictRequest(endpoint_name="iris", text="1")
            stub.Predict(request, timeout=5, metadata=token)
            stub.Predict(request, timeout=500, metadata=token)
            stub.Predict(request, metadata=token)
            with pytest.raises(grpc.RpcError) as denied:
                stub.Predict(request, timeout=5)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        running.stop()
    (short, meta), (capped, _), (default, _) = _RecordingChannel.seen
    # gRPC sends a timeout rounded up to its wire units, so the server may see a hair over 5 s.
    assert 4.0 < short <= 5.1, "the caller's remaining time"
    assert 29.0 < capped <= 30.0 and 29.0 < default <= 30.0, "at most default_timeout_s"
    assert meta == token


# ----------------------------------------------------------------- the client through the gateway


def test_a_session_with_a_gateway_address_invokes_through_it(
    gateway: lifecycle.RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skmaker import Session, SKLearnPredictor

    # No control behind this address: invocations through a gateway never ask the control.
    with Session("127.0.0.1:1", gateway_address=gateway.address) as session:
        body, content_type = session.invoke_endpoint("shifted", CSV, "text/csv", "text/csv")
        assert content_type == "text/csv"
        assert [int(float(v)) for v in body.split()] == _expected(10)
        predictor = SKLearnPredictor("iris", session=session)
        assert predictor.predict(np.asarray(ROWS)).astype(int).tolist() == _expected(0)
    monkeypatch.setenv("SKMAKER_GATEWAY_ADDRESS", gateway.address)
    with Session("127.0.0.1:1") as session:
        assert session.gateway_address == gateway.address
        body, _ = session.invoke_endpoint("iris", CSV, "text/csv", "text/csv")
        assert [int(float(v)) for v in body.split()] == _expected(0)
