"""Array encoders and decoders for the three media types SageMaker's toolkits know.

The output of each function is byte-for-byte what `sagemaker_training.encoders` and
`sagemaker_inference.encoder` produce (tests compare them in the script runtime):

- NPY: `numpy.save` of the array.
- JSON: `json.dumps`, arrays and NumPy scalars through their `tolist()`.
- CSV: one line per row, `\\n` after each, fields written by the `csv` module; a 1-D array is a
  column (one value per line).

One deliberate difference: `npy_to_numpy` refuses pickled (object) arrays, which the toolkit
loads, because a request body must not be able to run code in the server.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from sagemaker_containers import _content_types
from sagemaker_containers._errors import ClientError, UnsupportedFormatError


def array_to_npy(array_like: Any) -> bytes:
    """The NPY serialisation of `array_like` (anything `numpy.asarray` accepts)."""
    buffer = io.BytesIO()
    np.save(buffer, array_like)
    return buffer.getvalue()


def npy_to_numpy(npy_array: bytes) -> np.ndarray:
    """The array an NPY payload holds.

    Raises:
        ClientError: The payload is not NPY, or holds pickled objects.
    """
    try:
        return np.load(io.BytesIO(npy_array), allow_pickle=False)
    except ValueError as err:
        raise ClientError(f"Error while decoding npy: {err}") from err


def _to_list(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def array_to_json(array_like: Any) -> str:
    """`array_like` as JSON text; arrays and NumPy scalars become lists and numbers."""
    return json.dumps(array_like, default=_to_list)


def json_to_numpy(string_like: str | bytes, dtype: Any = None) -> np.ndarray:
    """The array a JSON document holds, optionally converted to `dtype`."""
    return np.array(json.loads(string_like), dtype=dtype)


def csv_to_numpy(string_like: str, dtype: Any = None) -> np.ndarray:
    """The array CSV text holds, as floats unless `dtype` says otherwise.

    Squeezed as the toolkit does: one row gives a 1-D array, one value a 0-D one.

    Raises:
        ClientError: The text is not CSV of a rectangular table, or a field does not convert.
    """
    try:
        rows = list(csv.reader(io.StringIO(string_like), delimiter=",", quotechar='"', strict=True))
        return np.array(rows).squeeze().astype(dtype)
    except (csv.Error, ValueError, TypeError) as err:
        raise ClientError(f"Error while decoding csv: {err}") from err


def array_to_csv(array_like: Any) -> str:
    """`array_like` as CSV text: one line per row, a 1-D array as one column.

    Raises:
        ClientError: The csv module cannot write it.
    """
    array = np.array(array_like)
    if array.ndim == 1:
        array = array.reshape(array.shape[0], 1)
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n", delimiter=",", quotechar='"', strict=True)
    try:
        writer.writerows(array)
    except csv.Error as err:
        raise ClientError(f"Error while encoding csv: {err}") from err
    return stream.getvalue()


_ENCODERS = {
    _content_types.NPY: array_to_npy,
    _content_types.CSV: array_to_csv,
    _content_types.JSON: array_to_json,
}
_DECODERS = {
    _content_types.NPY: npy_to_numpy,
    _content_types.CSV: csv_to_numpy,
    _content_types.JSON: json_to_numpy,
}


def _media_type(content_type: str) -> str:
    # "text/csv; charset=utf-8" is text/csv: the toolkit's exact-key lookup would refuse it.
    return content_type.split(";", 1)[0].strip().lower()


def decode(obj: Any, content_type: str) -> np.ndarray:
    """Decodes a request body of `content_type` (JSON, CSV or NPY) into an array.

    Raises:
        UnsupportedFormatError: Another content type.
    """
    decoder = _DECODERS.get(_media_type(content_type))
    if decoder is None:
        raise UnsupportedFormatError(content_type)
    return decoder(obj)


def encode(array_like: Any, content_type: str) -> Any:
    """Encodes `array_like` as `content_type`: JSON and CSV give text, NPY bytes.

    Raises:
        UnsupportedFormatError: Another content type.
    """
    encoder = _ENCODERS.get(_media_type(content_type))
    if encoder is None:
        raise UnsupportedFormatError(content_type)
    return encoder(array_like)
