"""What a model's output_fn or transform_fn may return, turned into (body, content type).

SageMaker's Flask-based serving stack accepts bytes and str (sent as the accept type), a
`(body, content_type)` tuple, a dict or list (sent as JSON the way Flask's jsonify writes it)
and response objects (the toolkit's `worker.Response`, Flask or Werkzeug responses), whose HTTP
error status becomes the error. Also how a user's exception is described in an error message.
"""

from __future__ import annotations

import json
from typing import Any

from services.runtime.errors import InvalidArgument, ModelError
from services.sagemaker.serving.codecs import JSON

# Status messages travel in gRPC trailers, whose size is limited; a user's exception text (say,
# a scikit-learn error listing every feature name) is cut to this many characters.
_MAX_ERROR_CHARS = 1024


def response_body(result: Any, accept: str, name: str) -> tuple[bytes, str]:
    """Turn what output_fn or transform_fn returned into (body, content type).

    What SageMaker's Flask-based serving stack sends: a response object (the toolkit's
    `worker.Response`, a Flask or Werkzeug response: anything with `get_data()` or a `response`
    iterable, and a `mimetype` or `content_type`) with its own type, a `(body, content_type)`
    tuple, bytes or str as the accept type, and a dict or list as JSON (as Flask does).
    """
    if isinstance(result, tuple):
        if len(result) != 2 or not isinstance(result[1], str):
            raise ModelError(
                f"the model's {name} returned a tuple that is not (body, content_type)"
            )
        body, content_type = result
        if isinstance(body, (dict, list)):
            return _json_body(body, name), content_type
    else:
        body, content_type = result, accept
    if isinstance(body, bytes):
        return body, content_type
    if isinstance(body, str):
        return body.encode(), content_type
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body), content_type
    if isinstance(body, (dict, list)):
        return _json_body(body, name), JSON
    if _is_response_object(body):
        return _response_object_body(body, name)
    raise ModelError(
        f"the model's {name} returned {type(body).__name__}; expected bytes, str, a dict or "
        "list (sent as JSON), a (body, content_type) tuple or a response object "
        "(worker.Response)"
    )


def _json_body(value: dict[str, Any] | list[Any], name: str) -> bytes:
    # Flask's jsonify: sorted keys, compact separators, ASCII only, a newline at the end.
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError) as err:
        raise ModelError(
            f"the model's {name} returned a {type(value).__name__} that is not JSON: {err}"
        ) from err
    return (text + "\n").encode()


def _is_response_object(value: Any) -> bool:
    has_type = isinstance(getattr(value, "mimetype", None), str) or isinstance(
        getattr(value, "content_type", None), str
    )
    has_body = callable(getattr(value, "get_data", None)) or hasattr(value, "response")
    return has_type and has_body


def _response_object_body(response: Any, name: str) -> tuple[bytes, str]:
    """Body and Content-Type of a Flask-style response; an error status becomes the error."""
    content_type = getattr(response, "content_type", None) or response.mimetype
    try:
        if callable(getattr(response, "get_data", None)):
            data = response.get_data()
        else:
            data = b"".join(
                chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                for chunk in response.response
            )
    except Exception as err:
        raise ModelError(
            f"the model's {name} returned a {type(response).__name__} whose body cannot be "
            f"read: {describe_error(err)}"
        ) from err
    body = data.encode() if isinstance(data, str) else bytes(data)
    status = getattr(response, "status_code", 200)
    if isinstance(status, int) and status >= 400:
        text = body[:200].decode(errors="replace")
        message = f"the model's {name} returned an HTTP {status} response: {text}"
        raise InvalidArgument(message) if status < 500 else ModelError(message)
    return body, content_type


def describe_error(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text
