"""Tuning ranges: SageMaker's rules, Auto scaling, Optuna distributions and the §1.5 encoding."""

from __future__ import annotations

import json

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from services.control.tuning.space import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    ParameterRange,
    ScalingType,
    TuningStrategy,
    decode,
    decode_hyperparameters,
    distributions,
    effective_scaling,
    encode,
    grid_search_space,
    grid_size,
    validate_ranges,
)

LOG = ScalingType.LOGARITHMIC
REVERSE = ScalingType.REVERSE_LOGARITHMIC
KERNEL = CategoricalRange("kernel", ("rbf", "linear"))


@pytest.mark.parametrize(
    ("ranges", "strategy", "message"),
    [
        ([], "Bayesian", "at least one"),
        ([IntegerRange(f"p{i}", 1, 2) for i in range(31)], "Bayesian", "at most 30"),
        ([IntegerRange("a", 1, 2), ContinuousRange("a", 0, 1)], "Random", "more than one"),
        ([IntegerRange("", 1, 2)], "Random", "non-empty string"),
        ([IntegerRange("x" * 257, 1, 2)], "Random", "256"),
        ([IntegerRange("sagemaker_program", 1, 2)], "Random", "reserved"),
        ([IntegerRange("_tuning_objective_metric", 1, 2)], "Random", "reserved"),
        ([IntegerRange("depth", 3, 3)], "Random", "min < max"),
        ([ContinuousRange("lr", 0.5, 0.1)], "Random", "min < max"),
        ([IntegerRange("depth", 1, 2.5)], "Random", "integers"),  # type: ignore[arg-type]
        ([IntegerRange("depth", True, 5)], "Random", "integers"),
        ([ContinuousRange("lr", 0.0, float("inf"))], "Random", "finite"),
        ([ContinuousRange("lr", 0.0, 1.0, "Exponential")], "Random", "scaling"),  # type: ignore[arg-type]
        ([ContinuousRange("lr", 0.0, 1.0, LOG)], "Random", "min > 0"),
        ([IntegerRange("n", 0, 100, LOG)], "Random", "min > 0"),
        ([IntegerRange("n", 0, 1, REVERSE)], "Random", "continuous ranges only"),
        ([ContinuousRange("m", -0.1, 0.5, REVERSE)], "Random", "0 <= min < max < 1"),
        ([ContinuousRange("m", 0.1, 1.0, REVERSE)], "Random", "0 <= min < max < 1"),
        ([CategoricalRange("k", ())], "Random", "non-empty"),
        ([CategoricalRange("k", tuple(str(i) for i in range(31)))], "Random", "at most 30"),
        ([CategoricalRange("k", ("a", "a"))], "Random", "repeat"),
        ([CategoricalRange("k", ("a", 1))], "Random", "strings"),  # type: ignore[arg-type]
        ([KERNEL, ContinuousRange("c", 0.1, 1.0)], "Grid", "categorical and integer"),
        ([IntegerRange("a", 1, 30), IntegerRange("b", 1, 30)], "Grid", "900 combinations"),
        ([KERNEL], "Exhaustive", "strategy must be one of"),
    ],
)
def test_validate_ranges_rejects(ranges: list[ParameterRange], strategy: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_ranges(ranges, strategy)


@pytest.mark.parametrize(
    ("ranges", "strategy"),
    [
        ([IntegerRange(f"p{i}", 1, 2) for i in range(30)], "Bayesian"),
        ([CategoricalRange("k", tuple(str(i) for i in range(30)))], "Random"),
        ([ContinuousRange("m", 0.0, 0.999, REVERSE)], "Hyperband"),
        ([ContinuousRange("lr", 1e-5, 1.0, LOG), IntegerRange("n", 1, 1000, LOG)], "Bayesian"),
        ([KERNEL, IntegerRange("depth", 1, 3, LOG)], "Grid"),
    ],
)
def test_validate_ranges_accepts(ranges: list[ParameterRange], strategy: str) -> None:
    validate_ranges(ranges, strategy)


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        (ContinuousRange("c", 1e-3, 10.0), LOG),
        (IntegerRange("n_estimators", 10, 1000), LOG),
        (IntegerRange("max_leaf_nodes", 2, 50), ScalingType.LINEAR),
        (ContinuousRange("shift", -1.0, 100.0), ScalingType.LINEAR),
        (ContinuousRange("c", 1e-3, 10.0, ScalingType.LINEAR), ScalingType.LINEAR),
        (ContinuousRange("m", 0.0, 0.9, REVERSE), REVERSE),
    ],
)
def test_auto_scaling_is_logarithmic_over_two_orders_of_magnitude(
    parameter: IntegerRange | ContinuousRange, expected: ScalingType
) -> None:
    assert effective_scaling(parameter) is expected


def test_distributions_follow_the_scaling() -> None:
    ranges: list[ParameterRange] = [
        KERNEL,
        IntegerRange("n", 1, 1000, LOG),
        IntegerRange("depth", 1, 5),
        ContinuousRange("lr", 1e-4, 1.0, LOG),
        ContinuousRange("m", 0.0, 0.99, REVERSE),
    ]
    assert distributions(ranges) == {
        "kernel": CategoricalDistribution(("rbf", "linear")),
        "n": IntDistribution(1, 1000, log=True),
        "depth": IntDistribution(1, 5),
        "lr": FloatDistribution(1e-4, 1.0, log=True),
        # u = 1 - x is sampled log-uniformly on [1 - max, 1 - min].
        "m": FloatDistribution(1.0 - 0.99, 1.0, log=True),
    }


def test_encode_writes_numbers_raw_and_categoricals_as_json() -> None:
    ranges: list[ParameterRange] = [
        IntegerRange("depth", 1, 10),
        ContinuousRange("alpha", 1e-6, 1.0),
        KERNEL,
    ]
    encoded = encode(ranges, {"alpha": 1e-05, "kernel": "rbf", "depth": 7})
    assert encoded == {"depth": "7", "alpha": "1e-05", "kernel": '"rbf"'}
    assert list(encoded) == ["depth", "alpha", "kernel"]  # the ranges' order
    # What the training toolkit's json.loads then gives the script (contract §1.5 step 3).
    assert {k: json.loads(v) for k, v in encoded.items()} == {
        "depth": 7,
        "alpha": 1e-05,
        "kernel": "rbf",
    }


def test_encode_maps_reverse_logarithmic_back_and_clamps() -> None:
    parameter = ContinuousRange("m", 0.5, 0.9, REVERSE)
    assert encode([parameter], {"m": 0.25}) == {"m": "0.75"}
    # 1 - u can land an ulp outside [min, max]; the job never sees that.
    assert encode([parameter], {"m": 0.1 + 1e-17}) == {"m": "0.9"}
    assert encode([parameter], {"m": 0.5000000000000001}) == {"m": "0.5"}


def test_decode_inverts_encode() -> None:
    ranges: list[ParameterRange] = [
        IntegerRange("depth", 1, 10),
        ContinuousRange("lr", 1e-4, 1.0, LOG),
        ContinuousRange("m", 0.0, 0.99, REVERSE),
        KERNEL,
    ]
    params = {"depth": 3, "lr": 0.0123, "m": 0.05, "kernel": "linear"}
    encoded = encode(ranges, params)
    decoded = decode(ranges, {**encoded, "static": '"ignored"'})
    assert decoded["depth"] == 3
    assert decoded["lr"] == 0.0123
    assert decoded["kernel"] == "linear"
    assert decoded["m"] == pytest.approx(0.05, abs=1e-15)
    assert distributions(ranges)["m"]._contains(decoded["m"])
    assert decode_hyperparameters(ranges, encoded) == {
        "depth": 3,
        "lr": 0.0123,
        "m": 0.95,
        "kernel": "linear",
    }


def test_decode_accepts_a_bare_categorical_string() -> None:
    assert decode_hyperparameters([KERNEL], {"kernel": "rbf"}) == {"kernel": "rbf"}


@pytest.mark.parametrize(
    ("parameter", "text", "message"),
    [
        (IntegerRange("depth", 1, 10), "7.5", "not an integer"),
        (IntegerRange("depth", 1, 10), "11", "outside"),
        (ContinuousRange("lr", 0.1, 1.0), "abc", "not a number"),
        (ContinuousRange("lr", 0.1, 1.0), "0.01", "outside"),
        (ContinuousRange("lr", 0.1, 1.0), "nan", "outside"),
        (KERNEL, '"poly"', "not one of"),
    ],
)
def test_decode_rejects_values_outside_the_range(
    parameter: ParameterRange, text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decode([parameter], {parameter.name: text})


def test_decode_needs_every_tuned_name() -> None:
    with pytest.raises(ValueError, match="no value for tuned hyperparameter 'kernel'"):
        decode([KERNEL], {"depth": "3"})


def test_grid_is_every_categorical_and_integer_value() -> None:
    ranges: list[ParameterRange] = [KERNEL, IntegerRange("depth", 2, 4, LOG)]
    assert grid_size(ranges) == 6
    assert grid_search_space(ranges) == {"kernel": ["rbf", "linear"], "depth": [2, 3, 4]}
    assert TuningStrategy("Grid") is TuningStrategy.GRID
