"""How a tuning job searches: strategy, objective, job budget, early stopping, seed, Hyperband.

`TuningConfig` mirrors SageMaker's HyperParameterTuningJobConfig without the ranges (those are
`services.control.tuning.space`). `validate()` applies SageMaker's rules, with skmaker's
choices for the cases SageMaker leaves open (see the attributes).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from services.control.tuning.space import (
    MAX_TRAINING_JOBS,
    ParameterRange,
    TuningStrategy,
    grid_size,
)

_MAX_SEED = 2**32  # numpy's RandomState, under every Optuna sampler, takes seeds below 2**32


class ObjectiveType(enum.StrEnum):
    """Whether the objective metric is to be maximized or minimized."""

    MAXIMIZE = "Maximize"
    MINIMIZE = "Minimize"


class EarlyStoppingType(enum.StrEnum):
    """SageMaker's TrainingJobEarlyStoppingType."""

    OFF = "Off"
    AUTO = "Auto"


@dataclass(frozen=True)
class TuningConfig:
    """How a tuning job searches (SageMaker's HyperParameterTuningJobConfig, minus the ranges).

    Attributes:
        strategy: Bayesian (default), Random, Grid or Hyperband.
        objective_type: Maximize (default) or Minimize the objective metric.
        max_jobs: Trials to run in total; None means 1 (SageMaker's default). Ignored for Grid,
            which runs every combination once (SageMaker refuses the field for Grid; skmaker
            accepts it and overrides it with the number of combinations).
        max_parallel_jobs: Trials running at once.
        early_stopping: Off, or Auto for the median rule (must be Off for Hyperband).
        random_seed: Makes the sequence of trials reproducible; None draws fresh entropy
            (Grid then uses seed 0, so that its order survives a restart).
        hyperband_min_resource: Steps every Hyperband trial gets before it can be stopped.
        hyperband_max_resource: Steps of a full trial; None lets Optuna take the step count of
            the first completed trial (SageMaker infers it from an `epochs` hyperparameter).
        hyperband_reduction_factor: Hyperband keeps 1/factor of the trials at each rung.
    """

    strategy: TuningStrategy = TuningStrategy.BAYESIAN
    objective_type: ObjectiveType = ObjectiveType.MAXIMIZE
    max_jobs: int | None = None
    max_parallel_jobs: int = 1
    early_stopping: EarlyStoppingType = EarlyStoppingType.OFF
    random_seed: int | None = None
    hyperband_min_resource: int = 1
    hyperband_max_resource: int | None = None
    hyperband_reduction_factor: int = 3

    def validate(self) -> None:
        """Raises ValueError naming the first rule the config breaks."""
        strategy = _enum(TuningStrategy, self.strategy, "strategy")
        _enum(ObjectiveType, self.objective_type, "objective_type")
        early_stopping = _enum(EarlyStoppingType, self.early_stopping, "early_stopping")
        if self.max_jobs is not None and not 1 <= _int(self.max_jobs, "max_jobs") <= (
            MAX_TRAINING_JOBS
        ):
            raise ValueError(f"max_jobs must be within 1..{MAX_TRAINING_JOBS}, got {self.max_jobs}")
        if _int(self.max_parallel_jobs, "max_parallel_jobs") < 1:
            raise ValueError(f"max_parallel_jobs must be at least 1, got {self.max_parallel_jobs}")
        if self.random_seed is not None and not 0 <= _int(self.random_seed, "random_seed") < (
            _MAX_SEED
        ):
            raise ValueError(f"random_seed must be within 0..2**32-1, got {self.random_seed}")
        if strategy is not TuningStrategy.HYPERBAND:
            return
        if early_stopping is not EarlyStoppingType.OFF:
            raise ValueError("early_stopping must be Off with the Hyperband strategy")
        if _int(self.hyperband_min_resource, "hyperband_min_resource") < 1:
            raise ValueError(
                f"hyperband_min_resource must be at least 1, got {self.hyperband_min_resource}"
            )
        max_resource = self.hyperband_max_resource
        if max_resource is not None and _int(max_resource, "hyperband_max_resource") <= (
            self.hyperband_min_resource
        ):
            raise ValueError(
                f"hyperband_max_resource ({max_resource}) must exceed "
                f"hyperband_min_resource ({self.hyperband_min_resource})"
            )
        if _int(self.hyperband_reduction_factor, "hyperband_reduction_factor") < 2:
            raise ValueError(
                "hyperband_reduction_factor must be at least 2, "
                f"got {self.hyperband_reduction_factor}"
            )

    def resolved_max_jobs(self, ranges: Sequence[ParameterRange]) -> int:
        """Trials the tuning job runs in total: the grid's size for Grid, else max_jobs or 1."""
        if self.strategy == TuningStrategy.GRID:
            return grid_size(ranges)
        return self.max_jobs if self.max_jobs is not None else 1


_E = TypeVar("_E", bound=enum.StrEnum)


def _enum(kind: type[_E], value: str, name: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}") from None


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value
