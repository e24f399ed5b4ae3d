"""`python -m services.runtime.healthcheck [ADDR]`: exit 0 when ADDR's grpc.health.v1 is SERVING.

A container's HEALTHCHECK command: one Check of the overall health ("", or `--service NAME`)
with a deadline; exit 1 on any other status or error, with the reason on stderr. A service
serving TLS is checked over TLS: `--tls-ca-file` (and under mutual TLS `--tls-cert-file`,
`--tls-key-file`), each defaulting to `SKMAKER_HEALTHCHECK_<NAME>` of the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2

from services.runtime.health_calls import health_check
from services.runtime.tls import ClientTls, open_channel


@dataclass(frozen=True)
class _ProbeTls:
    tls_cert_file: str
    tls_key_file: str
    tls_ca_file: str
    tls_server_name: str
    tls_client_ca_file: str = ""


def main(argv: list[str] | None = None) -> int:
    """Checks one address once; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m services.runtime.healthcheck", allow_abbrev=False
    )
    parser.add_argument("address", nargs="?", default="127.0.0.1:50051", help="host:port")
    parser.add_argument("--service", default="", help="service name; empty means the server")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="deadline of the Check")
    for name in ("ca_file", "cert_file", "key_file", "server_name"):
        variable = f"SKMAKER_HEALTHCHECK_TLS_{name.upper()}"
        parser.add_argument(
            f"--tls-{name.replace('_', '-')}",
            default=os.environ.get(variable, ""),
            help=f"TLS {name.replace('_', ' ')} (env {variable})",
        )
    args = parser.parse_args(argv)
    tls = ClientTls.from_settings(
        _ProbeTls(args.tls_cert_file, args.tls_key_file, args.tls_ca_file, args.tls_server_name)
    )
    with open_channel(args.address, tls=tls) as channel:
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
