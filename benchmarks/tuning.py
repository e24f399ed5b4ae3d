"""Bayesian vs Random tuning through real tuning jobs, and the throughput of parallel trials.

Starts an embedded control with two trainers (`python -m services.control --local
--local-trainers 2`, or uses $SKMAKER_ADDRESS), then for each problem and seed runs one Random
and one Bayesian tuning job of `--trials` trials (`--parallel` at a time) with
`HyperparameterTuner`. Every trial is a real training job whose script prints its validation
accuracy. Problems: a random forest on `make_classification` (4 hyperparameters) and an SVC on
`load_digits` (C and gamma, both logarithmic).

For each problem and seed it reports how many trials Bayesian needed for its best-so-far to
reach Random's best after all `--trials` (null when it never did), and whether that is half or
fewer (seed s seeds Random, seed 10000 + s Bayesian). Then it times one tuning job of
`--throughput-trials` random-forest trials run `--parallel` at a time against the same job run
one at a time, in trials per minute.

Progress lines go to stderr; the last line on stdout is one JSON object. The defaults finish in
about five minutes on 2 cores; `--trials 50 --seeds 5` (and more) runs bigger.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skmaker import ContinuousParameter, HyperparameterTuner, IntegerParameter, Session, SKLearn

try:
    from harness import embedded_control
except ModuleNotFoundError:  # imported by the tests as benchmarks.<name>
    from benchmarks.harness import embedded_control

METRIC = "validation:accuracy"
BAYESIAN_SEED_OFFSET = 10_000
METRIC_DEFINITIONS = [{"Name": METRIC, "Regex": r"validation accuracy: ([0-9.]+)"}]

RANDOM_FOREST_SCRIPT = """\
import argparse
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--n_estimators", type=int, default=100)
parser.add_argument("--max_depth", type=int, default=None)
parser.add_argument("--min_samples_leaf", type=int, default=1)
parser.add_argument("--max_features", type=float, default=1.0)
args, _ = parser.parse_known_args()
X, y = make_classification(
    n_samples=1500, n_features=25, n_informative=8, n_redundant=6, flip_y=0.05,
    class_sep=0.8, random_state=0,
)
X_train, X_valid, y_train, y_valid = train_test_split(X, y, test_size=0.3, random_state=0)
model = RandomForestClassifier(
    n_estimators=args.n_estimators, max_depth=args.max_depth,
    min_samples_leaf=args.min_samples_leaf, max_features=args.max_features,
    random_state=0, n_jobs=1,
).fit(X_train, y_train)
print(f"validation accuracy: {model.score(X_valid, y_valid):.4f}", flush=True)
"""

SVC_SCRIPT = """\
import argparse
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

parser = argparse.ArgumentParser()
parser.add_argument("-C", type=float, default=1.0)  # one-character keys arrive as -C
parser.add_argument("--gamma", type=float, default=0.01)
args, _ = parser.parse_known_args()
X, y = load_digits(return_X_y=True)
X_train, X_valid, y_train, y_valid = train_test_split(
    X / 16.0, y, test_size=0.3, random_state=0, stratify=y
)
model = SVC(C=args.C, gamma=args.gamma).fit(X_train, y_train)
print(f"validation accuracy: {model.score(X_valid, y_valid):.4f}", flush=True)
"""


@dataclass(frozen=True)
class Problem:
    """A trial script and the ranges tuned over it."""

    script: str
    ranges: Mapping[str, Any]


PROBLEMS = {
    "random_forest_make_classification": Problem(
        RANDOM_FOREST_SCRIPT,
        {
            "n_estimators": IntegerParameter(5, 150, "Logarithmic"),
            "max_depth": IntegerParameter(1, 20),
            "min_samples_leaf": IntegerParameter(1, 60, "Logarithmic"),
            "max_features": ContinuousParameter(0.05, 1.0),
        },
    ),
    "svc_load_digits": Problem(
        SVC_SCRIPT,
        {
            "C": ContinuousParameter(1e-3, 1e3, "Logarithmic"),
            "gamma": ContinuousParameter(1e-5, 10.0, "Logarithmic"),
        },
    ),
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_tuning_job(
    session: Session,
    source_dir: Path,
    problem: Problem,
    *,
    strategy: str,
    seed: int,
    trials: int,
    parallel: int,
) -> tuple[list[float], float]:
    """Runs one tuning job; returns the objective of each trial in trial order and the wall time.

    A trial without an objective (it failed) counts as -inf.
    """
    estimator = SKLearn(entry_point="train.py", source_dir=str(source_dir), session=session)
    tuner = HyperparameterTuner(
        estimator,
        METRIC,
        dict(problem.ranges),
        metric_definitions=METRIC_DEFINITIONS,
        strategy=strategy,
        max_jobs=trials,
        max_parallel_jobs=parallel,
        random_seed=seed,
        base_tuning_job_name=f"bench-{strategy.lower()}",
    )
    started = time.monotonic()
    tuner.fit(wait=False)
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON line
        description = tuner.wait()
    wall_s = time.monotonic() - started
    values = [
        t.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value", float("-inf"))
        for t in description["TrainingJobs"]
    ]
    return values, wall_s


def trials_to_match(values: list[float], target: float) -> int | None:
    """The 1-based trial after which the best-so-far first reaches `target`, or None."""
    best = float("-inf")
    for number, value in enumerate(values, start=1):
        best = max(best, value)
        if best >= target:
            return number
    return None


def compare(
    session: Session, scratch: Path, name: str, problem: Problem, args: argparse.Namespace
) -> dict[str, Any]:
    """Random vs Bayesian on one problem over `args.seeds` seeds."""
    source_dir = scratch / name
    source_dir.mkdir()
    (source_dir / "train.py").write_text(problem.script)
    per_seed: dict[str, Any] = {}
    for seed in range(args.seeds):
        random_values, _ = run_tuning_job(
            session, source_dir, problem, strategy="Random", seed=seed,
            trials=args.trials, parallel=args.parallel,
        )  # fmt: skip
        # Another seed: TPE starts with random trials, which the same seed would make
        # identical to Random's, and the comparison would then measure nothing for them.
        bayesian_values, _ = run_tuning_job(
            session, source_dir, problem, strategy="Bayesian", seed=BAYESIAN_SEED_OFFSET + seed,
            trials=args.trials, parallel=args.parallel,
        )  # fmt: skip
        random_best = max(random_values)
        needed = trials_to_match(bayesian_values, random_best)
        per_seed[str(seed)] = {
            "random_best": random_best,
            "bayesian_best": max(bayesian_values),
            "bayesian_trials_to_match_random": needed,
            "half_or_fewer": needed is not None and needed <= args.trials / 2,
        }
        _log(f"{name} seed {seed}: {per_seed[str(seed)]}")
    needed_all = [s["bayesian_trials_to_match_random"] for s in per_seed.values()]
    matched = [n for n in needed_all if n is not None]
    return {
        "seeds": per_seed,
        "median_trials_to_match": statistics.median(matched) if matched else None,
        "seeds_matched": len(matched),
        "seeds_half_or_fewer": sum(s["half_or_fewer"] for s in per_seed.values()),
    }


def throughput(session: Session, scratch: Path, args: argparse.Namespace) -> dict[str, float | int]:
    """Trials per minute of one Random tuning job run `args.parallel` at a time vs serially."""
    problem = PROBLEMS["random_forest_make_classification"]
    source_dir = scratch / "throughput"
    source_dir.mkdir()
    (source_dir / "train.py").write_text(problem.script)
    figures: dict[str, float | int] = {"trials": args.throughput_trials}
    for label, parallel in (("serial", 1), ("parallel", args.parallel)):
        _, wall_s = run_tuning_job(
            session, source_dir, problem, strategy="Random", seed=0,
            trials=args.throughput_trials, parallel=parallel,
        )  # fmt: skip
        figures[f"{label}_wall_s"] = round(wall_s, 2)
        figures[f"{label}_trials_per_minute"] = round(60.0 * args.throughput_trials / wall_s, 2)
        _log(f"throughput {label}: {args.throughput_trials} trials in {wall_s:.1f}s")
    figures["max_parallel_jobs"] = args.parallel
    figures["speedup"] = round(
        float(figures["parallel_trials_per_minute"]) / float(figures["serial_trials_per_minute"]),
        2,
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=20, help="trials per tuning job (20)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per problem (3)")
    parser.add_argument("--parallel", type=int, default=2, help="max_parallel_jobs (2)")
    parser.add_argument(
        "--throughput-trials", type=int, default=12, help="trials of the throughput runs (12)"
    )
    parser.add_argument(
        "--problems",
        default=",".join(PROBLEMS),
        help="comma-separated problems (default: all): " + ", ".join(PROBLEMS),
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="skmaker-tune-")))
        address = os.environ.get("SKMAKER_ADDRESS") or stack.enter_context(
            embedded_control(scratch, "--local-trainers", str(max(2, args.parallel)))
        )
        session = stack.enter_context(Session(address))
        results = {
            name: compare(session, scratch, name, PROBLEMS[name], args)
            for name in args.problems.split(",")
        }
        figures = throughput(session, scratch, args)
    print(
        json.dumps(
            {
                "trials_per_tuning_job": args.trials,
                "seeds": args.seeds,
                "max_parallel_jobs": args.parallel,
                "bayesian_vs_random": results,
                "throughput": figures,
                "elapsed_s": round(time.monotonic() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
