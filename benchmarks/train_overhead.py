"""How much time skmaker adds to a training run: fit() of a trivial script vs running it directly.

Starts an embedded control (`python -m services.control --local`, or uses $SKMAKER_ADDRESS),
then times `SKLearn(...).fit(wait=True, logs=False)` of a script that writes one small file to
SM_MODEL_DIR, and `python script.py` with the same minimal SM_* variables, `--runs` times each.
Progress lines are printed as runs finish; the last line is one JSON object:
{"skmaker_s": median, "direct_s": median, "overhead_s": skmaker_s - direct_s, "runs": N}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skmaker import Session, SKLearn

try:
    from harness import embedded_control
except ModuleNotFoundError:  # imported by the tests as benchmarks.<name>
    from benchmarks.harness import embedded_control

TRIVIAL_SCRIPT = """\
import os
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as handle:
    handle.write("trained\\n")
"""


def time_skmaker(session: Session, script: Path, runs: int) -> list[float]:
    """Wall time of each `fit(wait=True, logs=False)`, from the call to its return."""
    estimator = SKLearn(entry_point=str(script), base_job_name="bench-overhead", session=session)
    durations = []
    for run in range(runs):
        start = time.perf_counter()
        estimator.fit(wait=True, logs=False)
        durations.append(time.perf_counter() - start)
        print(f"skmaker run {run + 1}/{runs}: {durations[-1]:.3f}s", flush=True)
    return durations


def time_direct(script: Path, scratch: Path, runs: int) -> list[float]:
    """Wall time of each `python script.py` with the minimal SM_* variables set."""
    durations = []
    for run in range(runs):
        model_dir = scratch / f"direct-{run}" / "model"
        model_dir.mkdir(parents=True)
        env = {
            **os.environ,
            "SM_MODEL_DIR": str(model_dir),
            "SM_OUTPUT_DATA_DIR": str(model_dir.parent / "output"),
        }
        start = time.perf_counter()
        subprocess.run([sys.executable, str(script)], env=env, check=True, cwd=script.parent)
        durations.append(time.perf_counter() - start)
        print(f"direct run {run + 1}/{runs}: {durations[-1]:.3f}s", flush=True)
    return durations


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; the last printed line is the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--runs", type=int, default=5, help="runs of each kind (default 5)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="skmaker-bench-") as scratch_name:
        scratch = Path(scratch_name)
        script = scratch / "code" / "trivial_train.py"
        script.parent.mkdir()
        script.write_text(TRIVIAL_SCRIPT)
        with contextlib.ExitStack() as stack:
            address = os.environ.get("SKMAKER_ADDRESS") or stack.enter_context(
                embedded_control(scratch)
            )
            session = stack.enter_context(Session(address))
            skmaker_s = statistics.median(time_skmaker(session, script, args.runs))
        direct_s = statistics.median(time_direct(script, scratch, args.runs))

    result = {
        "skmaker_s": round(skmaker_s, 4),
        "direct_s": round(direct_s, 4),
        "overhead_s": round(skmaker_s - direct_s, 4),
        "runs": args.runs,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
