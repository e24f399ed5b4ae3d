"""The toolkit's error classes that scripts catch or raise."""

from __future__ import annotations


class ClientError(Exception):
    """The request cannot be served as sent: a user error rather than a framework one."""


class UnsupportedFormatError(Exception):
    """No encoder or decoder for a content type (as in the toolkit, not a `ClientError`)."""

    def __init__(self, content_type: str, **kwargs: object) -> None:
        self.message = (
            f"Content type {content_type} is not supported by this framework. Define an "
            "input_fn to read the request or an output_fn to write the response."
        )
        super().__init__(self.message, **kwargs)
