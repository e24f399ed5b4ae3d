"""skmaker.v1.InferenceService/Predict through a real in-process replica and real stubs.

Covers the happy paths (CSV text, JSON, NPY body), the error mapping of issue 3 (each bad input
gets its status and a message naming the problem, and the replica keeps serving), the payload
limit, a user handler that raises, the endpoint-name check and the /metrics families.
"""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from skmaker.v1 import inference_pb2, inference_pb2_grpc
from tests.unit.inference.replicas import (
    IRIS_ROWS,
    MODEL_FN,
    InProcessReplica,
    StartReplica,
    expected_labels,
)


@pytest.fixture(scope="module")
def replica(module_replicas: StartReplica, iris_model_dir: Path) -> InProcessReplica:
    return module_replicas(iris_model_dir, MODEL_FN)


@pytest.fixture(scope="module")
def stub(replica: InProcessReplica) -> inference_pb2_grpc.InferenceServiceStub:
    return inference_pb2_grpc.InferenceServiceStub(replica.channel)


def csv_text(rows: list[list[float]]) -> str:
    return "".join(",".join(map(str, row)) + "\n" for row in rows)


def npy_bytes(array: np.ndarray[Any, Any]) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def predict(
    stub: inference_pb2_grpc.InferenceServiceStub, **fields: Any
) -> inference_pb2.PredictResponse:
    return stub.Predict(inference_pb2.PredictRequest(**fields), timeout=10)


def assert_still_serving(stub: inference_pb2_grpc.InferenceServiceStub, model: Any) -> None:
    answer = predict(stub, content_type="text/csv", text=csv_text(IRIS_ROWS[:1]))
    assert json.loads(answer.text) == expected_labels(model, IRIS_ROWS[:1])


def test_csv_one_row(stub: inference_pb2_grpc.InferenceServiceStub, iris_model: Any) -> None:
    answer = predict(stub, content_type="text/csv", text="5.1,3.5,1.4,0.2")
    assert answer.WhichOneof("payload") == "text"
    assert answer.content_type == "application/json"
    assert json.loads(answer.text) == expected_labels(iris_model, IRIS_ROWS[:1])
    assert answer.replica_id == "replica-1"


def test_csv_many_rows_as_csv(
    stub: inference_pb2_grpc.InferenceServiceStub, iris_model: Any
) -> None:
    answer = predict(stub, content_type="text/csv", accept="text/csv", text=csv_text(IRIS_ROWS))
    assert answer.content_type == "text/csv"
    assert answer.text.splitlines() == [str(v) for v in expected_labels(iris_model, IRIS_ROWS)]


def test_json_body_bytes(stub: inference_pb2_grpc.InferenceServiceStub, iris_model: Any) -> None:
    answer = predict(stub, content_type="application/json", body=json.dumps(IRIS_ROWS).encode())
    assert json.loads(answer.text) == expected_labels(iris_model, IRIS_ROWS)


def test_content_type_defaults_to_json(
    stub: inference_pb2_grpc.InferenceServiceStub, iris_model: Any
) -> None:
    answer = predict(stub, text=json.dumps(IRIS_ROWS))
    assert json.loads(answer.text) == expected_labels(iris_model, IRIS_ROWS)


def test_npy_in_npy_out(stub: inference_pb2_grpc.InferenceServiceStub, iris_model: Any) -> None:
    answer = predict(
        stub,
        content_type="application/x-npy",
        accept="application/x-npy",
        body=npy_bytes(np.array(IRIS_ROWS)),
    )
    assert answer.WhichOneof("payload") == "body"
    assert answer.content_type == "application/x-npy"
    labels = np.load(io.BytesIO(answer.body), allow_pickle=False)
    assert labels.tolist() == expected_labels(iris_model, IRIS_ROWS)


def test_endpoint_name_of_this_replica_is_accepted(
    stub: inference_pb2_grpc.InferenceServiceStub, iris_model: Any
) -> None:
    answer = predict(stub, endpoint_name="iris-endpoint", content_type="text/csv", text="1,2,3,4")
    assert json.loads(answer.text) == expected_labels(iris_model, [[1, 2, 3, 4]])


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        (
            {"content_type": "text/plain", "text": "5.1 3.5 1.4 0.2"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "unsupported content type 'text/plain'; supported: text/csv, application/json",
        ),
        (
            {"content_type": "text/csv", "accept": "text/html", "text": "5.1,3.5,1.4,0.2"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "unsupported accept 'text/html'",
        ),
        (
            {"content_type": "text/csv", "text": "5.1,3.5,tall,0.2"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "CSV line 1, column 3: cannot read 'tall' as a number",
        ),
        (
            {"content_type": "application/json", "text": "[[5.1, 3.5"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "malformed JSON body",
        ),
        (
            {"content_type": "application/json", "text": '{"instances": [[1, 2, 3, 4]]}'},
            grpc.StatusCode.INVALID_ARGUMENT,
            "must be a (nested) list of numbers, got an object",
        ),
        (
            {"content_type": "application/x-npy", "body": b"not an npy file"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "cannot read the application/x-npy body",
        ),
        (
            {"content_type": "text/csv", "text": "5.1,3.5"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "expected 4 features per row, got 2",
        ),
        (
            {"endpoint_name": "other-endpoint", "content_type": "text/csv", "text": "1,2,3,4"},
            grpc.StatusCode.NOT_FOUND,
            "this replica serves endpoint 'iris-endpoint', not 'other-endpoint'",
        ),
    ],
    ids=[
        "content-type",
        "accept",
        "csv-cell",
        "json-syntax",
        "json-object",
        "npy",
        "feature-count",
        "endpoint-name",
    ],
)
def test_bad_input_gets_its_status_and_the_replica_keeps_serving(
    stub: inference_pb2_grpc.InferenceServiceStub,
    iris_model: Any,
    fields: dict[str, Any],
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        predict(stub, **fields)
    assert raised.value.code() == code
    assert message in raised.value.details()
    assert_still_serving(stub, iris_model)


def test_payload_over_the_limit_is_resource_exhausted(
    module_replicas: StartReplica, iris_model_dir: Path, iris_model: Any
) -> None:
    small = module_replicas(iris_model_dir, MODEL_FN, max_payload_bytes=1000)
    stub = inference_pb2_grpc.InferenceServiceStub(small.channel)
    rows = IRIS_ROWS * 100  # about 6 KB of CSV
    for fields in ({"text": csv_text(rows)}, {"body": csv_text(rows).encode()}):
        with pytest.raises(grpc.RpcError) as raised:
            predict(stub, content_type="text/csv", **fields)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 1000 bytes" in raised.value.details()
    # Multi-byte characters count as their UTF-8 size: 400 "é" are 800 bytes, 600 are 1200.
    with pytest.raises(grpc.RpcError) as raised:
        predict(stub, content_type="text/csv", text="é" * 600)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(stub, iris_model)


def test_user_handler_exception_is_a_model_error_with_its_message(
    module_replicas: StartReplica, iris_model_dir: Path
) -> None:
    failing = module_replicas(
        iris_model_dir,
        MODEL_FN
        + """

def predict_fn(data, model):
    if data.shape[0] > 1:
        raise ValueError("only one row at a time, please")
    return model.predict(data)
""",
    )
    stub = inference_pb2_grpc.InferenceServiceStub(failing.channel)
    with pytest.raises(grpc.RpcError) as raised:
        predict(stub, content_type="text/csv", text=csv_text(IRIS_ROWS))
    assert raised.value.code() == grpc.StatusCode.UNKNOWN
    assert raised.value.details() == (
        "the model's predict_fn raised ValueError: only one row at a time, please"
    )
    assert predict(stub, content_type="text/csv", text=csv_text(IRIS_ROWS[:1])).text


def test_custom_handlers_json_in_probabilities_out(
    module_replicas: StartReplica, iris_model_dir: Path, iris_model: Any
) -> None:
    custom = module_replicas(
        iris_model_dir,
        MODEL_FN
        + """
import json

import numpy as np


def input_fn(body, content_type):
    return np.array(json.loads(body)["rows"], dtype=np.float32)


def predict_fn(data, model):
    return model.predict_proba(data)


def output_fn(prediction, accept):
    return json.dumps({"probabilities": prediction.tolist()}), "application/json"
""",
    )
    stub = inference_pb2_grpc.InferenceServiceStub(custom.channel)
    answer = predict(stub, content_type="application/json", text=json.dumps({"rows": IRIS_ROWS}))
    expected = iris_model.predict_proba(np.array(IRIS_ROWS, dtype=np.float32)).tolist()
    assert json.loads(answer.text) == {"probabilities": expected}


def test_environment_sets_default_accept_and_sagemaker_variables(
    module_replicas: StartReplica, iris_model_dir: Path, iris_model: Any
) -> None:
    environ = {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}
    replica = module_replicas(iris_model_dir, MODEL_FN, environ=environ)
    stub = inference_pb2_grpc.InferenceServiceStub(replica.channel)
    answer = predict(stub, content_type="text/csv", text=csv_text(IRIS_ROWS))
    assert answer.content_type == "text/csv"
    assert answer.text.splitlines() == [str(v) for v in expected_labels(iris_model, IRIS_ROWS)]
    assert environ["SAGEMAKER_PROGRAM"] == "serve.py"
    assert environ["SAGEMAKER_SUBMIT_DIRECTORY"] == replica.settings.code_dir
    assert environ["SAGEMAKER_REGION"] == "local"


def scrape(replica: InProcessReplica) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The replica's /metrics over HTTP, as {(sample name, labels): value}."""
    url = f"http://127.0.0.1:{replica.running.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_by_outcome(
    module_replicas: StartReplica, iris_model_dir: Path
) -> None:
    replica = module_replicas(iris_model_dir, MODEL_FN, endpoint_name="metered")
    stub = inference_pb2_grpc.InferenceServiceStub(replica.channel)
    for _ in range(3):
        predict(stub, content_type="text/csv", text="5.1,3.5,1.4,0.2")
    with pytest.raises(grpc.RpcError):
        predict(stub, content_type="text/plain", text="x")
    samples = scrape(replica)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset({"endpoint": "metered", **labels}.items()))]

    requests = "skmaker_inference_requests_total"
    assert value(requests, protocol="predict", outcome="ok") == 3
    assert value(requests, protocol="predict", outcome="invalid_argument") == 1
    assert value(requests, protocol="v2", outcome="ok") == 0
    assert value("skmaker_inference_request_latency_seconds_count") == 4
    assert value("skmaker_inference_requests_in_flight") == 0
    assert samples[("skmaker_inference_model_load_seconds", frozenset())] > 0
