"""How long each container took to stop, from `docker events --format '{{json .}}'` on stdin.

For every container that got SIGTERM (a `kill` event with signal 15) and then died, prints the
time from that signal to its exit and its exit code. The exit is the engine's record of when
the container's process ended (`State.FinishedAt`, from `--exited`) where the container was
still there to inspect; else its `die` event, which the engine sends only after its own
clean-up of the container (network, mounts) and so can lag the exit on a busy machine. Exits 1
when a container took `--limit-s` or longer, exited non-zero, or was never seen to die.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from datetime import UTC, datetime
from pathlib import Path


def exit_times(path: Path) -> dict[str, int]:
    """`name finished-at` lines (`docker inspect --format '{{.Name}} {{.State.FinishedAt}}'`)
    as nanoseconds since the epoch, by container name."""
    times: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, finished = line.strip().partition(" ")
        if not finished or finished.startswith("0001-"):
            continue  # never ran, or still running
        whole, _, fraction = finished.rstrip("Z").partition(".")
        seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        times[name.lstrip("/")] = int(seconds) * 10**9 + int((fraction + "000000000")[:9])
    return times


def main(argv: list[str] | None = None) -> int:
    """Reads the events, prints one line per container; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--limit-s", type=float, default=2.0, help="longest acceptable stop")
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="PATTERN=SECONDS",
        help="another limit for the containers whose names match PATTERN (fnmatch; repeatable)",
    )
    parser.add_argument(
        "--exited", type=Path, help="containers' exit times, `name State.FinishedAt` a line"
    )
    args = parser.parse_args(argv)
    exited = exit_times(args.exited) if args.exited else {}
    limits = {name: float(seconds) for name, _, seconds in (o.partition("=") for o in args.limit)}
    signalled: dict[str, int] = {}
    died: dict[str, tuple[int, str]] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        event = json.loads(line)
        attributes = event.get("Actor", {}).get("Attributes", {})
        name = attributes.get("name", event.get("id", "?"))
        action = event.get("Action") or event.get("status")
        if action == "kill" and attributes.get("signal") == "15":
            signalled.setdefault(name, int(event["timeNano"]))
        elif action == "die":
            died[name] = (int(event["timeNano"]), attributes.get("exitCode", "?"))
    if not signalled:
        print("stop times: no container got SIGTERM", file=sys.stderr)
        return 1
    failed = False
    for name in sorted(signalled):
        if name not in died:
            print(f"  {name}: never died")
            failed = True
            continue
        died_ns, exit_code = died[name]
        ended_ns, source = (exited[name], "exit") if name in exited else (died_ns, "die event")
        seconds = (ended_ns - signalled[name]) / 1e9
        limit_s = next(
            (seconds for pattern, seconds in limits.items() if fnmatch.fnmatchcase(name, pattern)),
            args.limit_s,
        )
        verdict = "ok" if seconds < limit_s and exit_code == "0" else "TOO SLOW OR FAILED"
        failed |= verdict != "ok"
        print(
            f"  {name}: stopped in {seconds:.2f}s ({source}; die event after "
            f"{(died_ns - signalled[name]) / 1e9:.2f}s), exit code {exit_code} "
            f"({verdict}; limit {limit_s:g}s)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
