"""Hyperparameter ranges for tuning, with the SageMaker SDK's names (`sagemaker.parameter`).

`IntegerParameter` and `ContinuousParameter` are numeric ranges with a scaling type;
`CategoricalParameter` is a list of values, each stringified. `as_tuning_range(name)` gives the
boto3 `ParameterRanges` entry the tuning job is created with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


class NumericParameter:
    """A numeric range: `min_value`..`max_value` searched with `scaling_type`."""

    range_key = ""

    def __init__(
        self, min_value: float | str, max_value: float | str, scaling_type: str = "Auto"
    ) -> None:
        self.min_value = min_value
        self.max_value = max_value
        self.scaling_type = scaling_type

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.min_value!r}, {self.max_value!r}, "
            f"scaling_type={self.scaling_type!r})"
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), self.min_value, self.max_value, self.scaling_type))

    def as_tuning_range(self, name: str) -> dict[str, str]:
        """The range as boto3's `ParameterRanges` entry (bounds as strings)."""
        return {
            "Name": name,
            "MinValue": str(self.min_value),
            "MaxValue": str(self.max_value),
            "ScalingType": self.scaling_type,
        }


class IntegerParameter(NumericParameter):
    """An integer hyperparameter searched on [min_value, max_value] (SageMaker's name).

    Args:
        min_value: smallest value.
        max_value: largest value.
        scaling_type: Auto, Linear or Logarithmic.
    """

    range_key = "IntegerParameterRanges"


class ContinuousParameter(NumericParameter):
    """A real hyperparameter searched on [min_value, max_value] (SageMaker's name).

    Args:
        min_value: smallest value.
        max_value: largest value.
        scaling_type: Auto, Linear, Logarithmic or ReverseLogarithmic.
    """

    range_key = "ContinuousParameterRanges"


class CategoricalParameter:
    """A hyperparameter taking one of `values`, each stringified (SageMaker's name).

    A value that is not a string is turned into one with `json.dumps` for booleans and `str`
    otherwise, as SageMaker's SDK does; the script receives it as the string's text.

    Args:
        values: the allowed values, or a single one.
    """

    range_key = "CategoricalParameterRanges"

    def __init__(self, values: Sequence[Any] | Any) -> None:
        items = list(values) if isinstance(values, list | tuple) else [values]
        self.values = [_stringify(value) for value in items]

    def __repr__(self) -> str:
        return f"CategoricalParameter({self.values!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CategoricalParameter) and other.values == self.values

    def __hash__(self) -> int:
        return hash(tuple(self.values))

    def as_tuning_range(self, name: str) -> dict[str, Any]:
        """The range as boto3's `ParameterRanges` entry."""
        return {"Name": name, "Values": list(self.values)}


ParameterRange = IntegerParameter | ContinuousParameter | CategoricalParameter


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return json.dumps(value)
    return str(value)
