"""The `skmaker` command: inspect and manage skmaker resources from a shell.

    skmaker training-jobs list [--status S] [--name-prefix P] [--max N]
    skmaker training-jobs describe NAME        # JSON, shaped like DescribeTrainingJob
    skmaker training-jobs stop NAME
    skmaker training-jobs logs NAME [--follow]

Each resource is one subcommand group registered by an `_add_<resource>` function, so
`models` and `endpoints` slot in beside `training-jobs`. Failures print `error: <message>` to
stderr and exit 1 (argparse's usage errors exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from skmaker.descriptions import STATUS_VALUES
from skmaker.errors import SkmakerClientError, Unavailable
from skmaker.session import DEFAULT_ADDRESS, Session

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

Handler = Callable[[Session, argparse.Namespace], int]


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def _short_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Prints rows under headers in left-aligned columns two spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


# -- training-jobs ---------------------------------------------------------------------------


def _list_training_jobs(session: Session, args: argparse.Namespace) -> int:
    summaries = session.list_training_jobs(
        status_equals=args.status, name_contains_prefix=args.name_prefix, max_results=args.max
    )
    rows = [
        [
            s["TrainingJobName"],
            s["TrainingJobStatus"],
            s["SecondaryStatus"] or "-",
            _short_time(s.get("CreationTime")),
            _short_time(s.get("TrainingEndTime")),
        ]
        for s in summaries
    ]
    print_table(["NAME", "STATUS", "SECONDARY STATUS", "CREATED (UTC)", "ENDED (UTC)"], rows)
    return 0


def _describe_training_job(session: Session, args: argparse.Namespace) -> int:
    _print_json(session.describe_training_job(args.name))
    return 0


def _stop_training_job(session: Session, args: argparse.Namespace) -> int:
    description = session.stop_training_job(args.name)
    print(f"{description['TrainingJobName']}: {description['TrainingJobStatus']}")
    return 0


def _training_job_logs(session: Session, args: argparse.Namespace) -> int:
    session.logs_for_job(args.name, wait=args.follow)
    return 0


def _add_training_jobs(resources: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = resources.add_parser("training-jobs", help="list, describe, stop and follow jobs")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    list_jobs = verbs.add_parser("list", help="list training jobs, newest first")
    list_jobs.add_argument("--status", choices=list(STATUS_VALUES), help="only this status")
    list_jobs.add_argument("--name-prefix", default="", help="only names starting with this")
    list_jobs.add_argument("--max", type=int, default=None, help="at most this many jobs")
    list_jobs.set_defaults(handler=_list_training_jobs)

    describe = verbs.add_parser("describe", help="print a job as JSON (DescribeTrainingJob)")
    describe.add_argument("name", help="training job name")
    describe.set_defaults(handler=_describe_training_job)

    stop = verbs.add_parser("stop", help="ask a running job to stop")
    stop.add_argument("name", help="training job name")
    stop.set_defaults(handler=_stop_training_job)

    logs = verbs.add_parser("logs", help="print a job's log")
    logs.add_argument("name", help="training job name")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    logs.set_defaults(handler=_training_job_logs)


# -- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The `skmaker` argument parser with every resource's subcommands."""
    parser = argparse.ArgumentParser(prog="skmaker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address",
        default=os.environ.get("SKMAKER_ADDRESS", DEFAULT_ADDRESS),
        help="control service host:port (default $SKMAKER_ADDRESS or %(default)s)",
    )
    resources = parser.add_subparsers(dest="resource", required=True, metavar="RESOURCE")
    _add_training_jobs(resources)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        with Session(args.address) as session:
            return handler(session, args)
    except Unavailable as err:
        print(f"error: skmaker at {args.address} is unavailable: {err}", file=sys.stderr)
        return EXIT_ERROR
    except SkmakerClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
