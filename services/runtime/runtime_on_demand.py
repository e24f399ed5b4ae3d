"""Using a script runtime that may not be built yet.

`build_failure` says why a build failed in one sentence (the step and its output's last lines):
a failed build is the platform's fault, and whoever reports it (a training job's FailureReason,
an endpoint's events, a transform's status) shows the same text.

`python -m services.runtime.runtime_on_demand [--build-dir DIR] NAME -- ARGS...` runs
`<NAME's python> ARGS...`, building runtime NAME first when the runtimes folder has no current
build of it (progress on stderr): into `--build-dir` when given (the runtimes folder is then
only read; its wheelhouse is where the wheels come from), else into the runtimes folder. A
swarm replica starts this way: its node's runtimes volume (read-only to it: the handlers it
runs are untrusted code) may not hold the model's runtime, and no volume is shared between
nodes, so the replica builds it in its own container from the volume's wheelhouse.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Sequence

from services.runtime import script_runtimes

log = logging.getLogger(__name__)

BUILD_FAILED_EXIT = 3
"""The launcher's exit code when the runtime could not be built (its reason on stderr)."""

# How much of a failed step's command a reason shows.
_COMMAND_CHARS = 240


def build_failure(name: str, err: BaseException, *, tail_lines: int = 8) -> str:
    """One sentence on a failed build of runtime `name`: the step, and its output's last lines.

    `err` is what `script_runtimes.build` raised: a step's CalledProcessError (whose output the
    build keeps), or an OSError (e.g. a full disk).
    """
    if not isinstance(err, subprocess.CalledProcessError):
        return f"building script runtime {name} failed: {err}"
    command = err.cmd if isinstance(err.cmd, str) else " ".join(map(str, err.cmd))
    output = err.output.decode(errors="replace") if isinstance(err.output, bytes) else ""
    lines = [line.strip() for line in output.splitlines() if line.strip()][-tail_lines:]
    # The output first: a FailureReason is cut at 1024 characters, and pip's paths are long.
    said = f": {' | '.join(lines)}" if lines else ""
    if len(command) > _COMMAND_CHARS:
        command = command[: _COMMAND_CHARS - 3] + "..."
    return (
        f"building script runtime {name} failed (exit {err.returncode}){said} (step: `{command}`)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Execs ARGS on runtime NAME's python, built first; returns only when that failed."""
    parser = argparse.ArgumentParser(
        prog="python -m services.runtime.runtime_on_demand",
        description="Run a program on a script runtime, building the runtime on first use.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--runtimes-dir",
        default=os.environ.get("SKMAKER_RUNTIMES_DIR", ""),
        help="where runtimes are built (env SKMAKER_RUNTIMES_DIR)",
    )
    parser.add_argument(
        "--no-index", action="store_true", help="build from the wheelhouse only (air-gapped)"
    )
    parser.add_argument(
        "--build-dir",
        default="",
        help="build a missing runtime here instead of in the runtimes folder (only read then)",
    )
    parser.add_argument("name", help="the runtime, e.g. sklearn-1.2 (empty: the newest)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the python arguments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="runtime-on-demand: %(message)s")
    program = args.args[1:] if args.args[:1] == ["--"] else args.args
    try:
        rt = script_runtimes.runtime(args.name, args.runtimes_dir)
        wheelhouse, find_links = None, []
        if args.build_dir and not rt.is_current():
            shared = rt.root.parent / script_runtimes.WHEELHOUSE
            rt = script_runtimes.runtime(rt.name, args.build_dir)
            pins = script_runtimes.read_lock(script_runtimes.lock_of(rt))
            if script_runtimes.missing_wheels(pins, shared):
                find_links = [shared]  # the missing ones are fetched into the build folder
            else:
                wheelhouse = shared  # only read: pip is never asked
        python = script_runtimes.ensure_built(
            rt,
            progress=lambda text: log.info("%s", text),
            find_links=find_links,
            no_index=args.no_index,
            wheelhouse=wheelhouse,
        )
    except script_runtimes.UnknownRuntime as err:
        print(f"runtime-on-demand: {err}", file=sys.stderr)
        return 2
    except (subprocess.CalledProcessError, OSError) as err:
        print(f"runtime-on-demand: {build_failure(args.name, err)}", file=sys.stderr)
        return BUILD_FAILED_EXIT
    sys.stderr.flush()
    os.execv(python, [str(python), *program])
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
