"""Deserializers: turn an endpoint's answer into Python values, as SageMaker's do.

The classes, their defaults and their results follow `sagemaker.base_deserializers` (SDK v2),
so code that builds or subclasses a SageMaker deserializer works unchanged: `deserialize`
gets a binary stream of the answer (read it once; it is closed afterwards) and the answer's
content type. `ACCEPT` is the tuple of MIME types the predictor asks for.

    BytesDeserializer    */*                the bytes
    StringDeserializer   application/json   the decoded text
    CSVDeserializer      text/csv           a list of rows, each a list of str
    JSONDeserializer     application/json   json.load
    NumpyDeserializer    application/x-npy  an ndarray from x-npy, CSV or JSON answers

One deliberate difference (contract §8): content types are compared without their parameters,
so an answer labelled `text/csv; charset=utf-8` is read as CSV.
"""

from __future__ import annotations

import abc
import codecs
import csv
import io
import json
from collections.abc import Sequence
from typing import IO, Any

import numpy as np


def _media_type(content_type: str) -> str:
    """The lower-cased `type/subtype` of a Content-Type value, without parameters."""
    return content_type.partition(";")[0].strip().lower()


class BaseDeserializer(abc.ABC):
    """What a predictor needs of a deserializer: `deserialize(stream, content_type)`, `ACCEPT`."""

    @abc.abstractmethod
    def deserialize(self, stream: IO[bytes], content_type: str) -> Any:
        """The value of an answer read from `stream`, whose MIME type is `content_type`."""

    @property
    @abc.abstractmethod
    def ACCEPT(self) -> tuple[str, ...]:
        """The MIME types this deserializer reads, sent as the request's Accept."""


class SimpleBaseDeserializer(BaseDeserializer):
    """A deserializer whose accepted types are set at construction.

    Args:
        accept: one MIME type or several.
    """

    def __init__(self, accept: str | Sequence[str] = "*/*") -> None:
        self.accept = accept

    @property
    def ACCEPT(self) -> tuple[str, ...]:
        """`accept` as a tuple."""
        if isinstance(self.accept, str):
            return (self.accept,)
        return tuple(self.accept)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(accept={self.accept!r})"


class StringDeserializer(SimpleBaseDeserializer):
    """The answer as text.

    Args:
        encoding: the text's encoding.
        accept: the MIME types asked for.
    """

    def __init__(
        self, encoding: str = "UTF-8", accept: str | Sequence[str] = "application/json"
    ) -> None:
        super().__init__(accept=accept)
        self.encoding = encoding

    def deserialize(self, stream: IO[bytes], content_type: str) -> str:
        """The decoded text of the answer."""
        try:
            return stream.read().decode(self.encoding)
        finally:
            stream.close()


class BytesDeserializer(SimpleBaseDeserializer):
    """The answer's bytes, untouched.

    Args:
        accept: the MIME types asked for (default any).
    """

    def __init__(self, accept: str | Sequence[str] = "*/*") -> None:
        super().__init__(accept=accept)

    def deserialize(self, stream: IO[bytes], content_type: str) -> bytes:
        """The bytes of the answer."""
        try:
            return stream.read()
        finally:
            stream.close()


class CSVDeserializer(SimpleBaseDeserializer):
    """A CSV answer as a list of rows, each a list of strings (SageMaker does not convert).

    Args:
        encoding: the text's encoding.
        accept: the MIME types asked for.
    """

    def __init__(self, encoding: str = "utf-8", accept: str | Sequence[str] = "text/csv") -> None:
        super().__init__(accept=accept)
        self.encoding = encoding

    def deserialize(self, stream: IO[bytes], content_type: str) -> list[list[str]]:
        """The rows of the answer: `"1\\n2\\n"` -> `[["1"], ["2"]]`."""
        try:
            text = stream.read().decode(self.encoding)
            return list(csv.reader(text.splitlines()))
        finally:
            stream.close()


class JSONDeserializer(SimpleBaseDeserializer):
    """A JSON answer as Python values (`json.load`).

    Args:
        accept: the MIME types asked for.
    """

    def __init__(self, accept: str | Sequence[str] = "application/json") -> None:
        super().__init__(accept=accept)

    def deserialize(self, stream: IO[bytes], content_type: str) -> Any:
        """The decoded JSON value of the answer."""
        try:
            return json.load(codecs.getreader("utf-8")(stream))
        finally:
            stream.close()


class NumpyDeserializer(SimpleBaseDeserializer):
    """An answer as a NumPy array, read according to the answer's content type.

    `application/x-npy` (and `application/x-npz`) is loaded with `np.load`, `text/csv` with
    `np.genfromtxt(delimiter=",")`, `application/json` with `np.array(json.load(...))`.

    Args:
        dtype: dtype of arrays read from CSV or JSON (None: NumPy's choice, as SageMaker).
        accept: the MIME types asked for.
        allow_pickle: let `np.load` read object arrays; off by default, because unpickling
            an answer runs code the endpoint chose.
    """

    def __init__(
        self,
        dtype: Any = None,
        accept: str | Sequence[str] = "application/x-npy",
        allow_pickle: bool = False,
    ) -> None:
        super().__init__(accept=accept)
        self.dtype = dtype
        self.allow_pickle = allow_pickle

    def deserialize(self, stream: IO[bytes], content_type: str) -> Any:
        """The answer as an array.

        Raises:
            ValueError: for a content type it cannot read, or an object array while
                `allow_pickle` is off.
        """
        media = _media_type(content_type)
        try:
            if media == "text/csv":
                return np.genfromtxt(
                    codecs.getreader("utf-8")(stream), delimiter=",", dtype=self.dtype
                )
            if media == "application/json":
                return np.array(json.load(codecs.getreader("utf-8")(stream)), dtype=self.dtype)
            if media in ("application/x-npy", "application/x-npz"):
                try:
                    return np.load(io.BytesIO(stream.read()), allow_pickle=self.allow_pickle)
                except ValueError as err:
                    raise ValueError(
                        "Please set the param allow_pickle=True to deserialize pickle objects "
                        f"in NumpyDeserializer ({err})"
                    ).with_traceback(err.__traceback__) from None
        finally:
            stream.close()
        raise ValueError(f"NumpyDeserializer cannot read content type {content_type}.")
