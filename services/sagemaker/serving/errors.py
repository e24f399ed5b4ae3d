"""Exceptions of the inference service, each carrying its gRPC status code.

Request-time errors reuse `services.runtime.errors` directly (`InvalidArgument` for a payload the
default handlers cannot read, `ModelError` when the user's code raises); only what is specific to
this service lives here.
"""

from __future__ import annotations

from services.runtime.errors import FailedPrecondition


class HandlerLoadError(FailedPrecondition):
    """The user's module or model cannot be loaded, so nothing can be served (FAILED_PRECONDITION).

    Raised for a missing entry point, an entry point that fails to import, a missing `model_fn`,
    `transform_fn` defined together with input/predict/output_fn, a `model_fn` that raises, and a
    failed warm-up prediction. Subclassing `FailedPrecondition` gives it that status code without
    this module importing grpc, and lets callers catch it either way.
    """
