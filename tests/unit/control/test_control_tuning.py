"""The tuner: strategies, scaling, reproducibility, early stopping, Hyperband, budget, rebuild."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest

from services.control.tuning.config import EarlyStoppingType, ObjectiveType, TuningConfig
from services.control.tuning.space import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    ParameterRange,
    ScalingType,
    TuningStrategy,
    decode_hyperparameters,
)
from services.control.tuning.tuner import (
    StoredTrial,
    TrialCounts,
    TrialState,
    Tuner,
    WarmStartTrial,
)

BAYESIAN = TuningStrategy.BAYESIAN
RANDOM = TuningStrategy.RANDOM
GRID = TuningStrategy.GRID
HYPERBAND = TuningStrategy.HYPERBAND
MINIMIZE = ObjectiveType.MINIMIZE
AUTO = EarlyStoppingType.AUTO

SVC_RANGES: tuple[ParameterRange, ...] = (
    CategoricalRange("kernel", ("rbf", "linear", "poly")),
    IntegerRange("degree", 2, 5),
    IntegerRange("n_estimators", 1, 10_000, ScalingType.LOGARITHMIC),
    ContinuousRange("C", 1e-4, 1.0, ScalingType.LOGARITHMIC),
    ContinuousRange("momentum", 0.0, 0.999, ScalingType.REVERSE_LOGARITHMIC),
    ContinuousRange("shift", -1.0, 1.0, ScalingType.LINEAR),
)
XY = (ContinuousRange("x", -2.0, 2.0), ContinuousRange("y", -2.0, 2.0))
Objective = Callable[[Mapping[str, int | float | str]], float]


@pytest.fixture(autouse=True)
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO; the tests need none of it."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


def values(tuner: Tuner, encoded: Mapping[str, str]) -> dict[str, int | float | str]:
    return decode_hyperparameters(tuner.ranges, encoded)


def run(tuner: Tuner, objective: Objective) -> list[dict[str, int | float | str]]:
    """Asks, evaluates and tells one trial at a time until the tuner is done."""
    asked = []
    while tuner.remaining_to_launch():
        assignment = tuner.ask()
        point = values(tuner, assignment.hyperparameters_encoded)
        asked.append(point)
        tuner.tell_completed(assignment.number, objective(point))
    assert tuner.is_finished()
    return asked


def quadratic(point: Mapping[str, int | float | str]) -> float:
    x, y = float(point["x"]), float(point["y"])
    return -((x - 0.7) ** 2) - (y + 1.1) ** 2


def curve(quality: float, steps: int) -> list[float]:
    """A learning curve rising towards `quality`."""
    return [quality * (1 - 0.5 ** (step + 1)) for step in range(steps)]


# --- Grid ---------------------------------------------------------------------------------


def test_grid_runs_every_combination_once_then_finishes() -> None:
    ranges = (CategoricalRange("kernel", ("rbf", "linear")), IntegerRange("depth", 1, 3))
    tuner = Tuner.create(TuningConfig(strategy=GRID, max_jobs=2, random_seed=7), ranges)
    assert tuner.max_jobs == 6  # the grid's size overrides the explicit max_jobs
    seen = run(tuner, lambda point: 1.0)
    assert sorted((p["kernel"], p["depth"]) for p in seen) == sorted(
        (k, d) for k in ("rbf", "linear") for d in (1, 2, 3)
    )
    assert tuner.remaining_to_launch() == 0
    with pytest.raises(RuntimeError, match="all 6 trials have been launched"):
        tuner.ask()


def test_grid_order_depends_on_the_seed_only() -> None:
    ranges = (CategoricalRange("kernel", ("rbf", "linear", "poly")), IntegerRange("d", 1, 4))

    def order(seed: int) -> list[dict[str, int | float | str]]:
        return run(Tuner.create(TuningConfig(strategy=GRID, random_seed=seed), ranges), len)

    assert order(3) == order(3)
    assert order(3) != order(4)


# --- sampling inside the ranges, with the scaling ------------------------------------------


@pytest.mark.parametrize("strategy", [RANDOM, BAYESIAN])
def test_samples_stay_inside_the_ranges(strategy: TuningStrategy) -> None:
    tuner = Tuner.create(TuningConfig(strategy=strategy, max_jobs=40, random_seed=1), SVC_RANGES)
    for point in run(tuner, lambda point: float(point["shift"])):
        assert point["kernel"] in ("rbf", "linear", "poly")
        assert isinstance(point["degree"], int) and 2 <= point["degree"] <= 5
        assert isinstance(point["n_estimators"], int) and 1 <= point["n_estimators"] <= 10_000
        assert 1e-4 <= float(point["C"]) <= 1.0
        assert 0.0 <= float(point["momentum"]) <= 0.999
        assert -1.0 <= float(point["shift"]) <= 1.0


def fraction(samples: Sequence[int | float | str], below: float) -> float:
    return sum(float(sample) < below for sample in samples) / len(samples)


def test_random_logarithmic_samples_spread_in_log_space() -> None:
    tuner = Tuner.create(TuningConfig(strategy=RANDOM, max_jobs=200, random_seed=2), SVC_RANGES)
    seen = run(tuner, lambda point: 0.0)
    # Half the samples fall below the geometric midpoint (uniform on [min, max]: ~1 %).
    assert 0.4 <= fraction([p["C"] for p in seen], below=1e-2) <= 0.6
    assert 0.4 <= fraction([p["n_estimators"] for p in seen], below=100) <= 0.6
    assert 0.4 <= fraction([p["shift"] for p in seen], below=0.0) <= 0.6  # Linear


def test_bayesian_searches_logarithmic_ranges_in_log_space() -> None:
    # TPE follows the objective, not a uniform law; but in log space it finds an optimum at
    # 1e-3 of [1e-4, 1], a point that linear sampling hits one time in a thousand.
    parameter = ContinuousRange("C", 1e-4, 1.0, ScalingType.LOGARITHMIC)
    tuner = Tuner.create(TuningConfig(strategy=BAYESIAN, max_jobs=40, random_seed=2), [parameter])
    seen = run(tuner, lambda point: -((math.log10(float(point["C"])) + 3) ** 2))
    assert fraction([p["C"] for p in seen], below=1e-2) >= 0.5
    best = tuner.best()
    assert best is not None and 5e-4 <= float(best.hyperparameters_encoded["C"]) <= 2e-3


def test_reverse_logarithmic_samples_crowd_near_one() -> None:
    tuner = Tuner.create(TuningConfig(strategy=RANDOM, max_jobs=200, random_seed=3), SVC_RANGES)
    momentum = [p["momentum"] for p in run(tuner, lambda point: 0.0)]
    # 1 - x is log-uniform on [0.001, 1]: two thirds above 0.9, half above 1 - sqrt(0.001).
    assert 0.55 <= 1 - fraction(momentum, below=0.9) <= 0.78
    assert 0.38 <= 1 - fraction(momentum, below=1 - math.sqrt(0.001)) <= 0.62


# --- reproducibility ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [RANDOM, BAYESIAN])
def test_the_same_seed_gives_the_same_sequence(strategy: TuningStrategy) -> None:
    def sequence(seed: int) -> list[Mapping[str, str]]:
        tuner = Tuner.create(
            TuningConfig(strategy=strategy, max_jobs=20, max_parallel_jobs=2, random_seed=seed),
            SVC_RANGES,
        )
        asked = []
        while tuner.remaining_to_launch():  # two at a time, told in order
            batch = [tuner.ask() for _ in range(tuner.remaining_to_launch())]
            for assignment in batch:
                asked.append(assignment.hyperparameters_encoded)
                point = values(tuner, assignment.hyperparameters_encoded)
                tuner.tell_completed(assignment.number, float(point["C"]) - float(point["shift"]))
        return asked

    assert sequence(11) == sequence(11)
    assert sequence(11) != sequence(12)


# --- encoding, best, budget -----------------------------------------------------------------


def test_assignments_are_encoded_as_the_contract_says() -> None:
    tuner = Tuner.create(TuningConfig(strategy=RANDOM, max_jobs=5, random_seed=4), SVC_RANGES)
    for number in range(1, 6):
        assignment = tuner.ask()
        assert assignment.number == number
        encoded = assignment.hyperparameters_encoded
        assert list(encoded) == [p.name for p in SVC_RANGES]
        assert encoded["kernel"] in ('"rbf"', '"linear"', '"poly"')
        assert encoded["degree"] == str(int(encoded["degree"]))
        assert encoded["C"] == repr(float(encoded["C"]))


@pytest.mark.parametrize(("objective_type", "best_number"), [("Maximize", 2), ("Minimize", 3)])
def test_best_respects_the_objective_type(objective_type: ObjectiveType, best_number: int) -> None:
    tuner = Tuner.create(
        TuningConfig(objective_type=objective_type, max_jobs=6, max_parallel_jobs=6), XY
    )
    assert tuner.best() is None
    numbers = [tuner.ask().number for _ in range(6)]
    assert tuner.tell_completed(numbers[0], 0.5) is TrialState.COMPLETED
    tuner.tell_completed(numbers[1], 0.9)
    tuner.tell_completed(numbers[2], 0.1)
    tuner.tell_completed(numbers[3], 0.9)  # a tie goes to the earlier trial
    tuner.tell_failed(numbers[4])
    assert tuner.tell_completed(numbers[5], math.nan) is TrialState.FAILED
    best = tuner.best()
    assert best is not None and best.number == best_number
    assert best.objective_value == {2: 0.9, 3: 0.1}[best_number]
    assert set(best.hyperparameters_encoded) == {"x", "y"}
    assert tuner.counts() == TrialCounts(in_progress=0, completed=4, failed=2, stopped_early=0)


def test_max_jobs_and_max_parallel_jobs_bound_the_launches() -> None:
    tuner = Tuner.create(TuningConfig(max_jobs=5, max_parallel_jobs=2), XY)
    assert tuner.remaining_to_launch() == 2
    first, second = tuner.ask(), tuner.ask()
    assert tuner.remaining_to_launch() == 0
    tuner.tell_completed(first.number, 1.0)
    assert tuner.remaining_to_launch() == 1
    # A job being stopped still holds its slot: the control says how many are running.
    tuner.tell_stopped_early(second.number)
    assert tuner.remaining_to_launch() == 2
    assert tuner.remaining_to_launch(running=1) == 1
    third, fourth = tuner.ask(), tuner.ask()
    tuner.tell_failed(third.number)
    tuner.tell_completed(fourth.number, 2.0)
    assert tuner.remaining_to_launch() == 1  # max_jobs leaves one
    fifth = tuner.ask()
    assert tuner.remaining_to_launch() == 0 and not tuner.is_finished()
    with pytest.raises(RuntimeError):
        tuner.ask()
    tuner.tell_completed(fifth.number, 0.0)
    assert tuner.is_finished() and tuner.launched == 5
    assert tuner.counts() == TrialCounts(in_progress=0, completed=3, failed=1, stopped_early=1)


def test_a_trial_is_told_once() -> None:
    tuner = Tuner.create(TuningConfig(max_jobs=2), XY)
    number = tuner.ask().number
    tuner.tell_completed(number, 1.0)
    with pytest.raises(ValueError, match="already told"):
        tuner.tell_failed(number)
    with pytest.raises(ValueError, match="no trial 9"):
        tuner.tell_completed(9, 1.0)
    with pytest.raises(ValueError, match="no trial 9"):
        tuner.report_intermediate(9, 1, 1.0)


# --- early stopping -------------------------------------------------------------------------


def tuner_with_completed(objective_type: ObjectiveType, qualities: Sequence[float]) -> Tuner:
    tuner = Tuner.create(
        TuningConfig(
            objective_type=objective_type, max_jobs=20, early_stopping=AUTO, random_seed=5
        ),
        XY,
    )
    for quality in qualities:
        number = tuner.ask().number
        for step, value in enumerate(curve(quality, 6), start=1):
            assert tuner.report_intermediate(number, step, value) is False
        tuner.tell_completed(number, quality)
    return tuner


def test_early_stopping_stops_a_trial_below_the_running_median() -> None:
    tuner = tuner_with_completed(ObjectiveType.MAXIMIZE, [0.8, 0.85, 0.9, 0.95])
    weak, strong = tuner.ask().number, tuner.ask().number
    # Step 1 is warm-up; from step 2 the weak trial is below the median of running averages.
    assert tuner.report_intermediate(weak, 1, 0.1) is False
    assert tuner.report_intermediate(strong, 1, 0.5) is False
    assert tuner.report_intermediate(weak, 2, 0.15) is True
    assert tuner.report_intermediate(strong, 2, 0.8) is False
    # The verdict sticks until the control tells the stop, and after.
    assert tuner.report_intermediate(weak, 3, 0.99) is True
    tuner.tell_stopped_early(weak)
    assert tuner.report_intermediate(weak, 4, 0.99) is True
    assert tuner.counts().stopped_early == 1


def test_early_stopping_minimize_stops_a_trial_above_the_median() -> None:
    tuner = tuner_with_completed(MINIMIZE, [0.1, 0.2, 0.3])
    weak = tuner.ask().number
    assert tuner.report_intermediate(weak, 1, 5.0) is False
    assert tuner.report_intermediate(weak, 2, 5.0) is True


def test_early_stopping_waits_for_enough_completed_trials() -> None:
    tuner = tuner_with_completed(ObjectiveType.MAXIMIZE, [0.8, 0.9])
    weak = tuner.ask().number
    assert not any(tuner.report_intermediate(weak, step, 0.0) for step in range(1, 7))


def test_early_stopping_compares_running_averages() -> None:
    tuner = tuner_with_completed(ObjectiveType.MAXIMIZE, [])
    for _ in range(3):
        number = tuner.ask().number
        for step in (1, 2, 3):
            tuner.report_intermediate(number, step, 0.5)
        tuner.tell_completed(number, 0.5)
    late, once_good = tuner.ask().number, tuner.ask().number
    # Raw 0.6 at step 2 is above the median (0.5), but the running average (0.35) is not.
    assert tuner.report_intermediate(late, 1, 0.1) is False
    assert tuner.report_intermediate(late, 2, 0.6) is True
    # 0.9, 0.1, 0.1 averages 0.37 at step 3, but Optuna weighs the trial's best running
    # average so far (0.9): a once-good trial keeps going.
    for step, value in [(1, 0.9), (2, 0.1), (3, 0.1)]:
        assert tuner.report_intermediate(once_good, step, value) is False


def test_replayed_and_non_finite_intermediate_values_are_ignored() -> None:
    tuner = tuner_with_completed(ObjectiveType.MAXIMIZE, [0.8, 0.85, 0.9])
    number = tuner.ask().number
    assert tuner.report_intermediate(number, 1, 0.8) is False
    assert tuner.report_intermediate(number, 2, 0.85) is False
    # A retried job logs its curve again from step 1: nothing changes.
    assert tuner.report_intermediate(number, 1, 0.0) is False
    assert tuner.report_intermediate(number, 2, math.nan) is False
    with pytest.raises(ValueError, match="steps count from 1"):
        tuner.report_intermediate(number, 0, 1.0)


def test_without_early_stopping_nothing_is_stopped() -> None:
    tuner = Tuner.create(TuningConfig(max_jobs=10), XY)
    for quality in (0.8, 0.9, 0.85, 0.95):
        number = tuner.ask().number
        for step, value in enumerate(curve(quality, 3), start=1):
            tuner.report_intermediate(number, step, value)
        tuner.tell_completed(number, quality)
    weak = tuner.ask().number
    assert not any(tuner.report_intermediate(weak, step, 0.0) for step in range(1, 4))


def test_hyperband_stops_weak_trials() -> None:
    config = TuningConfig(
        strategy=HYPERBAND,
        max_jobs=40,
        random_seed=6,
        hyperband_min_resource=1,
        hyperband_max_resource=9,
    )
    tuner = Tuner.create(config, (ContinuousRange("quality", 0.0, 1.0),))
    stopped, completed = [], []
    while tuner.remaining_to_launch():
        assignment = tuner.ask()
        quality = float(values(tuner, assignment.hyperparameters_encoded)["quality"])
        for step, value in enumerate(curve(quality, 9), start=1):
            if tuner.report_intermediate(assignment.number, step, value):
                tuner.tell_stopped_early(assignment.number)
                stopped.append(quality)
                break
        else:
            tuner.tell_completed(assignment.number, quality)
            completed.append(quality)
    assert len(stopped) >= 5
    assert statistics.mean(stopped) < statistics.mean(completed)
    assert tuner.counts().stopped_early == len(stopped)


# --- Bayesian beats Random ------------------------------------------------------------------


def test_bayesian_beats_random_on_a_quadratic() -> None:
    def best(strategy: TuningStrategy, seed: int) -> float:
        tuner = Tuner.create(TuningConfig(strategy=strategy, max_jobs=40, random_seed=seed), XY)
        run(tuner, quadratic)
        found = tuner.best()
        assert found is not None
        return found.objective_value

    seeds = range(5)
    bayesian = statistics.mean(best(BAYESIAN, seed) for seed in seeds)
    random = statistics.mean(best(RANDOM, seed) for seed in seeds)
    # Regret (distance of the best to the optimum, 0) at most half of Random's: about 0.014
    # against 0.08 with these seeds.
    assert -bayesian < -random / 2


# --- rebuild after a restart ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "early_stopping"),
    [(BAYESIAN, AUTO), (RANDOM, EarlyStoppingType.OFF), (HYPERBAND, EarlyStoppingType.OFF)],
)
def test_rebuild_continues_without_exceeding_max_jobs(
    strategy: TuningStrategy, early_stopping: EarlyStoppingType
) -> None:
    config = TuningConfig(
        strategy=strategy,
        max_jobs=12,
        max_parallel_jobs=2,
        early_stopping=early_stopping,
        random_seed=9,
    )
    before = Tuner.create(config, XY)
    finished: list[StoredTrial] = []
    raw_curve = {1: 0.2, 2: 0.4}
    for state in [TrialState.COMPLETED, TrialState.FAILED, TrialState.STOPPED_EARLY] * 2:
        assignment = before.ask()
        number = assignment.number
        for step, value in raw_curve.items():
            before.report_intermediate(number, step, value)
        objective = quadratic(values(before, assignment.hyperparameters_encoded))
        if state is TrialState.COMPLETED:
            before.tell_completed(number, objective)
        elif state is TrialState.FAILED:
            before.tell_failed(number)
        else:
            before.tell_stopped_early(number)
        # The control stores the job's whole hyperparameters, static ones included.
        hyperparameters = {**assignment.hyperparameters_encoded, "max_iter": "100"}
        finished.append(StoredTrial(number, hyperparameters, state, objective, raw_curve))
    running = [before.ask(), before.ask()]
    before.report_intermediate(running[0].number, 1, 0.3)

    # The control dies; a new one rebuilds from what it stored.
    still_running = [
        StoredTrial(
            running[0].number, running[0].hyperparameters_encoded, intermediate_values={1: 0.3}
        ),
        StoredTrial(running[1].number, running[1].hyperparameters_encoded),
    ]
    after = Tuner.rebuild(config, XY, finished, still_running)
    assert after.launched == 8 and after.running_numbers == (7, 8)
    assert after.best() == before.best()
    assert after.counts() == before.counts()
    assert after.remaining_to_launch() == 0
    with pytest.raises(ValueError, match="already told"):
        after.tell_completed(1, 0.0)

    after.report_intermediate(7, 2, 0.4)
    after.tell_completed(7, -1.0)
    after.tell_failed(8)
    later = run(after, quadratic)
    assert len(later) == 4  # 8 before the restart + 4 = max_jobs
    assert after.launched == 12 and after.is_finished()
    counts = after.counts()
    assert counts.completed + counts.failed + counts.stopped_early == 12
    # The reseeded sampler does not replay the samples the first run started with.
    first_points = [values(before, r.hyperparameters_encoded) for r in finished]
    assert not any(point in first_points for point in later)


def test_rebuild_of_a_grid_finishes_the_remaining_combinations() -> None:
    ranges = (CategoricalRange("kernel", ("rbf", "linear")), IntegerRange("depth", 1, 3))
    config = TuningConfig(strategy=GRID, max_parallel_jobs=2, random_seed=1)
    before = Tuner.create(config, ranges)
    done = [before.ask() for _ in range(3)]
    running = before.ask()
    for assignment in done:
        before.tell_completed(assignment.number, 1.0)
    after = Tuner.rebuild(
        config,
        ranges,
        [StoredTrial(a.number, a.hyperparameters_encoded, TrialState.COMPLETED, 1.0) for a in done],
        [StoredTrial(running.number, running.hyperparameters_encoded)],
    )
    after.tell_completed(running.number, 1.0)
    rest = run(after, lambda point: 1.0)
    combos = [values(after, a.hyperparameters_encoded) for a in [*done, running]] + rest
    assert len(rest) == 2
    assert sorted((c["kernel"], c["depth"]) for c in combos) == sorted(
        (k, d) for k in ("rbf", "linear") for d in (1, 2, 3)
    )


def test_rebuild_refuses_trials_it_cannot_count_once() -> None:
    config = TuningConfig(max_jobs=2)
    trial = StoredTrial(1, {"x": "0.5", "y": "0.5"}, TrialState.COMPLETED, 1.0)
    with pytest.raises(ValueError, match=r"1..n, each once"):
        Tuner.rebuild(config, XY, [trial, trial], [])
    with pytest.raises(ValueError, match=r"1..n, each once"):
        Tuner.rebuild(
            config, XY, [StoredTrial(2, trial.hyperparameters_encoded, TrialState.FAILED)], []
        )
    with pytest.raises(ValueError, match="exceed max_jobs"):
        Tuner.rebuild(
            config,
            XY,
            [StoredTrial(n, trial.hyperparameters_encoded, TrialState.FAILED) for n in (1, 2, 3)],
            [],
        )
    with pytest.raises(ValueError, match="cannot be InProgress"):
        Tuner.rebuild(config, XY, [StoredTrial(1, trial.hyperparameters_encoded)], [])
    with pytest.raises(ValueError, match="must be InProgress"):
        Tuner.rebuild(config, XY, [], [trial])
    with pytest.raises(ValueError, match="finite objective"):
        Tuner.rebuild(
            config, XY, [StoredTrial(1, trial.hyperparameters_encoded, TrialState.COMPLETED)], []
        )
    with pytest.raises(ValueError, match="outside"):
        Tuner.rebuild(config, XY, [], [StoredTrial(1, {"x": "3.0", "y": "0.0"})])


# --- warm start -----------------------------------------------------------------------------


def test_warm_start_seeds_the_sampler_but_not_the_budget() -> None:
    parents = [
        WarmStartTrial({"x": repr(x), "y": "-1.1"}, quadratic({"x": x, "y": -1.1}))
        for x in [i / 10 - 2.0 for i in range(40)]
    ]
    outside = WarmStartTrial({"x": "5.0", "y": "0.0"}, 0.0)  # a TransferLearning range change
    config = TuningConfig(max_jobs=10, random_seed=8)
    tuner = Tuner.create(config, XY, [*parents, outside])
    assert tuner.warm_start_used == 40
    assert tuner.best() is None and tuner.remaining_to_launch() == 1
    seen = run(tuner, quadratic)
    assert len(seen) == 10 and tuner.launched == 10
    # TPE starts where the parents were good, not at random: its first ten trials beat a
    # cold start's by far (about -0.6 against -5 on average).
    cold = run(Tuner.create(config, XY), quadratic)
    warm_mean = statistics.mean(quadratic(p) for p in seen)
    assert warm_mean > statistics.mean(quadratic(p) for p in cold) + 2.0


def test_rebuild_of_a_warm_started_tuner_keeps_its_numbers() -> None:
    parents = [WarmStartTrial({"x": repr(x / 4), "y": "0.0"}, -abs(x)) for x in range(-8, 8)]
    config = TuningConfig(strategy=HYPERBAND, max_jobs=6, random_seed=3)
    before = Tuner.create(config, XY, parents)
    first = before.ask()
    before.tell_completed(first.number, 0.5)
    second = before.ask()
    after = Tuner.rebuild(
        config,
        XY,
        [StoredTrial(1, first.hyperparameters_encoded, TrialState.COMPLETED, 0.5)],
        [StoredTrial(2, second.hyperparameters_encoded)],
        parents,
    )
    assert after.warm_start_used == 16 and after.running_numbers == (2,)
    after.tell_stopped_early(2)
    assert len(run(after, quadratic)) == 4
    assert after.counts() == TrialCounts(in_progress=0, completed=5, failed=0, stopped_early=1)


def test_grid_takes_no_warm_start() -> None:
    parent = WarmStartTrial({"kernel": '"rbf"'}, 1.0)
    with pytest.raises(ValueError, match="no warm start"):
        Tuner.create(
            TuningConfig(strategy=GRID), (CategoricalRange("kernel", ("rbf", "linear")),), [parent]
        )


def test_concurrent_callers_never_share_a_trial() -> None:
    tuner = Tuner.create(TuningConfig(strategy=RANDOM, max_jobs=80, max_parallel_jobs=80), XY)

    def worker() -> list[int]:
        numbers: list[int] = []
        while True:
            try:
                assignment = tuner.ask()
            except RuntimeError:
                return numbers
            tuner.report_intermediate(assignment.number, 1, 0.5)
            tuner.tell_completed(assignment.number, 1.0)
            numbers.append(assignment.number)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [pool.submit(worker) for _ in range(4)]
    numbers = sorted(n for result in results for n in result.result())
    assert numbers == list(range(1, 81)) and tuner.is_finished()


# --- config rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TuningConfig(strategy="Exhaustive"), "strategy must be one of"),  # type: ignore[arg-type]
        (TuningConfig(objective_type="Up"), "objective_type must be one of"),  # type: ignore[arg-type]
        (TuningConfig(early_stopping="On"), "early_stopping must be one of"),  # type: ignore[arg-type]
        (TuningConfig(max_jobs=0), "max_jobs must be within"),
        (TuningConfig(max_jobs=501), "max_jobs must be within"),
        (TuningConfig(max_jobs=True), "max_jobs must be an integer"),
        (TuningConfig(max_parallel_jobs=0), "max_parallel_jobs must be at least 1"),
        (TuningConfig(random_seed=-1), "random_seed"),
        (TuningConfig(random_seed=2**32), "random_seed"),
        (TuningConfig(strategy=HYPERBAND, early_stopping=AUTO), "must be Off with the Hyperband"),
        (TuningConfig(strategy=HYPERBAND, hyperband_min_resource=0), "at least 1"),
        (TuningConfig(strategy=HYPERBAND, hyperband_max_resource=1), "must exceed"),
        (TuningConfig(strategy=HYPERBAND, hyperband_reduction_factor=1), "at least 2"),
    ],
)
def test_config_rules(config: TuningConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config.validate()
    with pytest.raises(ValueError, match=message):
        Tuner.create(config, XY)


def test_max_jobs_defaults_to_one() -> None:
    assert TuningConfig().resolved_max_jobs(XY) == 1
    assert TuningConfig(max_jobs=7).resolved_max_jobs(XY) == 7
