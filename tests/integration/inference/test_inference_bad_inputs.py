"""Bad Predict and ModelInfer inputs get INVALID_ARGUMENT or RESOURCE_EXHAUSTED from a real
replica, never INTERNAL, and the replica keeps answering good calls after each one.

The list is issue 14's (negative npy shapes, V2 tensors with negative or oversized shapes) and
what probing found next to them: npy headers NumPy cannot index, shapes whose element count
overflows, deeply nested JSON, ragged CSV, an oversized payload.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    open_inference_pb2,
    open_inference_pb2_grpc,
)
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

MODEL_FN = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
MAX_PAYLOAD_BYTES = 1024 * 1024
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
# The payload decoded, and the model's own predict refused it: UNKNOWN with its error (README,
# Errors), still not INTERNAL.
MODEL_REFUSED = grpc.StatusCode.UNKNOWN


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("bad-inputs")
    model_dir, code_dir = root / "model", root / "code"
    model_dir.mkdir()
    code_dir.mkdir()
    iris = load_iris()
    joblib.dump(
        DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target),
        model_dir / "model.joblib",
    )
    (code_dir / "serve.py").write_text(MODEL_FN)
    process = run_service(
        "inference",
        root,
        [
            *(f"--model-dir={model_dir}", f"--code-dir={code_dir}", "--entry-point=serve.py"),
            *("--endpoint-name=iris", "--replica-id=r-1", f"--work-dir={root / 'work'}"),
            f"--max-payload-bytes={MAX_PAYLOAD_BYTES}",
            "--shutdown-grace-s=2",
        ],
    )
    yield process
    process.stop()


def _npy(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
    """A version 1.0 .npy file whose header says `shape` and `descr`, followed by `data`."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def _good_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(ROWS, dtype=np.float64))
    return buffer.getvalue()


def _predict(body: bytes | str, content_type: str) -> inference_pb2.PredictRequest:
    if isinstance(body, str):
        return inference_pb2.PredictRequest(
            endpoint_name="iris", content_type=content_type, accept="application/json", text=body
        )
    return inference_pb2.PredictRequest(
        endpoint_name="iris", content_type=content_type, accept="application/json", body=body
    )


PREDICT_CASES: dict[str, tuple[inference_pb2.PredictRequest, grpc.StatusCode]] = {
    # issue 14: reshape((-1, -1)) raised ValueError (INTERNAL).
    "npy shape (-1, -1)": (
        _predict(_npy((-1, -1), "<f8", b"\0" * 8), "application/x-npy"),
        INVALID,
    ),
    "npy shape (-2, -4)": (
        _predict(_npy((-2, -4), "<f8", b"\0" * 64), "application/x-npy"),
        INVALID,
    ),
    "npy shape (-1,)": (_predict(_npy((-1,), "<f8", b""), "application/x-npy"), INVALID),
    "npy shape (2**40, 2**40)": (
        _predict(_npy((2**40, 2**40), "<f8", b"\0" * 8), "application/x-npy"),
        INVALID,
    ),
    # Zero bytes per element: the size check passes and the empty array is the model's to judge.
    "npy of V0 shaped (2**62, 4)": (
        _predict(_npy((2**62, 4), "|V0", b""), "application/x-npy"),
        MODEL_REFUSED,
    ),
    "npy header only": (_predict(_good_npy()[:20], "application/x-npy"), INVALID),
    "npy as text": (_predict("\x93NUMPY", "application/x-npy"), INVALID),
    "JSON nested 100,000 deep": (
        _predict("[" * 100_000 + "]" * 100_000, "application/json"),
        INVALID,
    ),
    "JSON nested 40 deep": (_predict("[" * 40 + "1" + "]" * 40, "application/json"), MODEL_REFUSED),
    "JSON ragged": (_predict("[[1, 2, 3, 4], [1]]", "application/json"), INVALID),
    "CSV ragged": (_predict("1,2,3,4\n1,2\n", "text/csv"), INVALID),
    "CSV not numbers": (_predict("a,b,c,d\n", "text/csv"), INVALID),
    "unknown content type": (_predict("1,2,3,4", "application/x-unknown"), INVALID),
    "payload over the limit": (
        _predict(b"1," * (MAX_PAYLOAD_BYTES // 2 + 1), "text/csv"),
        EXHAUSTED,
    ),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_bad_predict_inputs_say_what_is_wrong_and_the_replica_serves_on(
    replica: ServiceProcess, case: str
) -> None:
    request, status = PREDICT_CASES[case]
    stub = inference_pb2_grpc.InferenceServiceStub(replica.channel())
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(request, timeout=30)
    assert refused.value.code() == status, (case, refused.value.details())
    assert "internal error" not in (refused.value.details() or "")
    answer = stub.Predict(_predict(_good_npy(), "application/x-npy"), timeout=30)
    assert len(answer.body or answer.text.encode()) > 0


def _infer(
    shape: list[int], values: int = 8, raw: bytes | None = None
) -> open_inference_pb2.ModelInferRequest:
    tensor = open_inference_pb2.ModelInferRequest.InferInputTensor(
        name="input-0", datatype="FP64", shape=shape
    )
    if raw is None:
        tensor.contents.fp64_contents.extend([1.0] * values)
    request = open_inference_pb2.ModelInferRequest(model_name="iris", inputs=[tensor])
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


INFER_CASES: dict[str, tuple[open_inference_pb2.ModelInferRequest, grpc.StatusCode]] = {
    "shape [-1, 4]": (_infer([-1, 4]), INVALID),
    "shape [-2, -4]": (_infer([-2, -4]), INVALID),
    "shape [0, 4]": (_infer([0, 4], values=0), INVALID),
    "shape [2**62, 2**62]": (_infer([2**62, 2**62]), INVALID),
    "shape [2**62, 2**62] raw": (_infer([2**62, 2**62], raw=b"\0" * 64), INVALID),
    "shape [-(2**63), 4]": (_infer([-(2**63), 4]), INVALID),
    "shape of 3 dimensions": (_infer([2, 2, 2]), INVALID),
    "contents short of the shape": (_infer([4, 4]), INVALID),
}


@pytest.mark.parametrize("case", list(INFER_CASES))
def test_bad_model_infer_inputs_say_what_is_wrong_and_the_replica_serves_on(
    replica: ServiceProcess, case: str
) -> None:
    request, status = INFER_CASES[case]
    stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(replica.channel())
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request, timeout=30)
    assert refused.value.code() == status, (case, refused.value.details())
    answer = stub.ModelInfer(_infer([2, 4]), timeout=30)
    assert list(answer.outputs[0].shape) == [2]
