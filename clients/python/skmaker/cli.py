"""The `skmaker` command: inspect and manage skmaker resources from a shell.

    skmaker training-jobs list [--status S] [--name-prefix P] [--max N]
    skmaker training-jobs describe NAME        # JSON, shaped like DescribeTrainingJob
    skmaker training-jobs stop NAME
    skmaker training-jobs logs NAME [--follow]
    skmaker tuning-jobs list [--status S] [--name-prefix P] [--max N]
    skmaker tuning-jobs describe NAME          # JSON, DescribeHyperParameterTuningJob + trials
    skmaker tuning-jobs stop NAME
    skmaker transform-jobs list [--status S] [--name-prefix P] [--max N]
    skmaker transform-jobs describe NAME       # JSON, DescribeTransformJob + per-file progress
    skmaker transform-jobs stop NAME
    skmaker models list [--name-prefix P] [--max N]
    skmaker models describe NAME               # JSON, shaped like DescribeModel
    skmaker models delete NAME
    skmaker endpoints list [--name-prefix P] [--max N]
    skmaker endpoints describe NAME            # JSON, shaped like DescribeEndpoint + replicas
    skmaker endpoints delete NAME [--no-wait]
    skmaker endpoints invoke NAME [--content-type T] (--body TEXT | --file PATH) [--accept A]
                     [--custom-attributes C] [--base64]
    skmaker runtimes list                      # scikit-learn versions (framework_version)
    skmaker runtimes build [VERSION]           # e.g. 1.2-1: build now, not on first use

`invoke` writes the answer's body to stdout: a textual answer (text/*, JSON) as is, a binary
one (e.g. application/x-npy) as raw bytes, or as base64 with --base64; it refuses to write
raw bytes to a terminal. Each resource is one subcommand group registered by an
`_add_<resource>` function. Failures print `error: <message>` to stderr and exit 1
(argparse's usage errors exit 2).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from skmaker.descriptions import STATUS_VALUES, TUNING_STATUS_VALUES
from skmaker.errors import SkmakerClientError, Unavailable
from skmaker.session import DEFAULT_ADDRESS, Session
from skmaker.transform_descriptions import TRANSFORM_STATUS_VALUES

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


def _add_training_jobs(resources: argparse._SubParsersAction[_ExactFlagsParser]) -> None:
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


# -- tuning-jobs -----------------------------------------------------------------------------


def _list_tuning_jobs(session: Session, args: argparse.Namespace) -> int:
    summaries = session.list_tuning_jobs(
        status_equals=args.status, name_contains_prefix=args.name_prefix, max_results=args.max
    )
    rows = []
    for s in summaries:
        counters = s["TrainingJobStatusCounters"]
        launched = sum(counters.values())
        best = s.get("BestObjectiveValue")
        rows.append(
            [
                s["HyperParameterTuningJobName"],
                s["HyperParameterTuningJobStatus"],
                s["Strategy"],
                f"{launched}/{s['ResourceLimits']['MaxNumberOfTrainingJobs']}",
                f"{counters['Completed']}/{counters['InProgress']}/"
                f"{counters['NonRetryableError']}/{counters['Stopped']}",
                "-" if best is None else f"{best:g}",
                _short_time(s.get("CreationTime")),
            ]
        )
    headers = [
        "NAME",
        "STATUS",
        "STRATEGY",
        "TRIALS",
        "DONE/RUNNING/FAILED/STOPPED",
        "BEST",
        "CREATED (UTC)",
    ]
    print_table(headers, rows)
    return 0


def _describe_tuning_job(session: Session, args: argparse.Namespace) -> int:
    _print_json(session.describe_tuning_job(args.name))
    return 0


def _stop_tuning_job(session: Session, args: argparse.Namespace) -> int:
    description = session.stop_tuning_job(args.name)
    print(
        f"{description['HyperParameterTuningJobName']}: "
        f"{description['HyperParameterTuningJobStatus']}"
    )
    return 0


def _add_tuning_jobs(resources: argparse._SubParsersAction[_ExactFlagsParser]) -> None:
    group = resources.add_parser("tuning-jobs", help="list, describe and stop tuning jobs")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    list_jobs = verbs.add_parser("list", help="list tuning jobs, newest first")
    list_jobs.add_argument("--status", choices=list(TUNING_STATUS_VALUES), help="only this status")
    list_jobs.add_argument("--name-prefix", default="", help="only names starting with this")
    list_jobs.add_argument("--max", type=int, default=None, help="at most this many jobs")
    list_jobs.set_defaults(handler=_list_tuning_jobs)

    describe = verbs.add_parser(
        "describe",
        help="print a tuning job and its trials as JSON (DescribeHyperParameterTuningJob)",
    )
    describe.add_argument("name", help="tuning job name")
    describe.set_defaults(handler=_describe_tuning_job)

    stop = verbs.add_parser("stop", help="stop launching trials and stop the running ones")
    stop.add_argument("name", help="tuning job name")
    stop.set_defaults(handler=_stop_tuning_job)


# -- transform-jobs --------------------------------------------------------------------------


def _list_transform_jobs(session: Session, args: argparse.Namespace) -> int:
    summaries = session.list_transform_jobs(
        status_equals=args.status, name_contains_prefix=args.name_prefix, max_results=args.max
    )
    rows = [
        [
            s["TransformJobName"],
            s["TransformJobStatus"],
            s["ModelName"],
            _short_time(s.get("CreationTime")),
            _short_time(s.get("TransformEndTime")),
        ]
        for s in summaries
    ]
    print_table(["NAME", "STATUS", "MODEL", "CREATED (UTC)", "ENDED (UTC)"], rows)
    return 0


def _describe_transform_job(session: Session, args: argparse.Namespace) -> int:
    _print_json(session.describe_transform_job(args.name))
    return 0


def _stop_transform_job(session: Session, args: argparse.Namespace) -> int:
    description = session.stop_transform_job(args.name)
    print(f"{description['TransformJobName']}: {description['TransformJobStatus']}")
    return 0


def _add_transform_jobs(resources: argparse._SubParsersAction[_ExactFlagsParser]) -> None:
    group = resources.add_parser("transform-jobs", help="list, describe and stop transform jobs")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    list_jobs = verbs.add_parser("list", help="list transform jobs, newest first")
    list_jobs.add_argument(
        "--status", choices=list(TRANSFORM_STATUS_VALUES), help="only this status"
    )
    list_jobs.add_argument("--name-prefix", default="", help="only names starting with this")
    list_jobs.add_argument("--max", type=int, default=None, help="at most this many jobs")
    list_jobs.set_defaults(handler=_list_transform_jobs)

    describe = verbs.add_parser(
        "describe", help="print a transform job and its files' progress as JSON"
    )
    describe.add_argument("name", help="transform job name")
    describe.set_defaults(handler=_describe_transform_job)

    stop = verbs.add_parser("stop", help="stop a running transform job")
    stop.add_argument("name", help="transform job name")
    stop.set_defaults(handler=_stop_transform_job)


# -- models ----------------------------------------------------------------------------------


def _list_models(session: Session, args: argparse.Namespace) -> int:
    summaries = session.list_models(name_contains_prefix=args.name_prefix, max_results=args.max)
    rows = [[s["ModelName"], _short_time(s.get("CreationTime"))] for s in summaries]
    print_table(["NAME", "CREATED (UTC)"], rows)
    return 0


def _describe_model(session: Session, args: argparse.Namespace) -> int:
    _print_json(session.describe_model(args.name))
    return 0


def _delete_model(session: Session, args: argparse.Namespace) -> int:
    session.delete_model(args.name)
    print(f"{args.name}: deleted")
    return 0


def _add_models(resources: argparse._SubParsersAction[_ExactFlagsParser]) -> None:
    group = resources.add_parser("models", help="list, describe and delete models")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    list_models = verbs.add_parser("list", help="list models, newest first")
    list_models.add_argument("--name-prefix", default="", help="only names starting with this")
    list_models.add_argument("--max", type=int, default=None, help="at most this many models")
    list_models.set_defaults(handler=_list_models)

    describe = verbs.add_parser("describe", help="print a model as JSON (DescribeModel)")
    describe.add_argument("name", help="model name")
    describe.set_defaults(handler=_describe_model)

    delete = verbs.add_parser(
        "delete", help="delete a model (endpoints serving it keep serving it)"
    )
    delete.add_argument("name", help="model name")
    delete.set_defaults(handler=_delete_model)


# -- runtimes --------------------------------------------------------------------------------


def _list_runtimes(session: Session, args: argparse.Namespace) -> int:
    rows = [
        [
            runtime["Name"] + (" (default)" if runtime["IsDefault"] else ""),
            runtime["SageMakerFrameworkVersion"],
            runtime["FrameworkVersion"],
            runtime["State"],
        ]
        for runtime in session.list_runtimes()
    ]
    print_table(["NAME", "FRAMEWORK_VERSION", "SCIKIT-LEARN", "STATE"], rows)
    return 0


def _build_runtime(session: Session, args: argparse.Namespace) -> int:
    for line in session.build_runtime(args.framework_version):
        print(line, flush=True)
    return 0


def _add_runtimes(resources: argparse._SubParsersAction[_ExactFlagsParser]) -> None:
    group = resources.add_parser(
        "runtimes", help="list the scikit-learn versions the server runs, or pre-build one"
    )
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    list_runtimes = verbs.add_parser("list", help="list the runtimes, oldest first")
    list_runtimes.set_defaults(handler=_list_runtimes)
    build = verbs.add_parser(
        "build", help="build a runtime now instead of on its first use, printing its progress"
    )
    build.add_argument(
        "framework_version",
        nargs="?",
        default="",
        help="e.g. 1.2-1, 1.2 or sklearn-1.2 (default: the newest)",
    )
    build.set_defaults(handler=_build_runtime)


# -- endpoints -------------------------------------------------------------------------------


def _is_textual(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media.startswith("text/") or media == "application/json" or media.endswith("+json")


def _list_endpoints(session: Session, args: argparse.Namespace) -> int:
    summaries = session.list_endpoints(name_contains_prefix=args.name_prefix, max_results=args.max)
    rows = [
        [
            s["EndpointName"],
            s["EndpointStatus"],
            f"{s['CurrentReplicas']}/{s['DesiredReplicas']}",
            s["ModelName"] or "-",
            s["Address"] or "-",
            _short_time(s.get("CreationTime")),
        ]
        for s in summaries
    ]
    headers = ["NAME", "STATUS", "REPLICAS", "MODEL", "ADDRESS", "CREATED (UTC)"]
    print_table(headers, rows)
    return 0


def _describe_endpoint(session: Session, args: argparse.Namespace) -> int:
    _print_json(session.describe_endpoint(args.name))
    return 0


def _delete_endpoint(session: Session, args: argparse.Namespace) -> int:
    session.delete_endpoint(args.name, wait=not args.no_wait)
    print(f"{args.name}: {'Deleting' if args.no_wait else 'deleted'}")
    return 0


def _read_payload(args: argparse.Namespace) -> bytes | str:
    if args.body is not None:
        return str(args.body)
    if args.file == "-":
        return sys.stdin.buffer.read()
    with open(args.file, "rb") as handle:
        return handle.read()


def _invoke_endpoint(session: Session, args: argparse.Namespace) -> int:
    try:
        payload = _read_payload(args)
    except OSError as err:
        print(f"error: cannot read {args.file}: {err.strerror}", file=sys.stderr)
        return EXIT_ERROR
    body, content_type = session.invoke_endpoint(
        args.name,
        payload,
        args.content_type,
        args.accept,
        custom_attributes=args.custom_attributes,
    )
    if args.base64:
        print(base64.b64encode(body).decode("ascii"))
        return 0
    if _is_textual(content_type):
        text = body.decode("utf-8", errors="replace")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return 0
    if sys.stdout.isatty():
        print(
            f"error: the answer is binary ({content_type}, {len(body)} bytes): "
            "redirect stdout to a file or pass --base64",
            file=sys.stderr,
        )
        return EXIT_ERROR
    sys.stdout.flush()
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.flush()
    return 0


def _add_endpoints(resources: argparse._SubParsersAction[_ExactFlagsParser]) -> None:
    group = resources.add_parser("endpoints", help="list, describe, delete and invoke endpoints")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    list_endpoints = verbs.add_parser("list", help="list endpoints")
    list_endpoints.add_argument("--name-prefix", default="", help="only names starting with this")
    list_endpoints.add_argument("--max", type=int, default=None, help="at most this many")
    list_endpoints.set_defaults(handler=_list_endpoints)

    describe = verbs.add_parser(
        "describe", help="print an endpoint and its replicas as JSON (DescribeEndpoint)"
    )
    describe.add_argument("name", help="endpoint name")
    describe.set_defaults(handler=_describe_endpoint)

    delete = verbs.add_parser("delete", help="drain and stop an endpoint's replicas, delete it")
    delete.add_argument("name", help="endpoint name")
    delete.add_argument(
        "--no-wait", action="store_true", help="return while the replicas are still draining"
    )
    delete.set_defaults(handler=_delete_endpoint)

    invoke = verbs.add_parser("invoke", help="send one request and print the answer")
    invoke.add_argument("name", help="endpoint name")
    invoke.add_argument(
        "--content-type", default="text/csv", help="payload MIME type (default %(default)s)"
    )
    payload = invoke.add_mutually_exclusive_group(required=True)
    payload.add_argument("--body", help="the payload as text, e.g. '5.1,3.5,1.4,0.2'")
    payload.add_argument("--file", help="read the payload from this file ('-' for stdin)")
    invoke.add_argument(
        "--accept", default="", help="answer MIME type (default: the endpoint's, JSON)"
    )
    invoke.add_argument("--custom-attributes", default="", help="SageMaker's CustomAttributes")
    invoke.add_argument(
        "--base64", action="store_true", help="print the answer base64-encoded (binary answers)"
    )
    invoke.set_defaults(handler=_invoke_endpoint)


# -- entry point -----------------------------------------------------------------------------


class _ExactFlagsParser(argparse.ArgumentParser):
    """An ArgumentParser that refuses abbreviated flags, as do the parsers it adds below it.

    argparse accepts any unique prefix of a long flag by default, so a flag added later can
    silently change what an old command line means; subparsers are built with the parent's
    class, which is how every subcommand inherits this.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The `skmaker` argument parser with every resource's subcommands."""
    parser = _ExactFlagsParser(prog="skmaker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address",
        default=os.environ.get("SKMAKER_ADDRESS", DEFAULT_ADDRESS),
        help="control service host:port (default $SKMAKER_ADDRESS or %(default)s)",
    )
    resources = parser.add_subparsers(dest="resource", required=True, metavar="RESOURCE")
    _add_training_jobs(resources)
    _add_tuning_jobs(resources)
    _add_transform_jobs(resources)
    _add_models(resources)
    _add_endpoints(resources)
    _add_runtimes(resources)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        with Session(args.address) as session:
            return handler(session, args)
    except Unavailable as err:
        # An invocation's UNAVAILABLE comes from the endpoint's replicas, not the control.
        where = (
            f"endpoint {args.name}"
            if args.handler is _invoke_endpoint
            else f"skmaker at {args.address}"
        )
        print(f"error: {where} is unavailable: {err}", file=sys.stderr)
        return EXIT_ERROR
    except SkmakerClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
