"""The tuner of one tuning job: SageMaker's tuning semantics on Optuna's ask-and-tell interface.

A `Tuner` owns an in-memory `optuna.Study`. The control asks it for a trial's hyperparameters,
launches a training job with them, feeds back the objective metric's intermediate values (to
stop weak trials early) and the final value, and asks again while `remaining_to_launch()` says
so. The study is never the source of truth: the control persists every trial, and after a
restart `Tuner.rebuild` replays them into a fresh study.

Strategies: Bayesian is Optuna's TPESampler, Random its RandomSampler, Grid its GridSampler
over every combination (the seed fixes the order), Hyperband TPE with Optuna's HyperbandPruner.

Trial numbers are skmaker's, not Optuna's: 1, 2, 3... in the order trials are asked, as in
SageMaker's training-job names (`<tuning-job>-001-...`). Warm-start parents enter the study
first and so shift Optuna's numbering; the tuner keeps the mapping (skmaker number n is Optuna
trial `warm_start_used + n - 1`) and rebuilds the study so that every trial gets back its
Optuna number. That matters beyond bookkeeping: GridSampler assigns grid cell k to Optuna trial
k, and HyperbandPruner puts a trial in a bracket by hashing the study name and trial number.

Intermediate values use steps 1, 2, 3... : step n is the n-th value of the objective metric in
the job's log, i.e. the resource (epochs, iterations) used so far, which is what Hyperband's
min and max resource count.

Early stopping `Auto` is SageMaker's median rule: a trial stops when its objective at step t is
worse than the median of the running averages of earlier completed trials up to step t. It is
Optuna's MedianPruner fed running averages: the tuner reports to Optuna the mean of a trial's
values up to each step, so the median Optuna takes over completed trials is a median of
running averages. Optuna compares it with the trial's best running average so far (SageMaker
with the current value), which is a little more lenient with a trial that was once good.
Pruning waits for EARLY_STOPPING_MIN_TRIALS completed trials with a value at that step and
for EARLY_STOPPING_WARMUP_STEPS values of the trial itself.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaTrialState

from services.control.tuning.config import EarlyStoppingType, ObjectiveType, TuningConfig
from services.control.tuning.space import (
    ParameterRange,
    TuningStrategy,
    decode,
    distributions,
    encode,
    grid_search_space,
    validate_ranges,
)

# Fixed so that Hyperband's bracket of a trial (a hash of study name and trial number) is the
# same in every run with the same seed and after a rebuild.
STUDY_NAME = "skmaker-tuning"
EARLY_STOPPING_MIN_TRIALS = 3
EARLY_STOPPING_WARMUP_STEPS = 2


class TrialState(enum.StrEnum):
    """Where a trial stands, spelled as the status of its training job in SageMaker."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    # Stopped by the tuner (early stopping or Hyperband): Optuna's PRUNED.
    STOPPED_EARLY = "Stopped"


@dataclass(frozen=True)
class TrialAssignment:
    """A trial to launch: its number and the tuned hyperparameters, encoded for the job.

    `hyperparameters_encoded` holds only the tuned names; the control merges it over the
    estimator's encoded static hyperparameters.
    """

    number: int
    hyperparameters_encoded: Mapping[str, str]


@dataclass(frozen=True)
class StoredTrial:
    """A trial as the control persisted it, for `Tuner.rebuild`.

    Attributes:
        number: The trial's number (1, 2, ...).
        hyperparameters_encoded: The encoded values it ran with; extra (static) keys are ignored.
        state: InProgress for a trial still running, else how it ended.
        objective_value: The final objective of a Completed trial (ignored otherwise).
        intermediate_values: The raw objective values the job logged, by step (1, 2, ...).
    """

    number: int
    hyperparameters_encoded: Mapping[str, str]
    state: TrialState = TrialState.IN_PROGRESS
    objective_value: float | None = None
    intermediate_values: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class WarmStartTrial:
    """A completed trial of a parent tuning job, with its encoded values and final objective."""

    hyperparameters_encoded: Mapping[str, str]
    objective_value: float


@dataclass(frozen=True)
class BestTrial:
    """The best completed trial so far."""

    number: int
    objective_value: float
    hyperparameters_encoded: Mapping[str, str]


@dataclass(frozen=True)
class TrialCounts:
    """Trials by state (SageMaker's TrainingJobStatusCounters; failures are non-retryable)."""

    in_progress: int
    completed: int
    failed: int
    stopped_early: int


@dataclass
class _Trial:
    """The tuner's own record of one of its trials."""

    hyperparameters_encoded: dict[str, str]
    optuna_trial: optuna.Trial | None  # None once finished: Optuna holds the frozen trial
    state: TrialState = TrialState.IN_PROGRESS
    objective_value: float | None = None
    curve: dict[int, float] = field(default_factory=dict)  # raw values by step
    stop_requested: bool = False


class Tuner:
    """Hands out hyperparameters for a tuning job's trials and learns from their results.

    Build one with `create` (a new tuning job) or `rebuild` (after a control restart). All
    methods may be called from several threads: a lock serializes them.
    """

    def __init__(
        self,
        config: TuningConfig,
        ranges: Sequence[ParameterRange],
        warm_start_trials: Sequence[WarmStartTrial] = (),
        *,
        restored_trials: int = 0,
    ) -> None:
        """Prefer `create` and `rebuild`; `restored_trials` reseeds a rebuilt sampler."""
        config.validate()
        validate_ranges(ranges, config.strategy)
        self._config = config
        self._ranges = tuple(ranges)
        self._strategy = TuningStrategy(config.strategy)
        self._max_jobs = config.resolved_max_jobs(self._ranges)
        if self._strategy is TuningStrategy.GRID and warm_start_trials:
            raise ValueError("Grid search runs every combination; it takes no warm start")
        self._distributions = distributions(self._ranges)
        self._median_rule = EarlyStoppingType(config.early_stopping) is EarlyStoppingType.AUTO
        self._study = optuna.create_study(
            study_name=STUDY_NAME,
            direction=_DIRECTIONS[ObjectiveType(config.objective_type)],
            sampler=self._sampler(restored_trials),
            pruner=self._pruner(),
        )
        self._warm_start_used = self._seed_with(warm_start_trials)
        self._trials: dict[int, _Trial] = {}
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls,
        config: TuningConfig,
        ranges: Sequence[ParameterRange],
        warm_start_trials: Sequence[WarmStartTrial] = (),
    ) -> Tuner:
        """A tuner for a new tuning job, optionally warm-started from parent tuning jobs.

        Warm start, IdenticalDataAndAlgorithm or TransferLearning alike, adds the parents'
        completed trials to the study as completed trials, so the sampler starts from what
        they learned. A parent trial whose values fall outside the current ranges (allowed by
        TransferLearning) is skipped. The difference skmaker drops: SageMaker reports an
        overall best across parents for IdenticalDataAndAlgorithm; here parents never count
        towards max_jobs, the counts or `best()`.

        Raises:
            ValueError: the config or the ranges break a rule, or warm start with Grid.
        """
        return cls(config, ranges, warm_start_trials)

    @classmethod
    def rebuild(
        cls,
        config: TuningConfig,
        ranges: Sequence[ParameterRange],
        finished_trials: Sequence[StoredTrial],
        running_trials: Sequence[StoredTrial],
        warm_start_trials: Sequence[WarmStartTrial] = (),
    ) -> Tuner:
        """The tuner of a tuning job that was under way when the control stopped.

        The study is rebuilt in trial order, so every trial gets back its Optuna number: the
        warm-start parents first (the same ones as at creation), then each stored trial. A
        finished trial is added as a frozen trial with its state, value and intermediate
        values; a running one is enqueued with its values and asked again, so it is a live
        Optuna trial under its old number that can report and be told. The sampler thus
        continues from the same knowledge; it is reseeded from (seed, trials so far), so a
        seeded Random or TPE run does not replay its first samples (Grid keeps its order).
        Trials count once each, and no more than max_jobs are launched in total.

        Args:
            config: The tuning job's config, as at creation.
            ranges: Its ranges, as at creation.
            finished_trials: Its trials that ended (state not InProgress).
            running_trials: Its trials still running (state InProgress).
            warm_start_trials: The parents' trials given at creation.

        Raises:
            ValueError: the numbers are not exactly 1..n, a state is misplaced, more trials
                than max_jobs, or a stored trial does not fit the ranges.
        """
        if any(trial.state == TrialState.IN_PROGRESS for trial in finished_trials):
            raise ValueError("a finished trial cannot be InProgress")
        if any(trial.state != TrialState.IN_PROGRESS for trial in running_trials):
            raise ValueError("a running trial must be InProgress")
        stored = sorted([*finished_trials, *running_trials], key=lambda trial: trial.number)
        numbers = [trial.number for trial in stored]
        if numbers != list(range(1, len(stored) + 1)):
            raise ValueError(f"stored trial numbers must be 1..n, each once; got {numbers}")
        tuner = cls(config, ranges, warm_start_trials, restored_trials=len(stored))
        if len(stored) > tuner.max_jobs:
            raise ValueError(f"{len(stored)} stored trials exceed max_jobs={tuner.max_jobs}")
        for trial in stored:
            tuner._restore(trial)
        return tuner

    @property
    def config(self) -> TuningConfig:
        """The config the tuner was built with."""
        return self._config

    @property
    def ranges(self) -> tuple[ParameterRange, ...]:
        """The ranges searched, in the order of the encoded hyperparameters."""
        return self._ranges

    @property
    def max_jobs(self) -> int:
        """Trials to run in total (for Grid, the number of combinations)."""
        return self._max_jobs

    @property
    def warm_start_used(self) -> int:
        """How many warm-start trials fit the ranges and seeded the study."""
        return self._warm_start_used

    @property
    def launched(self) -> int:
        """Trials asked so far, finished or not."""
        with self._lock:
            return len(self._trials)

    @property
    def running_numbers(self) -> tuple[int, ...]:
        """Numbers of the trials not yet told, in order."""
        with self._lock:
            return tuple(n for n, t in self._trials.items() if t.state is TrialState.IN_PROGRESS)

    def counts(self) -> TrialCounts:
        """How many trials are in each state."""
        with self._lock:
            states = [trial.state for trial in self._trials.values()]
        return TrialCounts(
            in_progress=states.count(TrialState.IN_PROGRESS),
            completed=states.count(TrialState.COMPLETED),
            failed=states.count(TrialState.FAILED),
            stopped_early=states.count(TrialState.STOPPED_EARLY),
        )

    def remaining_to_launch(self, running: int | None = None) -> int:
        """How many trials may be launched now, honouring max_jobs and max_parallel_jobs.

        Args:
            running: Training jobs of this tuning job occupying a slot, including the ones
                being stopped after `report_intermediate` said so; defaults to the trials not
                yet told.
        """
        with self._lock:
            if running is None:
                running = sum(t.state is TrialState.IN_PROGRESS for t in self._trials.values())
            left = self._max_jobs - len(self._trials)
            return max(0, min(left, self._config.max_parallel_jobs - running))

    def is_finished(self) -> bool:
        """True once max_jobs trials have been launched and all of them told."""
        with self._lock:
            return len(self._trials) >= self._max_jobs and all(
                t.state is not TrialState.IN_PROGRESS for t in self._trials.values()
            )

    def ask(self) -> TrialAssignment:
        """Samples the next trial's hyperparameters.

        Raises:
            RuntimeError: max_jobs trials have been launched already.
        """
        with self._lock:
            if len(self._trials) >= self._max_jobs:
                raise RuntimeError(f"all {self._max_jobs} trials have been launched")
            optuna_trial = self._study.ask(self._distributions)
            encoded = encode(self._ranges, optuna_trial.params)
            number = len(self._trials) + 1
            self._trials[number] = _Trial(encoded, optuna_trial)
            return TrialAssignment(number, dict(encoded))

    def report_intermediate(self, number: int, step: int, value: float) -> bool:
        """Records the objective's value at `step` and says whether the trial should stop.

        Once True, the answer stays True: the control stops the training job and then calls
        `tell_stopped_early`. A trial already told also answers True (log lines can arrive
        after the verdict). A step not above the trial's last one (a retried job replaying
        its log) and a non-finite value are ignored.

        Raises:
            ValueError: unknown trial, or step < 1.
        """
        with self._lock:
            trial = self._trial(number)
            if step < 1:
                raise ValueError(f"steps count from 1, got {step}")
            if trial.optuna_trial is None or trial.stop_requested:
                return True
            if not math.isfinite(value) or (trial.curve and step <= max(trial.curve)):
                return False
            trial.curve[step] = value
            trial.optuna_trial.report(self._as_reported(trial.curve)[step], step)
            trial.stop_requested = bool(trial.optuna_trial.should_prune())  # numpy bool
            return trial.stop_requested

    def tell_completed(self, number: int, objective_value: float) -> TrialState:
        """Records a trial's final objective value.

        Returns:
            COMPLETED, or FAILED when the value is not finite (it cannot be ranked).

        Raises:
            ValueError: unknown trial, or already told.
        """
        if not math.isfinite(objective_value):
            self._tell(number, TrialState.FAILED)
            return TrialState.FAILED
        self._tell(number, TrialState.COMPLETED, objective_value)
        return TrialState.COMPLETED

    def tell_failed(self, number: int) -> None:
        """Records that a trial failed (after its retries): it has no objective value.

        Raises:
            ValueError: unknown trial, or already told.
        """
        self._tell(number, TrialState.FAILED)

    def tell_stopped_early(self, number: int) -> None:
        """Records that a trial was stopped before the end (Optuna's PRUNED).

        Optuna keeps its last reported value. A trial a user stopped is told the same way.

        Raises:
            ValueError: unknown trial, or already told.
        """
        self._tell(number, TrialState.STOPPED_EARLY)

    def best(self) -> BestTrial | None:
        """The best completed trial for the objective type (the earliest on a tie), if any."""
        sign = 1.0 if self._config.objective_type == ObjectiveType.MAXIMIZE else -1.0
        with self._lock:
            completed = [
                (trial.objective_value, number, trial.hyperparameters_encoded)
                for number, trial in self._trials.items()
                if trial.state is TrialState.COMPLETED and trial.objective_value is not None
            ]
        if not completed:
            return None
        value, number, encoded = max(completed, key=lambda c: (sign * c[0], -c[1]))
        return BestTrial(number, value, dict(encoded))

    def _trial(self, number: int) -> _Trial:
        try:
            return self._trials[number]
        except KeyError:
            raise ValueError(f"tuning job has no trial {number}") from None

    def _tell(self, number: int, state: TrialState, value: float | None = None) -> None:
        with self._lock:
            trial = self._trial(number)
            if trial.optuna_trial is None:
                raise ValueError(f"trial {number} was already told: {trial.state}")
            if state is TrialState.COMPLETED:
                self._study.tell(trial.optuna_trial, value)
            else:
                self._study.tell(trial.optuna_trial, state=_OPTUNA_STATES[state])
            trial.optuna_trial = None
            trial.state = state
            trial.objective_value = value

    def _as_reported(self, curve: Mapping[int, float]) -> dict[int, float]:
        """The values Optuna sees for a raw curve: running averages under the median rule."""
        steps = sorted(step for step, value in curve.items() if math.isfinite(value))
        if not self._median_rule:
            return {step: curve[step] for step in steps}
        sums = np.cumsum([curve[step] for step in steps])
        return {step: float(sums[i] / (i + 1)) for i, step in enumerate(steps)}

    def _restore(self, stored: StoredTrial) -> None:
        state = TrialState(stored.state)
        params = decode(self._ranges, stored.hyperparameters_encoded)
        encoded = {p.name: stored.hyperparameters_encoded[p.name] for p in self._ranges}
        if any(not isinstance(step, int) or step < 1 for step in stored.intermediate_values):
            raise ValueError(f"trial {stored.number}: steps count from 1")
        curve = {s: v for s, v in stored.intermediate_values.items() if math.isfinite(v)}
        reported = self._as_reported(curve)
        record = _Trial(encoded, None, state, None, curve)
        if state is TrialState.IN_PROGRESS:
            # All values fixed: the sampler is not consulted, the re-asked trial is the same point.
            self._study.enqueue_trial(params)
            record.optuna_trial = self._study.ask(self._distributions)
            for step, value in reported.items():
                record.optuna_trial.report(value, step)
            optuna_number = record.optuna_trial.number
        else:
            final = self._final_value(stored.number, state, stored.objective_value, reported)
            self._study.add_trial(
                optuna.trial.create_trial(
                    state=_OPTUNA_STATES[state],
                    value=final,
                    params=params,
                    distributions=self._distributions,
                    intermediate_values=reported,
                )
            )
            optuna_number = len(self._study.get_trials(deepcopy=False)) - 1
            if state is TrialState.COMPLETED:
                record.objective_value = final
        if optuna_number != self._warm_start_used + stored.number - 1:
            raise RuntimeError(f"trial {stored.number} came back as Optuna trial {optuna_number}")
        self._trials[stored.number] = record

    @staticmethod
    def _final_value(
        number: int, state: TrialState, objective: float | None, reported: Mapping[int, float]
    ) -> float | None:
        """The value Optuna held for a finished trial when it was told."""
        if state is TrialState.COMPLETED:
            if objective is None or not math.isfinite(objective):
                raise ValueError(f"completed trial {number} needs a finite objective")
            return objective
        if state is TrialState.STOPPED_EARLY and reported:
            return reported[max(reported)]  # what `study.tell(state=PRUNED)` keeps
        return None

    def _seed_with(self, warm_start_trials: Sequence[WarmStartTrial]) -> int:
        frozen: list[FrozenTrial] = []
        for parent in warm_start_trials:
            if not math.isfinite(parent.objective_value):
                continue
            try:
                params = decode(self._ranges, parent.hyperparameters_encoded)
            except ValueError:
                continue  # outside today's ranges: says nothing about this search space
            frozen.append(
                optuna.trial.create_trial(
                    params=params,
                    distributions=self._distributions,
                    value=parent.objective_value,
                )
            )
        self._study.add_trials(frozen)
        return len(frozen)

    def _sampler(self, restored_trials: int) -> BaseSampler:
        seed = self._config.random_seed
        if self._strategy is TuningStrategy.GRID:
            # The order must survive a rebuild: grid cell k goes to Optuna trial k.
            return _AskAndTellGridSampler(grid_search_space(self._ranges), seed=seed or 0)
        if seed is not None and restored_trials:
            seed = int(np.random.SeedSequence([seed, restored_trials]).generate_state(1)[0])
        if self._strategy is TuningStrategy.RANDOM:
            return RandomSampler(seed=seed)
        return TPESampler(seed=seed)

    def _pruner(self) -> BasePruner:
        config = self._config
        if self._strategy is TuningStrategy.HYPERBAND:
            return HyperbandPruner(
                min_resource=config.hyperband_min_resource,
                max_resource=config.hyperband_max_resource or "auto",
                reduction_factor=config.hyperband_reduction_factor,
            )
        if self._median_rule:
            return MedianPruner(
                n_startup_trials=EARLY_STOPPING_MIN_TRIALS,
                n_warmup_steps=EARLY_STOPPING_WARMUP_STEPS,
                n_min_trials=EARLY_STOPPING_MIN_TRIALS,
            )
        return NopPruner()


class _AskAndTellGridSampler(GridSampler):
    """Optuna's GridSampler without its stop at the end of the grid.

    GridSampler calls `study.stop()` after the last cell, which only works inside
    `study.optimize` and raises RuntimeError under ask-and-tell (optuna#4121). The tuner
    stops by itself: a Grid's max_jobs is the number of cells.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: OptunaTrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Does nothing: see the class docstring."""


_DIRECTIONS = {
    ObjectiveType.MAXIMIZE: StudyDirection.MAXIMIZE,
    ObjectiveType.MINIMIZE: StudyDirection.MINIMIZE,
}
_OPTUNA_STATES = {
    TrialState.COMPLETED: OptunaTrialState.COMPLETE,
    TrialState.FAILED: OptunaTrialState.FAIL,
    TrialState.STOPPED_EARLY: OptunaTrialState.PRUNED,
}
