"""The gateway's HAProxy data plane, as real processes: what HAProxy forwards and what it leaves.

Two standalone inference replicas serve `iris`, behind `python -m services.gateway
--data-plane haproxy --routes ...`, everything with a bearer token. HAProxy must forward
Predict itself (the gateway's /metrics tell HAProxy's count from the Python path's), spread it
over both replicas, read the endpoint name the way protobuf defines it, route requests larger
than its buffer, and leave to the Python gateway what only it can answer: a missing token, an
unknown endpoint, a request without a name, a compressed request. SIGTERM stops HAProxy too.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker.v1 import inference_pb2, inference_pb2_grpc
from tests.harness import REPO_ROOT, ServiceProcess, is_running, run_service

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (make test installs it)"
)

TOKEN = "s3cret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
CSV = "\n".join(",".join(str(v) for v in row) for row in ROWS)
SERVE = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""
PREDICT = "/skmaker.v1.InferenceService/Predict"


def _model() -> DecisionTreeClassifier:
    iris = load_iris()
    return DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)


@dataclass
class Stack:
    replicas: dict[str, ServiceProcess]
    gateway: ServiceProcess
    folder: Path


def _start_gateway(folder: Path, routes: str, label: str) -> ServiceProcess:
    return run_service(
        "gateway",
        folder,
        [
            "--data-plane",
            "haproxy",
            "--routes",
            routes,
            "--shutdown-grace-s",
            "2",
        ],
        env={"SKMAKER_GATEWAY_AUTH_TOKEN": TOKEN},
        label=label,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("gateway-haproxy")
    model_dir = folder / "model"
    model_dir.mkdir()
    joblib.dump(_model(), model_dir / "model.joblib")
    code = folder / "code"
    code.mkdir()
    (code / "serve.py").write_text(SERVE)
    replicas: dict[str, ServiceProcess] = {}
    gateway: ServiceProcess | None = None
    try:
        for replica_id in ("iris-a", "iris-b"):
            replicas[replica_id] = run_service(
                "inference",
                folder / replica_id,
                [
                    *("--model-dir", str(model_dir), "--code-dir", str(code)),
                    *("--entry-point", "serve.py", "--endpoint-name", "iris"),
                    *("--replica-id", replica_id, "--work-dir", str(folder / replica_id / "w")),
                    # Aged connections every second: HAProxy's and the gateway's health watch
                    # must ride through them.
                    *("--max-connection-age-s", "1", "--max-connection-age-grace-s", "0.5"),
                ],
                env={"SKMAKER_INFERENCE_AUTH_TOKEN": TOKEN},
                label=replica_id,
            )
        routes = "iris=" + ",".join(r.address for r in replicas.values())
        gateway = _start_gateway(folder, routes, "gateway")
        yield Stack(replicas, gateway, folder)
    finally:
        try:
            if gateway is not None:
                gateway.stop()
        finally:
            for replica in replicas.values():
                replica.stop()


def _metric(gateway: ServiceProcess, name: str, labels: str) -> float:
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10
    ).read()
    for line in text.decode().splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _request(endpoint: str = "iris", text: str = CSV) -> inference_pb2.PredictRequest:
    return inference_pb2.PredictRequest(
        endpoint_name=endpoint, content_type="text/csv", accept="text/csv", text=text
    )


def _labels(answer: inference_pb2.PredictResponse) -> list[int]:
    return [int(float(line)) for line in answer.text.split()]


def test_haproxy_forwards_predict_and_spreads_it_over_both_replicas(stack: Stack) -> None:
    forwarded_before = _metric(
        stack.gateway, "skmaker_gateway_haproxy_requests_total", 'endpoint="iris"'
    )
    with grpc.insecure_channel(stack.gateway.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        answers = [stub.Predict(_request(), timeout=10, metadata=AUTH) for _ in range(60)]
    expected = [int(v) for v in _model().predict(np.asarray(ROWS))]
    assert all(_labels(answer) == expected for answer in answers)
    served = collections.Counter(answer.replica_id for answer in answers)
    assert set(served) == {"iris-a", "iris-b"} and min(served.values()) >= 10, served
    forwarded = _metric(stack.gateway, "skmaker_gateway_haproxy_requests_total", 'endpoint="iris"')
    assert forwarded - forwarded_before == 60
    python_path = _metric(
        stack.gateway, "skmaker_gateway_requests_total", 'endpoint="iris",outcome="ok"'
    )
    assert python_path == 0, "HAProxy routes iris: the Python gateway forwarded nothing"
    assert _metric(stack.gateway, "skmaker_gateway_haproxy_replicas", 'endpoint="iris"') == 2


def test_replicas_stay_routed_while_their_connections_age_out(stack: Stack) -> None:
    # The replicas close every connection after 1 s (+0.5 s grace), the gateway's health watch
    # included; a replica parked for that would show here as fewer than 2 replicas.
    seen = set()
    deadline = time.monotonic() + 4
    with grpc.insecure_channel(stack.gateway.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        while time.monotonic() < deadline:
            seen.add(_metric(stack.gateway, "skmaker_gateway_haproxy_replicas", 'endpoint="iris"'))
            assert stub.Predict(_request(), timeout=10, metadata=AUTH).text
    assert seen == {2.0}, seen


def test_a_call_without_the_token_is_refused_as_unauthenticated(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(_request(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = (("authorization", "Bearer not-the-token"),)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(_request(), timeout=10, metadata=wrong)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_python_gateway_answers_what_haproxy_does_not_route(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Predict(_request("no-such-endpoint"), timeout=10, metadata=AUTH)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no-such-endpoint" in (unknown.value.details() or "")
        with pytest.raises(grpc.RpcError) as unnamed:
            stub.Predict(_request(""), timeout=10, metadata=AUTH)
        assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "endpoint_name" in (unnamed.value.details() or "")
        # A gzip-compressed message cannot be read by HAProxy: the Python gateway routes it.
        answer = stub.Predict(
            _request(), timeout=10, metadata=AUTH, compression=grpc.Compression.Gzip
        )
        assert _labels(answer) == [int(v) for v in _model().predict(np.asarray(ROWS))]


def _field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (short values: one-byte lengths)."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def _raw_predict(stack: Stack, body: bytes) -> inference_pb2.PredictResponse:
    with grpc.insecure_channel(stack.gateway.address) as channel:
        raw = channel.unary_unary(PREDICT)
        return inference_pb2.PredictResponse.FromString(raw(body, timeout=10, metadata=AUTH))


def test_the_endpoint_name_is_found_wherever_it_stands(stack: Stack) -> None:
    # Field 1 after other fields, as protobuf allows.
    body = (
        _field(2, b"text/csv")  # content_type
        + _field(3, b"text/csv")  # accept
        + _field(5, CSV.encode())  # text
        + _field(1, b"iris")
    )
    answer = _raw_predict(stack, body)
    assert _labels(answer) == [int(v) for v in _model().predict(np.asarray(ROWS))]


def test_a_name_given_twice_is_never_answered_for_the_wrong_endpoint(stack: Stack) -> None:
    # Protobuf says the last field 1 wins; HAProxy reads the first. Either way the call is
    # answered for the endpoint the message names (the last) or refused, never misanswered.
    csv_row = _field(2, b"text/csv") + _field(3, b"text/csv") + _field(5, b"1,2,3,4")
    unknown_then_iris = _field(1, b"no-such-endpoint") + _field(1, b"iris") + csv_row
    assert inference_pb2.PredictRequest.FromString(unknown_then_iris).endpoint_name == "iris"
    assert _labels(_raw_predict(stack, unknown_then_iris)) == [
        int(v) for v in _model().predict(np.asarray([[1, 2, 3, 4]]))
    ]
    iris_then_unknown = _field(1, b"iris") + _field(1, b"no-such-endpoint") + csv_row
    with pytest.raises(grpc.RpcError) as refused:
        _raw_predict(stack, iris_then_unknown)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-endpoint" in (refused.value.details() or "")


def test_a_request_larger_than_haproxys_buffer_is_routed_by_haproxy(stack: Stack) -> None:
    rows = np.tile(np.asarray(ROWS), (2000, 1))  # about 100 KB of CSV
    text = "\n".join(",".join(str(v) for v in row) for row in rows)
    before = _metric(stack.gateway, "skmaker_gateway_haproxy_requests_total", 'endpoint="iris"')
    with grpc.insecure_channel(stack.gateway.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        answer = stub.Predict(_request(text=text), timeout=30, metadata=AUTH)
    assert len(text) > 64 * 1024
    assert _labels(answer) == [int(v) for v in _model().predict(rows)]
    after = _metric(stack.gateway, "skmaker_gateway_haproxy_requests_total", 'endpoint="iris"')
    assert after - before == 1


@pytest.mark.parametrize("megabytes", [10, 100])
def test_an_oversized_predict_is_resource_exhausted_with_the_limit(
    stack: Stack, megabytes: int
) -> None:
    # The replicas' gRPC servers refuse such a message as RESOURCE_EXHAUSTED, which HAProxy
    # would turn into CANCELLED; it answers itself before forwarding anything.
    request = inference_pb2.PredictRequest(
        endpoint_name="iris", content_type="text/csv", body=b"1" * (megabytes * 1024 * 1024)
    )
    with grpc.insecure_channel(stack.gateway.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(request, timeout=60, metadata=AUTH)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        details = refused.value.details() or ""
        assert f"is {request.ByteSize()} bytes" in details, details
        assert f"the limit is {7 * 1024 * 1024} bytes" in details, details
        assert "--replica-max-payload-bytes" in details, details
        answer = stub.Predict(_request(), timeout=30, metadata=AUTH)
    assert _labels(answer) == [int(v) for v in _model().predict(ROWS)]


def _haproxy_pid(gateway: ServiceProcess) -> int:
    found = re.search(r"haproxy started: \S+ \(pid (\d+)\)", gateway.logs())
    assert found, gateway.logs()
    return int(found.group(1))


def test_sigterm_stops_haproxy_and_frees_the_port(stack: Stack) -> None:
    routes = "iris=" + ",".join(r.address for r in stack.replicas.values())
    gateway = _start_gateway(stack.folder / "second", routes, "second-gateway")
    pid = _haproxy_pid(gateway)
    assert is_running(pid)
    with grpc.insecure_channel(gateway.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        assert stub.Predict(_request(), timeout=10, metadata=AUTH).text
    started = time.monotonic()
    assert gateway.stop() == 0
    assert time.monotonic() - started < 5
    assert not is_running(pid)
    with pytest.raises(grpc.FutureTimeoutError), grpc.insecure_channel(gateway.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=1)


def test_the_gateway_exits_1_when_haproxy_dies(stack: Stack) -> None:
    routes = "iris=" + ",".join(r.address for r in stack.replicas.values())
    gateway = _start_gateway(stack.folder / "third", routes, "third-gateway")
    try:
        os.kill(_haproxy_pid(gateway), signal.SIGKILL)
        # Nobody would answer on its port: it drains and exits non-zero to be restarted.
        assert gateway.process.wait(timeout=20) == 1, gateway.logs()
        assert "haproxy exited unexpectedly" in gateway.logs()
    finally:
        gateway.kill()


def test_haproxy_does_not_outlive_a_killed_gateway(stack: Stack) -> None:
    routes = "iris=" + ",".join(r.address for r in stack.replicas.values())
    gateway = _start_gateway(stack.folder / "fourth", routes, "fourth-gateway")
    pid = _haproxy_pid(gateway)
    gateway.kill()  # SIGKILL: the gateway cannot stop HAProxy itself
    deadline = time.monotonic() + 10
    while is_running(pid):
        assert time.monotonic() < deadline, "haproxy still holds the port after its gateway died"
        time.sleep(0.05)


def test_haproxys_start_up_error_is_in_the_gateways_error(tmp_path: Path) -> None:
    # An haproxy that refuses its configuration the way HAProxy does: alert on stderr, exit 1.
    refusing = tmp_path / "haproxy"
    refusing.write_text(
        '#!/bin/sh\necho "[ALERT]    (1) : config : parsing [x.cfg:3] : unknown keyword" >&2\n'
        "exit 1\n"
    )
    refusing.chmod(0o755)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "services.gateway", "--data-plane", "haproxy"),
            *("--haproxy-binary", str(refusing), "--routes", "iris=127.0.0.1:1"),
            *("--grpc-port", "0", "--metrics-port", "0"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "haproxy exited with code 1 at start" in result.stderr
    assert "unknown keyword" in result.stderr


def test_a_missing_haproxy_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.gateway",
            "--data-plane",
            "haproxy",
            "--haproxy-binary",
            str(tmp_path / "no-haproxy"),
            "--routes",
            "iris=127.0.0.1:1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "is not installed" in result.stderr
