"""`python -m services.runtime.healthcheck [ADDR]`: exit 0 when ADDR's grpc.health.v1 is SERVING.

A container's HEALTHCHECK command: one Check of the overall health ("", or `--service NAME`)
with a deadline; exit 1 on any other status or error, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2

from services.runtime.health_calls import health_check


def main(argv: list[str] | None = None) -> int:
    """Checks one address once; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m services.runtime.healthcheck", allow_abbrev=False
    )
    parser.add_argument("address", nargs="?", default="127.0.0.1:50051", help="host:port")
    parser.add_argument("--service", default="", help="service name; empty means the server")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="deadline of the Check")
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.address) as channel:
        try:
            answer = health_check(channel)(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_s
            )
        except grpc.RpcError as err:
            print(f"{args.address}: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{args.address}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
