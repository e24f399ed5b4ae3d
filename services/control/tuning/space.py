"""A tuning job's search space: SageMaker's parameter ranges, their rules, and their encoding.

Ranges are the three SageMaker kinds (IntegerParameter, ContinuousParameter,
CategoricalParameter) as frozen values. This module validates them against SageMaker's limits,
maps them to Optuna distributions, and converts between the values Optuna samples and the
encoded hyperparameter strings a training job receives (contract §1.5): Integer and Continuous
values are written raw (`"7"`, `"0.0123"`), Categorical values JSON-quoted (`"\\"rbf\\""`).

Scaling, as skmaker implements it:

- `Linear`: uniform on [min, max].
- `Logarithmic`: uniform in log space (needs min > 0); Optuna's `log=True`.
- `ReverseLogarithmic` (continuous only, 0 <= min < max < 1): values crowd near 1. Optuna
  samples u = 1 - x log-uniformly on [1 - max, 1 - min] and the job gets x = 1 - u; the study
  therefore holds u, never x, for such a parameter.
- `Auto`: SageMaker picks a scale itself and does not say how. skmaker chooses Logarithmic
  when min > 0 and max / min >= 100 (the range spans two orders of magnitude or more, as
  `C` in [0.001, 10] or `n_estimators` in [10, 1000]), Linear otherwise. Auto never picks
  ReverseLogarithmic.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

MAX_TUNED_PARAMETERS = 30
MAX_CATEGORICAL_VALUES = 30
# SageMaker's default quota of training jobs per tuning job; it also bounds a Grid.
MAX_TRAINING_JOBS = 500
MAX_NAME_CHARS = 256
# Auto scaling turns logarithmic when max / min reaches this ratio (and min > 0).
AUTO_LOG_RATIO = 100.0

# Keys the training toolkit removes from the user's hyperparameters (contract §1.5 step 4):
# a tuned value under one of these names would never reach the script.
_RESERVED_NAMES = frozenset({"_tuning_objective_metric", "default_user_module_name"})
_RESERVED_PREFIX = "sagemaker_"


class ScalingType(enum.StrEnum):
    """How a numeric range is searched (SageMaker's ScalingType)."""

    AUTO = "Auto"
    LINEAR = "Linear"
    LOGARITHMIC = "Logarithmic"
    REVERSE_LOGARITHMIC = "ReverseLogarithmic"


class TuningStrategy(enum.StrEnum):
    """How the tuner picks hyperparameters (SageMaker's HyperParameterTuningJobStrategyType)."""

    BAYESIAN = "Bayesian"
    RANDOM = "Random"
    GRID = "Grid"
    HYPERBAND = "Hyperband"


@dataclass(frozen=True)
class IntegerRange:
    """An integer hyperparameter searched on [min, max] (SageMaker's IntegerParameter)."""

    name: str
    min: int
    max: int
    scaling: ScalingType = ScalingType.AUTO


@dataclass(frozen=True)
class ContinuousRange:
    """A real-valued hyperparameter searched on [min, max] (SageMaker's ContinuousParameter)."""

    name: str
    min: float
    max: float
    scaling: ScalingType = ScalingType.AUTO


@dataclass(frozen=True)
class CategoricalRange:
    """A hyperparameter taking one of `values` (SageMaker's CategoricalParameter, stringified)."""

    name: str
    values: tuple[str, ...]


ParameterRange = IntegerRange | ContinuousRange | CategoricalRange
HyperparameterValue = int | float | str


def validate_ranges(ranges: Sequence[ParameterRange], strategy: TuningStrategy | str) -> None:
    """Checks the ranges against SageMaker's rules for a tuning job using `strategy`.

    Rules: 1 to 30 ranges with distinct names that the toolkit would not hide (`sagemaker_*`,
    `_tuning_objective_metric`); min < max; Logarithmic needs min > 0; ReverseLogarithmic is for
    continuous ranges with 0 <= min < max < 1; a categorical range has 1 to 30 distinct string
    values; Grid takes categorical and integer ranges only (scaling is then irrelevant) and at
    most MAX_TRAINING_JOBS combinations.

    Raises:
        ValueError: naming the first rule broken and the range breaking it.
    """
    strategy = _strategy(strategy)
    if not ranges:
        raise ValueError("a tuning job needs at least one hyperparameter range")
    if len(ranges) > MAX_TUNED_PARAMETERS:
        raise ValueError(
            f"at most {MAX_TUNED_PARAMETERS} hyperparameters can be tuned, got {len(ranges)}"
        )
    seen: set[str] = set()
    for parameter in ranges:
        _check_name(parameter.name)
        if parameter.name in seen:
            raise ValueError(f"hyperparameter {parameter.name!r} has more than one range")
        seen.add(parameter.name)
        if isinstance(parameter, CategoricalRange):
            _check_categorical(parameter)
        elif isinstance(parameter, IntegerRange | ContinuousRange):
            _check_numeric(parameter)
        else:
            raise ValueError(f"not a parameter range: {parameter!r}")
        if strategy is TuningStrategy.GRID and isinstance(parameter, ContinuousRange):
            raise ValueError(
                f"Grid search takes categorical and integer ranges only; "
                f"{parameter.name!r} is continuous"
            )
    if strategy is TuningStrategy.GRID and grid_size(ranges) > MAX_TRAINING_JOBS:
        raise ValueError(
            f"the grid has {grid_size(ranges)} combinations; at most {MAX_TRAINING_JOBS} "
            "training jobs can run in one tuning job"
        )


def effective_scaling(parameter: IntegerRange | ContinuousRange) -> ScalingType:
    """The scaling actually used: Auto resolved as the module docstring says."""
    scaling = ScalingType(parameter.scaling)
    if scaling is not ScalingType.AUTO:
        return scaling
    if parameter.min > 0 and parameter.max / parameter.min >= AUTO_LOG_RATIO:
        return ScalingType.LOGARITHMIC
    return ScalingType.LINEAR


def grid_size(ranges: Sequence[ParameterRange]) -> int:
    """The number of combinations of a Grid over categorical and integer ranges."""
    return math.prod(len(_grid_values(parameter)) for parameter in ranges)


def grid_search_space(ranges: Sequence[ParameterRange]) -> dict[str, list[int | str]]:
    """Every value of every range, as Optuna's GridSampler takes them."""
    return {parameter.name: _grid_values(parameter) for parameter in ranges}


def distributions(ranges: Sequence[ParameterRange]) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each range, by name (ReverseLogarithmic: over u = 1 - x)."""
    return {parameter.name: _distribution(parameter) for parameter in ranges}


def encode(ranges: Sequence[ParameterRange], params: Mapping[str, Any]) -> dict[str, str]:
    """Renders Optuna-sampled `params` as the hyperparameter strings a training job receives.

    Integers are written raw (`"7"`), floats as Python's shortest round-trip repr (`"0.0123"`,
    `"1e-05"`), categoricals through `json.dumps` (`"\\"rbf\\""`); the keys keep the order of
    `ranges`. A ReverseLogarithmic u becomes x = 1 - u, clamped into [min, max] because the
    subtraction can land one ulp outside.
    """
    encoded: dict[str, str] = {}
    for parameter in ranges:
        value = params[parameter.name]
        if isinstance(parameter, CategoricalRange):
            encoded[parameter.name] = json.dumps(value)
        elif isinstance(parameter, IntegerRange):
            encoded[parameter.name] = str(int(value))
        else:
            number = float(value)
            if effective_scaling(parameter) is ScalingType.REVERSE_LOGARITHMIC:
                number = min(max(1.0 - number, parameter.min), parameter.max)
            encoded[parameter.name] = repr(number)
    return encoded


def decode(ranges: Sequence[ParameterRange], encoded: Mapping[str, str]) -> dict[str, Any]:
    """The Optuna params behind encoded hyperparameters: the inverse of `encode`.

    Keys other than the ranges' names (static hyperparameters stored alongside) are ignored.

    Raises:
        ValueError: a range's value is missing, malformed or outside the range.
    """
    params: dict[str, Any] = {}
    for parameter in ranges:
        value = decode_hyperparameters([parameter], encoded)[parameter.name]
        if (
            isinstance(parameter, ContinuousRange)
            and effective_scaling(parameter) is ScalingType.REVERSE_LOGARITHMIC
        ):
            # Clamped for the same one-ulp reason as in `encode`.
            value = min(max(1.0 - float(value), 1.0 - parameter.max), 1.0 - parameter.min)
        params[parameter.name] = value
    return params


def decode_hyperparameters(
    ranges: Sequence[ParameterRange], encoded: Mapping[str, str]
) -> dict[str, HyperparameterValue]:
    """The values a script sees for the tuned hyperparameters (int, float or str), by name.

    A categorical value is read as JSON; a bare string that is one of the values is accepted
    too (it is what boto3 users write, and the toolkit keeps it as is).

    Raises:
        ValueError: a range's value is missing, malformed or outside the range.
    """
    values: dict[str, HyperparameterValue] = {}
    for parameter in ranges:
        if parameter.name not in encoded:
            raise ValueError(f"no value for tuned hyperparameter {parameter.name!r}")
        text = encoded[parameter.name]
        values[parameter.name] = _decode_value(parameter, text)
    return values


def _decode_value(parameter: ParameterRange, text: str) -> HyperparameterValue:
    if isinstance(parameter, CategoricalRange):
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if value in parameter.values:
            return str(value)
        if text in parameter.values:
            return text
        raise ValueError(f"{parameter.name}={text} is not one of {list(parameter.values)}")
    number: int | float
    try:
        number = int(text) if isinstance(parameter, IntegerRange) else float(text)
    except ValueError:
        kind = "an integer" if isinstance(parameter, IntegerRange) else "a number"
        raise ValueError(f"{parameter.name}={text!r} is not {kind}") from None
    if not parameter.min <= number <= parameter.max:
        raise ValueError(f"{parameter.name}={text} is outside [{parameter.min}, {parameter.max}]")
    return number


def _distribution(parameter: ParameterRange) -> BaseDistribution:
    if isinstance(parameter, CategoricalRange):
        return CategoricalDistribution(parameter.values)
    scaling = effective_scaling(parameter)
    if isinstance(parameter, IntegerRange):
        return IntDistribution(parameter.min, parameter.max, log=scaling is ScalingType.LOGARITHMIC)
    if scaling is ScalingType.REVERSE_LOGARITHMIC:
        return FloatDistribution(1.0 - parameter.max, 1.0 - parameter.min, log=True)
    return FloatDistribution(
        float(parameter.min), float(parameter.max), log=scaling is ScalingType.LOGARITHMIC
    )


def _grid_values(parameter: ParameterRange) -> list[int | str]:
    if isinstance(parameter, CategoricalRange):
        return list(parameter.values)
    if isinstance(parameter, IntegerRange):
        return list(range(parameter.min, parameter.max + 1))
    raise ValueError(f"{parameter.name!r} is continuous and has no grid")


def _strategy(strategy: TuningStrategy | str) -> TuningStrategy:
    try:
        return TuningStrategy(strategy)
    except ValueError:
        allowed = ", ".join(member.value for member in TuningStrategy)
        raise ValueError(f"strategy must be one of {allowed}, got {strategy!r}") from None


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a hyperparameter name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"hyperparameter name {name[:40]!r}... exceeds {MAX_NAME_CHARS} chars")
    if name.startswith(_RESERVED_PREFIX) or name in _RESERVED_NAMES:
        raise ValueError(
            f"{name!r} is reserved by the training toolkit and never reaches the script"
        )


def _check_categorical(parameter: CategoricalRange) -> None:
    values = parameter.values
    if not isinstance(values, tuple) or not values:
        raise ValueError(f"{parameter.name!r} needs a non-empty tuple of values")
    if len(values) > MAX_CATEGORICAL_VALUES:
        raise ValueError(
            f"{parameter.name!r} has {len(values)} values; at most "
            f"{MAX_CATEGORICAL_VALUES} are allowed per categorical range"
        )
    if not all(isinstance(value, str) for value in values):
        raise ValueError(f"the values of {parameter.name!r} must be strings, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"the values of {parameter.name!r} repeat: {values!r}")


def _check_numeric(parameter: IntegerRange | ContinuousRange) -> None:
    name = parameter.name
    for bound in (parameter.min, parameter.max):
        if isinstance(parameter, IntegerRange):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise ValueError(f"the bounds of {name!r} must be integers, got {bound!r}")
        elif (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or not math.isfinite(bound)
        ):
            raise ValueError(f"the bounds of {name!r} must be finite numbers, got {bound!r}")
    if not parameter.min < parameter.max:
        raise ValueError(
            f"{name!r} needs min < max, got [{parameter.min}, {parameter.max}] "
            "(a fixed value is a static hyperparameter)"
        )
    try:
        scaling = ScalingType(parameter.scaling)
    except ValueError:
        allowed = ", ".join(member.value for member in ScalingType)
        raise ValueError(
            f"the scaling of {name!r} must be one of {allowed}, got {parameter.scaling!r}"
        ) from None
    if scaling is ScalingType.LOGARITHMIC and parameter.min <= 0:
        raise ValueError(f"Logarithmic scaling of {name!r} needs min > 0, got {parameter.min}")
    if scaling is ScalingType.REVERSE_LOGARITHMIC:
        if isinstance(parameter, IntegerRange):
            raise ValueError(
                f"ReverseLogarithmic scaling is for continuous ranges only; {name!r} is integer"
            )
        if not 0 <= parameter.min < parameter.max < 1:
            raise ValueError(
                f"ReverseLogarithmic scaling of {name!r} needs 0 <= min < max < 1, "
                f"got [{parameter.min}, {parameter.max}]"
            )
