"""Default request decoding and response encoding: SageMaker's default `input_fn` and `output_fn`.

`decode` turns a request body into a NumPy array by content type and `encode` turns a prediction
into a body by accept type, as the SKLearn container does (contract §2.3), except where skmaker
decided otherwise (contract §8):

* content-type parameters are accepted (`text/csv; charset=utf-8` is CSV, decoded with its charset);
* CSV and JSON payloads are never squeezed: one CSV row is `(1, n)`, one column of n rows `(n, 1)`,
  and a flat JSON list one row;
* `application/x-npy` is read with `allow_pickle=False`, so object arrays are refused;
* an unsupported content type or accept is INVALID_ARGUMENT (SageMaker answers 415 / 406).

Both functions sit on the Predict hot path: they do no per-call setup beyond a cached media-type
parse, and copy the payload no more than the conversion itself needs.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from typing import Any

import numpy as np

from services.runtime.errors import InvalidArgument, ModelError

CSV = "text/csv"
JSON = "application/json"
NPY = "application/x-npy"
SUPPORTED_MEDIA_TYPES = (CSV, JSON, NPY)
DEFAULT_ACCEPT = JSON

_SUPPORTED = ", ".join(SUPPORTED_MEDIA_TYPES)

# From this many characters a quote-free CSV body goes to np.loadtxt's C parser, which reads it
# about 1.8x faster than csv.reader plus np.array (measured: 10 rows x 4 columns 14 us vs 20 us).
# Below it the csv module wins, as loadtxt's per-call setup dominates a one-row request.
_CSV_FAST_PATH_MIN_CHARS = 256

# From this many characters (batch mini-batches, big requests) pandas' C reader takes over: it
# parses to the same doubles as loadtxt (checked on random data) at roughly 1.4-2x its speed.
_CSV_BULK_PATH_MIN_CHARS = 1 << 20

_UTF8_BOM = b"\xef\xbb\xbf"

# dtype kinds whose `.tolist()` elements print exactly as the NumPy scalars do (bool, ints,
# strings, bytes, objects), so CSV encoding may skip building one NumPy scalar per cell.
# Floats must stay NumPy scalars: str(np.float32(0.1)) is "0.1", str(float(np.float32(0.1))) is not.
_PLAIN_STR_KINDS = frozenset("biuUSO")

_NPY_MAGIC_PREFIX = b"\x93NUMPY"
# NumPy's own limit (np.load's max_header_size): longer headers are refused, not evaluated.
_NPY_MAX_HEADER_BYTES = 10_000
_NPY_OBJECT_REFUSED = (
    "application/x-npy arrays of dtype object are refused: loading them needs pickle, "
    "which could run code on the replica; send a numeric or string array"
)

_JSON_TYPE_NAMES = {dict: "an object", str: "a string", int: "a number", float: "a number"}


@functools.lru_cache(maxsize=256)
def _split_content_type(value: str) -> tuple[str, str | None]:
    """Return (lower-cased media type or "", charset parameter or None).

    Cached because clients send the same few header values on every request.
    """
    media, _, params = value.partition(";")
    media = media.strip().lower()
    charset = None
    if params:
        for param in params.split(";"):
            key, _, param_value = param.partition("=")
            if key.strip().lower() == "charset":
                charset = param_value.strip().strip('"').lower() or None
    return media, charset


def parse_media_type(value: str) -> str:
    """Return the media type of a Content-Type or Accept value, without its parameters.

    Args:
        value: A header value such as `"text/csv; charset=utf-8"`.

    Returns:
        The lower-cased `type/subtype` (`"text/csv"`); `"application/json"` when `value` is empty,
        as SageMaker treats a missing content type as JSON.
    """
    return _split_content_type(value)[0] or JSON


def is_textual(content_type: str) -> bool:
    """Tell whether a payload of this type is text: `text/*`, `application/json` or `*/*+json`.

    Args:
        content_type: A Content-Type value; parameters are ignored.

    Returns:
        True when the payload should travel as a string rather than as bytes.
    """
    media = parse_media_type(content_type)
    return media.startswith("text/") or media == JSON or media.endswith("+json")


def to_text(body: bytes | str, content_type: str) -> str:
    """Decode a request body with the charset named in its content type (UTF-8 by default).

    Args:
        body: The request body; a `str` is returned unchanged.
        content_type: The request's Content-Type, e.g. `"text/csv; charset=latin-1"`.

    Returns:
        The body as text.

    Raises:
        InvalidArgument: The charset is unknown or the bytes are not valid in it.
    """
    if isinstance(body, str):
        return body
    charset = _split_content_type(content_type)[1] or "utf-8"
    try:
        return str(body, charset)
    except LookupError:
        raise InvalidArgument(
            f"unknown charset {charset!r} in content type {content_type!r}"
        ) from None
    except UnicodeDecodeError as err:
        raise InvalidArgument(f"the request body is not valid {charset}: {err}") from None


def decode(body: bytes | str, content_type: str) -> np.ndarray[Any, Any]:
    """Decode a request body into an array: the default `input_fn`.

    * `text/csv`: read with Python's `csv` (comma, `"` quoting, strict), blank lines skipped,
      cast to float32, always 2-D (one row is `(1, n)`).
    * `application/json`: a (nested) list of numbers, cast to float32; a flat list is one row.
    * `application/x-npy`: `np.load` with `allow_pickle=False`; dtype is kept. A 1-D numeric array
      is one row `(1, n)`, as for CSV and JSON (SageMaker's multi-model path does the same, and
      `predictor.predict(X[0])` is what people write); other shapes, and 1-D string arrays that
      a text pipeline may expect, are kept as sent.

    Args:
        body: The request body; text types may come as `str`.
        content_type: The request's Content-Type; empty means `application/json`.

    Returns:
        The decoded array.

    Raises:
        InvalidArgument: Unsupported content type, or a body that cannot be read as that type;
            the message names the problem (for CSV, the line and column of the bad cell).
    """
    media, charset = _split_content_type(content_type)
    media = media or JSON
    if media == CSV:
        raw_utf8 = isinstance(body, bytes) and _is_utf8(charset)
        if raw_utf8 and (bulk := _decode_csv_bulk(body)) is not None:
            return bulk
        return _decode_csv(to_text(body, content_type), try_bulk=not raw_utf8)
    if media == JSON:
        return _decode_json(to_text(body, content_type))
    if media == NPY:
        array = _decode_npy(body)
        if array.ndim == 1 and array.dtype.kind in "biuf":
            return array.reshape(1, -1)
        return array
    raise InvalidArgument(
        f"unsupported content type {content_type.strip()!r}; supported: {_SUPPORTED}"
    )


def encode(prediction: Any, accept: str, default_accept: str = DEFAULT_ACCEPT) -> tuple[bytes, str]:
    """Encode a prediction by accept type: the default `output_fn`.

    * `application/json`: `json.dumps`, arrays and NumPy scalars through `.tolist()` (`[0, 2, 1]`).
    * `text/csv`: what SageMaker's `np.savetxt(fmt="%s", delimiter=",")` writes: `\\n` after every
      line, a 1-D prediction one value per line, a 2-D one row per line, integers as `1`, floats
      as their shortest repr at their own precision.
    * `application/x-npy`: `np.save` bytes (without pickle).

    Args:
        prediction: What predict_fn returned (an array, a list, a scalar).
        accept: The requested media type; empty or `*/*` means `default_accept`. A list of
            several types (`"application/json, text/csv"`) is not negotiated, as in SageMaker.
        default_accept: The media type used for an empty or `*/*` accept.

    Returns:
        The body and its content type (the bare media type, e.g. `"text/csv"`).

    Raises:
        InvalidArgument: The accept type is unsupported, or cannot carry this prediction (CSV
            beyond 2-D, `application/x-npy` for an object array).
        ModelError: The prediction holds values JSON cannot represent.
    """
    requested = _split_content_type(accept)[0]
    media = requested
    if not media or media == "*/*":
        media = _split_content_type(default_accept)[0] or JSON
    if media == JSON:
        return _encode_json(prediction), JSON
    if media == CSV:
        return _encode_csv(prediction), CSV
    if media == NPY:
        return _encode_npy(prediction), NPY
    if media == requested:
        raise InvalidArgument(f"unsupported accept {accept.strip()!r}; supported: {_SUPPORTED}")
    raise InvalidArgument(f"unsupported default accept {default_accept!r}; supported: {_SUPPORTED}")


def _is_utf8(charset: str | None) -> bool:
    return charset is None or charset.lower().replace("_", "-") in ("utf-8", "utf8")


def _decode_csv_bulk(body: bytes | str) -> np.ndarray[Any, Any] | None:
    """pandas' C reader for a large quote-free body; None when the exact path must decide.

    UTF-8 bytes go to pandas as they are (it reads bytes faster than text); anything pandas
    refuses, invalid UTF-8 included, returns None, so `_decode_csv` alone words the error.
    """
    if len(body) < _CSV_BULK_PATH_MIN_CHARS:
        return None
    if isinstance(body, bytes):
        if b'"' in body or body.startswith(_UTF8_BOM):
            return None
        source: io.IOBase = io.BytesIO(body)
    else:
        if '"' in body:
            return None
        source = io.StringIO(body)
    import pandas as pd  # imported on the first large body: small requests never pay for it

    try:
        frame = pd.read_csv(
            source,
            header=None,
            dtype=np.float64,
            engine="c",
            skip_blank_lines=True,
            low_memory=False,  # bodies are at most 100 MB: one pass, no chunk bookkeeping
        )
    except (ValueError, pd.errors.ParserError):  # UnicodeDecodeError is a ValueError
        return None
    with np.errstate(over="ignore"):
        values = frame.to_numpy().astype(np.float32)
    # pandas pads short rows with NaN where the csv path reports a ragged row: let any NaN go
    # the exact way, which either accepts it ("nan" cells) or names the bad row.
    if np.isnan(values).any():
        return None
    return values


def _decode_csv(text: str, *, try_bulk: bool = True) -> np.ndarray[Any, Any]:
    if try_bulk and (bulk := _decode_csv_bulk(text)) is not None:
        return bulk
    if len(text) >= _CSV_FAST_PATH_MIN_CHARS and '"' not in text and not text.isspace():
        # Without quotes, csv.reader's grammar is loadtxt's: lines, then fields split on commas;
        # both parse numbers to the nearest double, then round to float32. On any failure the
        # csv path below runs, so it alone decides what is accepted and what the error says.
        try:
            return np.loadtxt(
                io.StringIO(text, newline=""),
                dtype=np.float32,
                delimiter=",",
                comments=None,
                ndmin=2,
            )
        except ValueError:
            pass
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True) if row]
    except csv.Error as err:
        raise InvalidArgument(f"malformed CSV: {err}") from None
    if not rows:
        raise InvalidArgument("the CSV body has no rows")
    try:
        # Straight from strings to float32: NumPy parses each cell as float() does, to the
        # nearest double, then rounds once to float32, so this equals SageMaker's cast to
        # float then float32 without an intermediate string array. A value beyond float32's
        # range becomes inf, as in SageMaker, without a RuntimeWarning about the client's data.
        with np.errstate(over="ignore"):
            return np.array(rows, dtype=np.float32)
    except ValueError:
        raise _csv_cell_error(text) from None


def _csv_cell_error(text: str) -> InvalidArgument:
    """Find the first ragged row or unreadable cell; only runs once a request has failed."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    width = 0
    for row in reader:
        if not row:
            continue
        if not width:
            width = len(row)
        elif len(row) != width:
            return InvalidArgument(
                f"CSV line {reader.line_num} has {len(row)} fields, the first row has {width}"
            )
        for column, cell in enumerate(row, start=1):
            try:
                float(cell)
            except ValueError:
                return InvalidArgument(
                    f"CSV line {reader.line_num}, column {column}: cannot read "
                    f"{_clip(cell)!r} as a number"
                )
    return InvalidArgument("the CSV body is not a table of numbers")


def _decode_json(text: str) -> np.ndarray[Any, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise InvalidArgument(f"malformed JSON body: {err}") from None
    if not isinstance(value, list):
        got = _JSON_TYPE_NAMES.get(type(value), "null" if value is None else "a boolean")
        hint = ""
        if isinstance(value, dict) and "instances" in value:
            hint = '; send the list itself, not {"instances": ...}'
        raise InvalidArgument(f"the JSON body must be a (nested) list of numbers, got {got}{hint}")
    try:
        with np.errstate(over="ignore"):
            array = np.array(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as err:
        raise InvalidArgument(
            f"the JSON body must be a rectangular (nested) list of numbers: {err}"
        ) from None
    if array.size == 0:
        raise InvalidArgument("the JSON body holds no values")
    if array.ndim == 1:
        return array.reshape(1, -1)
    return array


def _decode_npy(body: bytes | str) -> np.ndarray[Any, Any]:
    if isinstance(body, str):
        raise InvalidArgument("an application/x-npy body must be binary, not text")
    layout = _npy_layout(body)
    if layout is None:
        # An unusual header (say, version 3 with UTF-8 field names) or not .npy at all: NumPy's
        # own reader decides, and whatever it raises on these bytes is the sender's problem.
        try:
            return np.lib.format.read_array(io.BytesIO(body), allow_pickle=False)
        except Exception as err:
            raise InvalidArgument(f"cannot read the application/x-npy body: {err}") from None
    shape, fortran_order, dtype, offset = layout
    if dtype.hasobject:
        raise InvalidArgument(_NPY_OBJECT_REFUSED)
    if any(size < 0 for size in shape):
        raise InvalidArgument(
            f"cannot read the application/x-npy body: its header's shape {shape} has a "
            "negative dimension"
        )
    count = math.prod(shape)
    # Checked before any allocation, so a header claiming a huge shape costs nothing.
    if len(body) - offset != count * dtype.itemsize:
        raise InvalidArgument(
            f"cannot read the application/x-npy body: its header describes {shape} of "
            f"{dtype} ({count * dtype.itemsize} bytes), the body holds {len(body) - offset}"
        )
    if not dtype.itemsize:
        try:
            return np.empty(shape, dtype=dtype, order="F" if fortran_order else "C")
        except (ValueError, MemoryError) as err:  # a shape past what NumPy can index
            raise InvalidArgument(f"cannot read the application/x-npy body: {err}") from None
    # The copy makes the array writable and aligned, as np.load's is.
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C").copy(order="K")


def _npy_layout(body: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int] | None:
    """Return (shape, fortran_order, dtype, data offset) from a .npy header, or None."""
    if body[:6] != _NPY_MAGIC_PREFIX or len(body) < 12:
        return None
    major = body[6]
    if major == 1:
        end = 10 + int.from_bytes(body[8:10], "little")
    elif major in (2, 3):
        end = 12 + int.from_bytes(body[8:12], "little")
    else:
        return None
    if end > _NPY_MAX_HEADER_BYTES or end > len(body):
        return None
    try:
        shape, fortran_order, dtype = _parse_npy_header(bytes(body[:end]))
    except Exception:
        # Malformed headers raise ValueError, SyntaxError or tokenize errors; NumPy's reader
        # then reports the problem in its own words.
        return None
    return shape, fortran_order, dtype, end


@functools.lru_cache(maxsize=64)
def _parse_npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Parse a .npy header with NumPy's own functions.

    Cached because parsing evaluates a Python literal (about 20 us) and a client sends the same
    header (same dtype and shape) with every request of a given size.
    """
    stream = io.BytesIO(header)
    if np.lib.format.read_magic(stream) == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        # Version 3.0 differs from 2.0 only by allowing UTF-8 in the header; a non-ASCII one
        # fails here and is left to np.lib.format.read_array.
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    return tuple(shape), bool(fortran_order), dtype


def _encode_json(prediction: Any) -> bytes:
    try:
        return json.dumps(prediction, default=_json_default).encode()
    except (TypeError, ValueError) as err:
        raise ModelError(
            f"the prediction ({type(prediction).__name__}) cannot be encoded as JSON: {err}"
        ) from None


def _json_default(value: Any) -> Any:
    """Let json.dumps write arrays and NumPy scalars, as sagemaker_containers' encoder does."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode_csv(prediction: Any) -> bytes:
    array = np.asarray(prediction)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim > 2:
        raise InvalidArgument(
            f"a {array.ndim}-D prediction cannot be written as text/csv; ask for {JSON} or {NPY}"
        )
    if array.size == 0 and array.ndim == 1:
        return b""
    cells: Any = array.tolist() if array.dtype.kind in _PLAIN_STR_KINDS else array
    if array.ndim == 1:
        text = "\n".join(map(str, cells))
        text += "\n"
    else:
        text = "".join([",".join(map(str, row)) + "\n" for row in cells])
    return text.encode()


def _encode_npy(prediction: Any) -> bytes:
    array = np.asarray(prediction)
    if array.dtype.hasobject:
        raise InvalidArgument(
            f"the prediction has dtype object, which {NPY} cannot carry without pickle; "
            f"ask for {JSON} or {CSV}"
        )
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
