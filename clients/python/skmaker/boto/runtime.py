"""`SageMakerRuntimeClient`: boto3's `sagemaker-runtime` client shape (InvokeEndpoint)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from skmaker import errors as skmaker_errors
from skmaker.boto.client_base import BotoShapedClient
from skmaker.boto.errors import client_error
from skmaker.descriptions import VARIANT_NAME


class StreamingBody(io.BytesIO):
    """An answer's body, read like botocore's `StreamingBody` (`read`, `iter_lines`,
    `iter_chunks`, `close`)."""

    def iter_chunks(self, chunk_size: int = 1024) -> Iterator[bytes]:
        """The rest of the body in chunks of at most `chunk_size` bytes."""
        while chunk := self.read(chunk_size):
            yield chunk

    def iter_lines(self, chunk_size: int = 1024, keepends: bool = False) -> Iterator[bytes]:
        """The rest of the body line by line."""
        del chunk_size
        yield from self.read().splitlines(keepends)


class SageMakerRuntimeClient(BotoShapedClient):
    """boto3's `sagemaker-runtime` client shape over a skmaker `Session`."""

    _service = "sagemaker-runtime"
    _exception_codes = ("ModelError", "ValidationError", "ServiceUnavailable", "InternalFailure")

    def invoke_endpoint(
        self,
        *,
        EndpointName: str,
        Body: bytes | str | Any,
        ContentType: str = "application/octet-stream",
        Accept: str = "",
        CustomAttributes: str | None = None,
        TargetModel: str | None = None,
        TargetVariant: str | None = None,
        InferenceId: str | None = None,
        **ignored: Any,
    ) -> dict[str, Any]:
        """InvokeEndpoint: `{"Body": <StreamingBody>, "ContentType", "InvokedProductionVariant"}`.

        `Body` may be bytes, str or a readable file object; an empty or `*/*` `Accept`
        gets the handler's default type.

        Raises:
            ClientError: ModelError (with `OriginalStatusCode`) when the handler refused or
                raised, ValidationException for an unknown endpoint or an unsupported
                `TargetModel`/`TargetVariant`.
        """
        del InferenceId, ignored
        if TargetModel is not None or TargetVariant not in (None, VARIANT_NAME):
            raise client_error(
                skmaker_errors.InvalidArgument(
                    f"skmaker endpoints serve one model in one variant, {VARIANT_NAME!r}"
                ),
                "InvokeEndpoint",
            )
        payload = Body.read() if hasattr(Body, "read") else Body
        body, content_type = self._call(
            "invoke_endpoint",
            lambda: self._session.invoke_endpoint(
                EndpointName, payload, ContentType, Accept, CustomAttributes
            ),
            from_model=True,
        )
        return self._answer(
            {
                "Body": StreamingBody(body),
                "ContentType": content_type,
                "InvokedProductionVariant": VARIANT_NAME,
            }
        )
