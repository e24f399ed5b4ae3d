"""execution_parameters_fn answers as the SageMaker containers accept them, and the precedence
of contract §4.2: the request, then the model's answer, then 1 / MultiRecord / 6."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from services.batch.execution_parameters import (
    BatchKnobs,
    ExecutionParameters,
    ExecutionParametersError,
    ask_model,
    parse_answer,
    resolve,
)

SINGLE = {"MaxConcurrentTransforms": 2, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 3}
EXPECTED = ExecutionParameters(
    max_concurrent_transforms=2, batch_strategy="SingleRecord", max_payload_mb=3
)


class FlaskLike:
    """What `flask.Response(json.dumps(...), mimetype="application/json")` offers."""

    def __init__(self, body: str, status_code: int = 200) -> None:
        self.response = [body.encode()]
        self.status_code = status_code

    def get_data(self) -> bytes:
        return b"".join(self.response)


class WithBody:
    def __init__(self, body: Any) -> None:
        self.body = body


class WithChunks:
    def __init__(self, *chunks: bytes | str) -> None:
        self.response = list(chunks)


@pytest.mark.parametrize(
    "answer",
    [
        SINGLE,
        json.dumps(SINGLE),
        json.dumps(SINGLE).encode(),
        (json.dumps(SINGLE), "application/json"),
        FlaskLike(json.dumps(SINGLE)),
        WithBody(json.dumps(SINGLE).encode()),
        WithChunks(
            '{"MaxConcurrentTransforms": 2, ',
            b'"BatchStrategy": "SINGLE_RECORD", ',
            '"MaxPayloadInMB": "3"}',
        ),
        {**SINGLE, "BatchStrategy": "SingleRecord", "Other": "ignored"},
    ],
    ids=["dict", "str", "bytes", "tuple", "flask", "body", "chunks", "sdk-spelling"],
)
def test_answers_the_containers_accept(answer: Any) -> None:
    assert parse_answer(answer) == EXPECTED


def test_missing_null_and_zero_values_are_unset() -> None:
    answer = {"BatchStrategy": None, "MaxPayloadInMB": 0}
    assert parse_answer(answer) == ExecutionParameters()
    assert parse_answer("{}") == ExecutionParameters()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (42, "expected a JSON object"),
        (b"\xff", "not UTF-8"),
        (FlaskLike("{}", status_code=500), "status 500"),
        ({"BatchStrategy": "BATCHED"}, "BatchStrategy 'BATCHED'"),
        ({"BatchStrategy": 1}, "BatchStrategy"),
        ({"MaxPayloadInMB": 101}, "MaxPayloadInMB 101; use 1-100"),
        ({"MaxPayloadInMB": "six"}, "whole number"),
        ({"MaxConcurrentTransforms": -1}, "MaxConcurrentTransforms -1"),
        ({"MaxConcurrentTransforms": True}, "whole number"),
        ({"MaxConcurrentTransforms": 2.5}, "whole number"),
    ],
)
def test_bad_answers_name_the_function(answer: Any, message: str) -> None:
    with pytest.raises(ExecutionParametersError) as caught:
        parse_answer(answer)
    assert "execution_parameters_fn" in str(caught.value)
    assert message in str(caught.value)


def test_a_module_without_the_function_asks_for_nothing() -> None:
    assert ask_model(types.ModuleType("m")) == ExecutionParameters()
    assert ask_model(None) == ExecutionParameters()


def test_a_function_that_raises_fails_with_its_error() -> None:
    module = types.ModuleType("m")

    def execution_parameters_fn() -> dict[str, Any]:
        raise RuntimeError("no GPU here")

    module.execution_parameters_fn = execution_parameters_fn  # type: ignore[attr-defined]
    with pytest.raises(ExecutionParametersError, match="execution_parameters_fn raised Runtime"):
        ask_model(module)


@pytest.mark.parametrize(
    ("requested", "model", "expected"),
    [
        (ExecutionParameters(), ExecutionParameters(), BatchKnobs(1, "MultiRecord", 6)),
        (ExecutionParameters(), EXPECTED, BatchKnobs(2, "SingleRecord", 3)),
        (
            ExecutionParameters(batch_strategy="MultiRecord", max_payload_mb=1),
            EXPECTED,
            BatchKnobs(2, "MultiRecord", 1),
        ),
        (
            ExecutionParameters(max_concurrent_transforms=4),
            ExecutionParameters(max_payload_mb=25),
            BatchKnobs(4, "MultiRecord", 25),
        ),
    ],
)
def test_the_request_wins_then_the_model_then_the_defaults(
    requested: ExecutionParameters, model: ExecutionParameters, expected: BatchKnobs
) -> None:
    assert resolve(requested, model) == expected


def test_the_product_limit_holds_for_the_model_s_values_too() -> None:
    with pytest.raises(
        ExecutionParametersError, match=r"execution_parameters_fn.*\(8\) x .*\(20\)"
    ):
        resolve(
            ExecutionParameters(max_payload_mb=20), ExecutionParameters(max_concurrent_transforms=8)
        )
