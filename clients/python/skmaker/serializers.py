"""Serializers: turn what `Predictor.predict` is given into a request body, as SageMaker's do.

The classes, their defaults and their output follow `sagemaker.base_serializers` (SDK v2), so
code that builds or subclasses a SageMaker serializer works unchanged. Each one has
`CONTENT_TYPE`, the MIME type of the body it makes, which the predictor sends as ContentType.

    CSVSerializer        text/csv                  rows of numbers -> "5.1,3.5\\n6.2,2.9"
    JSONSerializer       application/json          lists, dicts, arrays -> json.dumps
    NumpySerializer      application/x-npy         arrays -> np.save bytes (no pickle)
    IdentitySerializer   application/octet-stream  the data unchanged

A serializer returns `str` (sent as Predict's `text`) or `bytes` (sent as `body`).
"""

from __future__ import annotations

import abc
import csv
import io
import json
from typing import Any

import numpy as np


class BaseSerializer(abc.ABC):
    """What a predictor needs of a serializer: `serialize(data)` and `CONTENT_TYPE`."""

    @abc.abstractmethod
    def serialize(self, data: Any) -> Any:
        """The request body for `data` (`str` or `bytes`)."""

    @property
    @abc.abstractmethod
    def CONTENT_TYPE(self) -> str:
        """The MIME type of the bodies this serializer makes."""


class SimpleBaseSerializer(BaseSerializer):
    """A serializer whose content type is set at construction.

    Args:
        content_type: the MIME type sent with the bodies.

    Raises:
        ValueError: when `content_type` is not a string (SageMaker's check).
    """

    def __init__(self, content_type: str = "application/json") -> None:
        if not isinstance(content_type, str):
            raise ValueError(
                "content_type must be a string specifying the MIME type of the data to "
                "serialize. Please specify the content_type as a string, e.g. "
                "'application/json' instead of ['application/json']"
            )
        self.content_type = content_type

    @property
    def CONTENT_TYPE(self) -> str:
        """The MIME type given at construction."""
        return self.content_type

    def __repr__(self) -> str:
        return f"{type(self).__name__}(content_type={self.content_type!r})"


def _is_sequence_like(data: Any) -> bool:
    return hasattr(data, "__iter__") and hasattr(data, "__getitem__")


class CSVSerializer(SimpleBaseSerializer):
    """Rows of values as CSV text (`text/csv`), one line per row, no header.

    Accepted data, as in SageMaker: a pandas DataFrame (`to_csv(header=False, index=False)`),
    a file-like object (its `read()` is sent), a 2-D array or a list of rows (one line each),
    a 1-D array or list (one line), or a string (sent as is).
    """

    def __init__(self, content_type: str = "text/csv") -> None:
        super().__init__(content_type=content_type)

    def serialize(self, data: Any) -> Any:
        """The CSV text of `data`.

        Raises:
            ValueError: for an empty row or a value that is not a row, rows or text.
        """
        # Duck-typed so the client does not import pandas: a DataFrame is what has to_csv
        # and columns (a Series has to_csv too, but SageMaker writes it as one row).
        if hasattr(data, "to_csv") and hasattr(data, "columns"):
            return data.to_csv(header=False, index=False)
        if hasattr(data, "read"):
            return data.read()
        is_mutable_sequence_like = _is_sequence_like(data) and hasattr(data, "__setitem__")
        has_multiple_rows = (
            hasattr(data, "__len__") and len(data) > 0 and _is_sequence_like(data[0])
        )
        if is_mutable_sequence_like and has_multiple_rows:
            return "\n".join(self._serialize_row(row) for row in data)
        return self._serialize_row(data)

    @staticmethod
    def _serialize_row(data: Any) -> str:
        if isinstance(data, str):
            return data
        if isinstance(data, np.ndarray):
            data = data.flatten()
        if hasattr(data, "__len__"):
            if len(data) == 0:
                raise ValueError("Cannot serialize empty array")
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=",").writerow(data)
            return buffer.getvalue().rstrip("\r\n")
        raise ValueError(f"Unable to handle input format: {type(data)}")


def _ndarray_to_list(data: Any) -> Any:
    return data.tolist() if isinstance(data, np.ndarray) else data


class JSONSerializer(SimpleBaseSerializer):
    """Data as JSON text (`application/json`).

    As in SageMaker: a dict is written with its NumPy-array values turned into lists, a
    file-like object is read and sent as is, an array becomes a (nested) list, anything else
    goes through `json.dumps`.
    """

    def __init__(self, content_type: str = "application/json") -> None:
        super().__init__(content_type=content_type)

    def serialize(self, data: Any) -> Any:
        """The JSON text of `data`.

        Raises:
            TypeError: for values JSON cannot represent.
        """
        if isinstance(data, dict):
            return json.dumps({key: _ndarray_to_list(value) for key, value in data.items()})
        if hasattr(data, "read"):
            return data.read()
        return json.dumps(_ndarray_to_list(data))


class NumpySerializer(SimpleBaseSerializer):
    """Data as a NumPy `.npy` file (`application/x-npy`), written without pickle.

    Args:
        dtype: the dtype a list is converted with (None: NumPy's choice), as in SageMaker.
        content_type: the MIME type sent with the bodies.
    """

    def __init__(self, dtype: Any = None, content_type: str = "application/x-npy") -> None:
        super().__init__(content_type=content_type)
        self.dtype = dtype

    def serialize(self, data: Any) -> Any:
        """The `.npy` bytes of `data` (a file-like object is read and sent as is).

        Raises:
            ValueError: for an empty array or list, or an array of Python objects (which only
                pickle could write, and which replicas refuse).
        """
        if isinstance(data, np.ndarray):
            if data.size == 0:
                raise ValueError("Cannot serialize empty array.")
            return self._serialize_array(data)
        if isinstance(data, list):
            if len(data) == 0:
                raise ValueError("Cannot serialize empty array.")
            return self._serialize_array(np.array(data, self.dtype))
        if hasattr(data, "read"):
            return data.read()
        return self._serialize_array(np.array(data))

    @staticmethod
    def _serialize_array(array: np.ndarray[Any, Any]) -> bytes:
        buffer = io.BytesIO()
        # allow_pickle=False: an object array fails here, on the caller's side, instead of
        # producing a payload a replica would refuse (and that could carry code).
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()


class IdentitySerializer(SimpleBaseSerializer):
    """Sends the data unchanged; it must already be `bytes` or `str`.

    Args:
        content_type: the MIME type of the data (default `application/octet-stream`, which the
            default handlers do not decode: pass the data's real type).
    """

    def __init__(self, content_type: str = "application/octet-stream") -> None:
        super().__init__(content_type=content_type)

    def serialize(self, data: Any) -> Any:
        """`data` itself."""
        return data
