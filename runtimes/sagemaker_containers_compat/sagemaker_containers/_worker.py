"""`Response`: what a handler returns to send a body with its own media type and status.

The toolkit's class is a Flask response; this one keeps the parts skmaker's servers read
(`get_data()`, `response`, `mimetype`, `content_type`, `status_code`, `headers`) without Flask.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from sagemaker_containers import _content_types

# Werkzeug appends a charset to these, so a text response's Content-Type says how it is encoded.
_CHARSET_TYPES = ("text/", "application/xml", "application/javascript", "application/ecmascript")


def _as_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"a response body must be bytes or str, not {type(chunk).__name__}")


class Response:
    """A response body with its media type and HTTP status.

    Args:
        response: The body: bytes, str, or an iterable of them; None for an empty body.
        accept: Ignored (deprecated in the toolkit too), with a DeprecationWarning.
        status: The HTTP status, 200 by default.
        headers: Extra headers.
        mimetype: The media type; `application/json` by default.
        content_type: The full Content-Type, when given instead of `mimetype`.
        direct_passthrough: Accepted for compatibility; has no effect.
    """

    default_mimetype = _content_types.JSON

    def __init__(
        self,
        response: Any = None,
        accept: str | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        mimetype: str | None = None,
        content_type: str | None = None,
        direct_passthrough: bool = False,
    ) -> None:
        if accept:
            warnings.warn(
                'ignoring deprecated "accept" argument to Response.__init__',
                DeprecationWarning,
                stacklevel=2,
            )
        if response is None:
            chunks: list[bytes] = []
        elif isinstance(response, (bytes, str, bytearray, memoryview)):
            chunks = [_as_bytes(response)]
        elif isinstance(response, Iterable):
            chunks = [_as_bytes(chunk) for chunk in response]
        else:
            raise TypeError(
                f"a response body must be bytes, str or an iterable of them, "
                f"not {type(response).__name__}"
            )
        if content_type is None:
            mimetype = mimetype or self.default_mimetype
            content_type = mimetype
            if mimetype.startswith(_CHARSET_TYPES):
                content_type = f"{mimetype}; charset=utf-8"
        else:
            mimetype = content_type.split(";", 1)[0].strip()
        self.response = chunks
        self.status_code = int(status)
        self.mimetype = mimetype
        self.content_type = content_type
        self.headers = {**(headers or {}), "Content-Type": content_type}
        self.direct_passthrough = direct_passthrough

    def get_data(self, as_text: bool = False) -> bytes | str:
        """The whole body, as bytes or (`as_text`) decoded from UTF-8."""
        data = b"".join(self.response)
        return data.decode("utf-8") if as_text else data

    @property
    def data(self) -> bytes:
        """The whole body as bytes."""
        return b"".join(self.response)

    @property
    def status(self) -> str:
        """The status line's text as Werkzeug writes it, e.g. `201 CREATED`."""
        try:
            return f"{self.status_code} {HTTPStatus(self.status_code).phrase.upper()}"
        except ValueError:
            return f"{self.status_code} UNKNOWN"
