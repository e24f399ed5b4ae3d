"""Pure conversions between the inference wire messages and plain Python / NumPy values.

Predict: the payload travels as `text` (readable from grpcurl) or `body` (bytes); answers of a
textual content type (`codecs.is_textual`) go back as `text`, others as `body`.

Open Inference Protocol V2: one input tensor of FP32, FP64, INT32 or INT64, shape `[rows,
features]` (`[features]` is one row), in typed `contents` or little-endian `raw_input_contents`,
becomes a NumPy array; the prediction becomes the output tensor `predict` (BOOL, INT64 for
integer labels, FP64 for floats, BYTES for strings), typed unless the request came raw. Every
problem with a tensor is INVALID_ARGUMENT naming the tensor and what was expected.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from services.runtime.errors import InvalidArgument, ModelError
from services.sagemaker.serving.codecs import is_textual
from skmaker.v1 import inference_pb2, open_inference_pb2

OUTPUT_NAME = "predict"
INPUT_NAME = "input-0"
PLATFORM = "sklearn"

# datatype -> (typed contents field, dtype of the array built from it, little-endian raw dtype)
_INPUT_TYPES: dict[str, tuple[str, type[np.generic], str]] = {
    "FP32": ("fp32_contents", np.float32, "<f4"),
    "FP64": ("fp64_contents", np.float64, "<f8"),
    "INT32": ("int_contents", np.int32, "<i4"),
    "INT64": ("int64_contents", np.int64, "<i8"),
}
_SUPPORTED_INPUT_TYPES = ", ".join(_INPUT_TYPES)

# NumPy dtype kind -> (V2 datatype, typed contents field, little-endian raw dtype or None)
_OUTPUT_TYPES: dict[str, tuple[str, str, str | None]] = {
    "b": ("BOOL", "bool_contents", "|b1"),
    "i": ("INT64", "int64_contents", "<i8"),
    "u": ("INT64", "int64_contents", "<i8"),
    "f": ("FP64", "fp64_contents", "<f8"),
    "U": ("BYTES", "bytes_contents", None),
    "S": ("BYTES", "bytes_contents", None),
    "O": ("BYTES", "bytes_contents", None),
}

_textual = functools.lru_cache(maxsize=64)(is_textual)


def predict_payload(request: inference_pb2.PredictRequest) -> bytes | str:
    """The request's payload: `text` when that was set, else `body` (empty when neither)."""
    if request.WhichOneof("payload") == "text":
        return request.text
    return request.body


def predict_response(
    body: bytes, content_type: str, replica_id: str
) -> inference_pb2.PredictResponse:
    """The answer message; a textual answer that is valid UTF-8 travels as `text`."""
    if _textual(content_type):
        try:
            text = str(body, "utf-8")
        except UnicodeDecodeError:
            # An output_fn may label bytes in another charset as text; send them untouched.
            pass
        else:
            return inference_pb2.PredictResponse(
                content_type=content_type, text=text, replica_id=replica_id
            )
    return inference_pb2.PredictResponse(
        content_type=content_type, body=body, replica_id=replica_id
    )


def infer_input(request: open_inference_pb2.ModelInferRequest) -> tuple[np.ndarray[Any, Any], bool]:
    """The request's input tensor as a 2-D array, and whether it came as raw contents.

    Raises:
        InvalidArgument: Not exactly one input, an unsupported datatype, a bad shape, or
            contents that do not match the shape.
    """
    if len(request.inputs) != 1:
        raise InvalidArgument(
            f"expected exactly one input tensor [rows, features], got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    name = tensor.name or INPUT_NAME
    kind = _INPUT_TYPES.get(tensor.datatype.upper())
    if kind is None:
        raise InvalidArgument(
            f"input {name!r} has datatype {tensor.datatype!r}; supported: {_SUPPORTED_INPUT_TYPES}"
        )
    field, dtype, raw_dtype = kind
    shape = tuple(tensor.shape)
    if len(shape) not in (1, 2) or any(size <= 0 for size in shape):
        raise InvalidArgument(
            f"input {name!r} has shape {list(shape)}; expected [rows, features] with both "
            "above 0 (or [features] for one row)"
        )
    count = math.prod(shape)
    raw = len(request.raw_input_contents) > 0
    if raw:
        if len(request.raw_input_contents) != 1:
            raise InvalidArgument(
                f"raw_input_contents has {len(request.raw_input_contents)} entries for one input"
            )
        data = request.raw_input_contents[0]
        expected = count * np.dtype(raw_dtype).itemsize
        if len(data) != expected:
            raise InvalidArgument(
                f"input {name!r} of shape {list(shape)} and datatype {tensor.datatype} needs "
                f"{expected} bytes of raw_input_contents, got {len(data)}"
            )
        # astype copies into native byte order, giving a writable array the model may keep.
        array = np.frombuffer(data, dtype=raw_dtype).astype(dtype)
    else:
        values = getattr(tensor.contents, field)
        if len(values) != count:
            raise InvalidArgument(
                f"input {name!r} of shape {list(shape)} needs {count} values in "
                f"contents.{field} (datatype {tensor.datatype}), got {len(values)}"
            )
        array = np.array(values, dtype=dtype)
    return array.reshape(shape if len(shape) == 2 else (1, shape[0])), raw


def infer_response(
    prediction: Any, *, model_name: str, request_id: str, raw: bool
) -> open_inference_pb2.ModelInferResponse:
    """The answer to ModelInfer: one output tensor `predict` holding `prediction`.

    Raises:
        ModelError: The prediction is of a type no V2 tensor carries (e.g. complex numbers).
    """
    array = np.asarray(prediction)
    output_type = _OUTPUT_TYPES.get(array.dtype.kind)
    if output_type is None:
        raise ModelError(
            f"the model's prediction has dtype {array.dtype}, which a V2 tensor cannot carry"
        )
    datatype, field, raw_dtype = output_type
    output = open_inference_pb2.ModelInferResponse.InferOutputTensor(
        name=OUTPUT_NAME, datatype=datatype, shape=array.shape
    )
    response = open_inference_pb2.ModelInferResponse(
        model_name=model_name, id=request_id, outputs=[output]
    )
    if raw_dtype is None:
        elements = [_to_bytes(value) for value in array.ravel().tolist()]
        if raw:
            # The protocol's BYTES raw layout: each element as a 4-byte little-endian length
            # followed by its bytes.
            response.raw_output_contents.append(
                b"".join(len(value).to_bytes(4, "little") + value for value in elements)
            )
        else:
            response.outputs[0].contents.bytes_contents.extend(elements)
    elif raw:
        response.raw_output_contents.append(np.ascontiguousarray(array, raw_dtype).tobytes())
    else:
        getattr(response.outputs[0].contents, field).extend(array.ravel().tolist())
    return response


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def model_metadata(
    name: str, n_features: int | None, prediction_kind: str | None, input_datatype: str = "FP64"
) -> open_inference_pb2.ModelMetadataResponse:
    """ModelMetadata: platform sklearn, input `input-0` and output `predict`.

    Args:
        name: The model's name as this replica reports it.
        n_features: The model's input width, or None when it does not say (shape [-1, -1]).
        prediction_kind: NumPy dtype kind of the prediction when known ("i" for integer
            labels); None when a custom predict_fn decides, reported as FP64 of shape [-1, -1].
        input_datatype: The input tensor's datatype: the one the model was trained on when
            it shows it (services.inference.model_dtype), else FP64.
    """
    tensor = open_inference_pb2.ModelMetadataResponse.TensorMetadata
    input_shape = [-1, n_features if n_features is not None else -1]
    output_type = _OUTPUT_TYPES.get(prediction_kind or "")
    if output_type is None:
        output = tensor(name=OUTPUT_NAME, datatype="FP64", shape=[-1, -1])
    else:
        output = tensor(name=OUTPUT_NAME, datatype=output_type[0], shape=[-1])
    return open_inference_pb2.ModelMetadataResponse(
        name=name,
        platform=PLATFORM,
        inputs=[tensor(name=INPUT_NAME, datatype=input_datatype, shape=input_shape)],
        outputs=[output],
    )
