"""inference.GRPCInferenceService (Open Inference Protocol V2) through a real in-process replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from skmaker.v1 import open_inference_pb2 as v2
from skmaker.v1 import open_inference_pb2_grpc
from tests.unit.inference.replicas import (
    IRIS_ROWS,
    MODEL_FN,
    InProcessReplica,
    StartReplica,
    expected_labels,
)

Stub = open_inference_pb2_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def replica(module_replicas: StartReplica, iris_model_dir: Path) -> InProcessReplica:
    return module_replicas(iris_model_dir, MODEL_FN)


@pytest.fixture(scope="module")
def stub(replica: InProcessReplica) -> Stub:
    return Stub(replica.channel)


def typed_request(
    rows: list[list[float]], datatype: str = "FP32", model_name: str = "iris-endpoint"
) -> v2.ModelInferRequest:
    field = {
        "FP32": "fp32_contents",
        "FP64": "fp64_contents",
        "INT32": "int_contents",
        "INT64": "int64_contents",
    }[datatype]
    values = [v for row in rows for v in row]
    if datatype.startswith("INT"):
        values = [int(v) for v in values]
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="input-0",
        datatype=datatype,
        shape=[len(rows), len(rows[0])],
        contents=v2.InferTensorContents(**{field: values}),
    )
    return v2.ModelInferRequest(model_name=model_name, id="req-7", inputs=[tensor])


def raw_request(array: np.ndarray[Any, Any], datatype: str) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="input-0", datatype=datatype, shape=list(array.shape)
    )
    return v2.ModelInferRequest(
        model_name="iris-model", inputs=[tensor], raw_input_contents=[array.tobytes()]
    )


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32", "INT64"])
def test_model_infer_typed_contents(stub: Stub, iris_model: Any, datatype: str) -> None:
    answer = stub.ModelInfer(typed_request(IRIS_ROWS, datatype), timeout=10)
    assert answer.model_name == "iris-endpoint"
    assert answer.id == "req-7"
    (output,) = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("predict", "INT64", [3])
    rows = [[int(v) for v in row] for row in IRIS_ROWS] if datatype.startswith("INT") else IRIS_ROWS
    assert list(output.contents.int64_contents) == expected_labels(iris_model, rows)
    assert not answer.raw_output_contents


@pytest.mark.parametrize(
    ("datatype", "dtype"), [("FP32", "<f4"), ("FP64", "<f8"), ("INT64", "<i8")]
)
def test_model_infer_raw_contents(stub: Stub, iris_model: Any, datatype: str, dtype: str) -> None:
    array = np.array(IRIS_ROWS).astype(dtype)
    answer = stub.ModelInfer(raw_request(array, datatype), timeout=10)
    (output,) = answer.outputs
    assert output.datatype == "INT64"
    assert not output.contents.int64_contents
    labels = np.frombuffer(answer.raw_output_contents[0], dtype="<i8")
    assert labels.tolist() == [int(v) for v in iris_model.predict(array)]


def test_one_dimensional_tensor_is_one_row(stub: Stub, iris_model: Any) -> None:
    request = typed_request(IRIS_ROWS[:1])
    del request.inputs[0].shape[:]
    request.inputs[0].shape.append(4)
    answer = stub.ModelInfer(request, timeout=10)
    assert list(answer.outputs[0].contents.int64_contents) == expected_labels(
        iris_model, IRIS_ROWS[:1]
    )


def with_shape(shape: list[int]) -> v2.ModelInferRequest:
    request = typed_request(IRIS_ROWS)
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend(shape)
    return request


def with_datatype(datatype: str) -> v2.ModelInferRequest:
    request = typed_request(IRIS_ROWS)
    request.inputs[0].datatype = datatype
    return request


def two_inputs() -> v2.ModelInferRequest:
    request = typed_request(IRIS_ROWS)
    request.inputs.append(request.inputs[0])
    return request


def short_raw() -> v2.ModelInferRequest:
    request = raw_request(np.array(IRIS_ROWS, dtype="<f4"), "FP32")
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]
    return request


@pytest.mark.parametrize(
    ("make_request", "code", "message"),
    [
        (two_inputs, grpc.StatusCode.INVALID_ARGUMENT, "expected exactly one input tensor"),
        (
            lambda: with_datatype("BYTES"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input-0' has datatype 'BYTES'; supported: FP32, FP64, INT32, INT64",
        ),
        (
            lambda: with_shape([3, 4, 1]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input-0' has shape [3, 4, 1]; expected [rows, features]",
        ),
        (
            lambda: with_shape([2, 4]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "needs 8 values in contents.fp32_contents (datatype FP32), got 12",
        ),
        (
            short_raw,
            grpc.StatusCode.INVALID_ARGUMENT,
            "needs 48 bytes of raw_input_contents, got 44",
        ),
        (
            lambda: with_shape([6, 2]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expected 4 features per row, got 2",
        ),
        (
            lambda: typed_request(IRIS_ROWS, model_name="resnet"),
            grpc.StatusCode.NOT_FOUND,
            "unknown model 'resnet'",
        ),
    ],
    ids=["two-inputs", "datatype", "rank", "count", "raw-size", "features", "model-name"],
)
def test_bad_tensor_is_named_and_the_replica_keeps_serving(
    stub: Stub, iris_model: Any, make_request: Any, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(make_request(), timeout=10)
    assert raised.value.code() == code
    assert message in raised.value.details()
    answer = stub.ModelInfer(typed_request(IRIS_ROWS), timeout=10)
    assert list(answer.outputs[0].contents.int64_contents) == expected_labels(iris_model, IRIS_ROWS)


def test_server_and_model_readiness(stub: Stub) -> None:
    assert stub.ServerLive(v2.ServerLiveRequest(), timeout=5).live
    assert stub.ServerReady(v2.ServerReadyRequest(), timeout=5).ready
    for name in ("iris-endpoint", "iris-model"):
        assert stub.ModelReady(v2.ModelReadyRequest(name=name), timeout=5).ready
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelReady(v2.ModelReadyRequest(name="resnet"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_server_metadata(stub: Stub) -> None:
    answer = stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=5)
    assert answer.name == "skmaker"
    assert answer.version
    assert list(answer.extensions) == []


def test_model_metadata(stub: Stub) -> None:
    answer = stub.ModelMetadata(v2.ModelMetadataRequest(name="iris-endpoint"), timeout=5)
    assert answer.name == "iris-endpoint"
    assert answer.platform == "sklearn"
    ((inputs,), (outputs,)) = answer.inputs, answer.outputs
    assert (inputs.name, inputs.datatype, list(inputs.shape)) == ("input-0", "FP32", [-1, 4])
    assert (outputs.name, outputs.datatype, list(outputs.shape)) == ("predict", "INT64", [-1])


def test_model_metadata_advertises_the_training_dtype(
    module_replicas: StartReplica, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A float64-trained linear model keeps float64 coefficients: its input is FP64, where a
    # tree (the iris model above) compares float32 features whatever it was trained on.
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    model_dir = tmp_path_factory.mktemp("float64-model")
    iris = load_iris()
    model = LogisticRegression(max_iter=500).fit(iris.data.astype(np.float64), iris.target)
    joblib.dump(model, model_dir / "model.joblib")
    answer = Stub(module_replicas(model_dir, MODEL_FN).channel).ModelMetadata(
        v2.ModelMetadataRequest(), timeout=5
    )
    assert (answer.inputs[0].datatype, list(answer.inputs[0].shape)) == ("FP64", [-1, 4])


def test_float_and_string_predictions(
    module_replicas: StartReplica, iris_model_dir: Path, iris_model: Any
) -> None:
    replica = module_replicas(
        iris_model_dir,
        MODEL_FN
        + """

NAMES = ["setosa", "versicolor", "virginica"]


def predict_fn(data, model):
    labels = model.predict(data)
    if data.dtype.itemsize == 8:
        return [NAMES[label] for label in labels]
    return model.predict_proba(data)
""",
    )
    stub = Stub(replica.channel)
    floats = stub.ModelInfer(typed_request(IRIS_ROWS, "FP32"), timeout=10).outputs[0]
    assert (floats.datatype, list(floats.shape)) == ("FP64", [3, 3])
    expected = iris_model.predict_proba(np.array(IRIS_ROWS, dtype=np.float32))
    assert list(floats.contents.fp64_contents) == expected.ravel().tolist()
    names = ["setosa", "versicolor", "virginica"]
    labels = [names[v] for v in expected_labels(iris_model, IRIS_ROWS)]
    strings = stub.ModelInfer(typed_request(IRIS_ROWS, "FP64"), timeout=10).outputs[0]
    assert strings.datatype == "BYTES"
    assert [v.decode() for v in strings.contents.bytes_contents] == labels
    raw = stub.ModelInfer(raw_request(np.array(IRIS_ROWS), "FP64"), timeout=10)
    data, decoded = raw.raw_output_contents[0], []
    while data:
        size = int.from_bytes(data[:4], "little")
        decoded.append(data[4 : 4 + size].decode())
        data = data[4 + size :]
    assert decoded == labels
    metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name=""), timeout=5)
    assert list(metadata.outputs[0].shape) == [-1, -1]


def test_transform_fn_model_refuses_tensors(
    module_replicas: StartReplica, iris_model_dir: Path
) -> None:
    replica = module_replicas(
        iris_model_dir,
        MODEL_FN
        + """

def transform_fn(model, body, content_type, accept):
    return "ok", "text/plain"
""",
    )
    with pytest.raises(grpc.RpcError) as raised:
        Stub(replica.channel).ModelInfer(typed_request(IRIS_ROWS), timeout=10)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "transform_fn" in raised.value.details()
