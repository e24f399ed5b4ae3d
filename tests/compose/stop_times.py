"""How long each container took to stop, from `docker events --format '{{json .}}'` on stdin.

For every container that got SIGTERM (a `kill` event with signal 15) and then died, prints the
time from that signal to its `die` event and its exit code. Exits 1 when a container took
`--limit-s` or longer, exited non-zero, or was never seen to die.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    """Reads the events, prints one line per container; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit-s", type=float, default=2.0, help="longest acceptable stop")
    args = parser.parse_args(argv)
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
        seconds = (died_ns - signalled[name]) / 1e9
        verdict = "ok" if seconds < args.limit_s and exit_code == "0" else "TOO SLOW OR FAILED"
        failed |= verdict != "ok"
        print(f"  {name}: stopped in {seconds:.2f}s, exit code {exit_code} ({verdict})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
