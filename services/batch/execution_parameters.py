"""The batch knobs a model asks for through `execution_parameters_fn`, and who wins over them.

SageMaker's batch platform calls a model's `/execution-parameters` route once before scoring
(contract §2.8): the SKLearn container answers it with the module's `execution_parameters_fn()`,
JSON such as `{"MaxConcurrentTransforms": 8, "BatchStrategy": "MULTI_RECORD",
"MaxPayloadInMB": 6}`. A batch worker calls the function in-process instead and accepts what
such functions return in the containers: a dict, JSON text or bytes, a `(body, content_type)`
tuple, or a response object carrying the JSON body (Flask's `get_data()`, or a `body` or
`response` attribute); a response with an error status is refused.

`resolve` applies the precedence of contract §4.2 to each knob: the value in the request, else
the model's, else SageMaker's default (MaxConcurrentTransforms 1, BatchStrategy MultiRecord,
MaxPayloadInMB 6), and checks the limits the control checks for requests (MaxPayloadInMB
1-100, MaxConcurrentTransforms x MaxPayloadInMB <= 100). A value of 0 is unset, as in the
request. Every problem is an `ExecutionParametersError` whose message names
`execution_parameters_fn`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from services.sagemaker.transform.records import BatchStrategy

T = TypeVar("T")

FUNCTION = "execution_parameters_fn"
DEFAULT_MAX_CONCURRENT_TRANSFORMS = 1
DEFAULT_BATCH_STRATEGY: BatchStrategy = "MultiRecord"
DEFAULT_MAX_PAYLOAD_MB = 6
MAX_PAYLOAD_MB = 100
MAX_CONCURRENT_TIMES_PAYLOAD_MB = 100

_STRATEGIES: dict[str, BatchStrategy] = {
    "MULTI_RECORD": "MultiRecord",
    "SINGLE_RECORD": "SingleRecord",
    "MULTIRECORD": "MultiRecord",
    "SINGLERECORD": "SingleRecord",
}
# How much of a bad answer a message quotes.
_QUOTED_CHARS = 200


class ExecutionParametersError(Exception):
    """`execution_parameters_fn` failed or answered something unusable (the message says why)."""


@dataclass(frozen=True)
class ExecutionParameters:
    """MaxConcurrentTransforms, BatchStrategy and MaxPayloadInMB; None where not set.

    Attributes:
        max_concurrent_transforms: Mini-batches scored at once, at least 1.
        batch_strategy: `"MultiRecord"` or `"SingleRecord"`.
        max_payload_mb: The largest mini-batch in MiB, 1-100.
    """

    max_concurrent_transforms: int | None = None
    batch_strategy: BatchStrategy | None = None
    max_payload_mb: int | None = None

    @property
    def is_complete(self) -> bool:
        """True when every knob is set, so nothing is left for the model to decide."""
        return None not in (
            self.max_concurrent_transforms,
            self.batch_strategy,
            self.max_payload_mb,
        )


@dataclass(frozen=True)
class BatchKnobs:
    """The knobs a shard is scored with, every one decided."""

    max_concurrent_transforms: int
    batch_strategy: BatchStrategy
    max_payload_mb: int


def ask_model(module: ModuleType | None) -> ExecutionParameters:
    """Calls the module's `execution_parameters_fn()`; no values when it defines none.

    Raises:
        ExecutionParametersError: the function raised, or its answer is unusable.
    """
    function = getattr(module, FUNCTION, None) if module is not None else None
    if function is None:
        return ExecutionParameters()
    if not callable(function):
        raise ExecutionParametersError(f"the model's {FUNCTION} is not a function")
    try:
        answer = function()
    except Exception as err:
        raise ExecutionParametersError(
            f"the model's {FUNCTION} raised {type(err).__name__}: {_quote(err)}"
        ) from err
    return parse_answer(answer)


def parse_answer(answer: Any) -> ExecutionParameters:
    """The knobs in what an `execution_parameters_fn` returned (see the module docstring).

    Raises:
        ExecutionParametersError: the answer is no JSON object, or a value is out of range.
    """
    values = _json_object(answer)
    return ExecutionParameters(
        max_concurrent_transforms=_count(values, "MaxConcurrentTransforms", 1, None),
        batch_strategy=_strategy(values),
        max_payload_mb=_count(values, "MaxPayloadInMB", 1, MAX_PAYLOAD_MB),
    )


def resolve(requested: ExecutionParameters, model: ExecutionParameters) -> BatchKnobs:
    """Each knob from the request, else the model's answer, else SageMaker's default.

    Raises:
        ExecutionParametersError: with the model's values, MaxConcurrentTransforms x
            MaxPayloadInMB exceeds 100 (requests alone are checked by the control).
    """
    knobs = BatchKnobs(
        max_concurrent_transforms=_first(
            requested.max_concurrent_transforms,
            model.max_concurrent_transforms,
            DEFAULT_MAX_CONCURRENT_TRANSFORMS,
        ),
        batch_strategy=_first(
            requested.batch_strategy, model.batch_strategy, DEFAULT_BATCH_STRATEGY
        ),
        max_payload_mb=_first(
            requested.max_payload_mb, model.max_payload_mb, DEFAULT_MAX_PAYLOAD_MB
        ),
    )
    product = knobs.max_concurrent_transforms * knobs.max_payload_mb
    if product > MAX_CONCURRENT_TIMES_PAYLOAD_MB:
        raise ExecutionParametersError(
            f"with what the model's {FUNCTION} asks for, MaxConcurrentTransforms "
            f"({knobs.max_concurrent_transforms}) x MaxPayloadInMB ({knobs.max_payload_mb}) is "
            f"{product}; it must not exceed {MAX_CONCURRENT_TIMES_PAYLOAD_MB}"
        )
    return knobs


def _first(*values: T | None) -> T:
    for value in values:
        if value is not None:
            return value
    raise ValueError("no value and no default")


def _json_object(answer: Any) -> Mapping[str, Any]:
    if isinstance(answer, Mapping):
        return answer
    if isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[1], str):
        answer = answer[0]  # (body, content_type), as output_fn may return
    if not isinstance(answer, (str, bytes, bytearray, memoryview)):
        answer = _response_body(answer)
    if isinstance(answer, (bytes, bytearray, memoryview)):
        try:
            answer = bytes(answer).decode()
        except UnicodeDecodeError:
            raise ExecutionParametersError(
                f"the model's {FUNCTION} returned a body that is not UTF-8 JSON"
            ) from None
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except json.JSONDecodeError as err:
            raise ExecutionParametersError(
                f"the model's {FUNCTION} returned {_quote(answer)!r}, which is not JSON: {err}"
            ) from None
    if not isinstance(answer, Mapping):
        raise ExecutionParametersError(
            f"the model's {FUNCTION} returned {_quote(answer)}; expected a JSON object such as "
            '{"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}'
        )
    return answer


def _response_body(response: Any) -> Any:
    """The body of a response object (Flask/Werkzeug, or anything with `body`/`response`)."""
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and not 200 <= status < 300:
        raise ExecutionParametersError(f"the model's {FUNCTION} answered with status {status}")
    get_data = getattr(response, "get_data", None)
    if callable(get_data):
        return get_data()
    for attribute in ("body", "response"):
        if hasattr(response, attribute):
            body = getattr(response, attribute)
            if isinstance(body, Iterable) and not isinstance(
                body, (str, bytes, bytearray, memoryview, Mapping)
            ):
                # Werkzeug keeps the body as an iterable of chunks.
                chunks = list(body)
                if all(isinstance(chunk, (bytes, str)) for chunk in chunks):
                    return b"".join(c.encode() if isinstance(c, str) else c for c in chunks)
            return body
    return response


def _count(values: Mapping[str, Any], key: str, low: int, high: int | None) -> int | None:
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExecutionParametersError(
            f"the model's {FUNCTION} gave {key} {_quote(value)!r}; expected a whole number"
        )
    if value == 0:
        return None  # 0 is unset, as in a request
    if value < low or (high is not None and value > high):
        allowed = f"{low}-{high}" if high is not None else f"{low} or more"
        raise ExecutionParametersError(f"the model's {FUNCTION} gave {key} {value}; use {allowed}")
    return value


def _strategy(values: Mapping[str, Any]) -> BatchStrategy | None:
    value = values.get("BatchStrategy")
    if value is None or value == "":
        return None
    strategy = _STRATEGIES.get(value.upper()) if isinstance(value, str) else None
    if strategy is None:
        raise ExecutionParametersError(
            f"the model's {FUNCTION} gave BatchStrategy {_quote(value)!r}; use MULTI_RECORD "
            "or SINGLE_RECORD"
        )
    return strategy


def _quote(value: object) -> str:
    text = str(value)
    return text if len(text) <= _QUOTED_CHARS else text[: _QUOTED_CHARS - 3] + "..."
