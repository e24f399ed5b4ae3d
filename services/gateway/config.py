"""GatewaySettings: every knob of the gateway, and the command line a deployment runs it with.

    python -m services.gateway --control HOST:PORT [--grpc-port 50052] [--host 0.0.0.0]

Each flag has `SKMAKER_GATEWAY_<NAME>` behind it (`--control` <- `SKMAKER_GATEWAY_CONTROL`);
a flag wins over the variable. Without a control, `--routes` gives a fixed table instead
(`"iris=127.0.0.1:7001,127.0.0.1:7002;other=10.0.0.5:7001"`), for benchmarks and tests.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from services.runtime.settings import ServiceSettings, setting

ENV_PREFIX = "SKMAKER_GATEWAY_"


@dataclass(frozen=True)
class GatewaySettings(ServiceSettings):
    """skmaker gateway: Predict and Open Inference V2 for every endpoint on one port."""

    grpc_port: int = setting(
        50052, "gRPC port callers send Predict and V2 calls to", flags=["--port"]
    )
    # Each call holds a thread while it waits for its replica, so the pool bounds how many
    # calls the gateway has in flight at once; the work per call is small.
    max_workers: int = setting(64, "threads serving RPCs (calls in flight at once)")
    control: str = setting("", "control's gRPC address, where the routing table comes from")
    routes: str = setting(
        "", "a fixed routing table instead of --control: 'endpoint=host:port,host:port;...'"
    )
    refresh_interval_s: float = setting(1.0, "how often the routing table is re-read (List)")
    control_timeout_s: float = setting(2.0, "deadline of each call to the control")
    miss_gap_s: float = setting(
        0.25, "an endpoint missing from the table is described at most this often"
    )
    retries: int = setting(
        2, "calls answered UNAVAILABLE (a draining replica) retried on another replica"
    )
    eject_s: float = setting(
        1.0, "a replica that answered UNAVAILABLE gets no new call for this long (if others can)"
    )
    data_plane: str = setting(
        "auto",
        "who forwards calls: 'haproxy' (an HAProxy child owns the port and routes in C), "
        "'python' (this process forwards each call), 'auto' (haproxy when installed)",
    )
    haproxy_binary: str = setting("haproxy", "the haproxy executable (--data-plane haproxy)")
    haproxy_endpoint_slots: int = setting(
        64, "endpoints HAProxy routes at once; further ones go through the Python path"
    )
    haproxy_replica_slots: int = setting(
        16, "replicas of one endpoint HAProxy routes to; further ones get no calls from it"
    )
    replica_max_payload_bytes: int = setting(
        6 * 1024 * 1024,
        "the replicas' --max-payload-bytes: HAProxy answers RESOURCE_EXHAUSTED itself for a "
        "call whose message is over it by more than the 1 MiB the rest of a call may take",
    )
    default_timeout_s: float = setting(
        60.0, "deadline of a forwarded call when the caller gave none (or a longer one)"
    )

    def check(self) -> None:
        """Refuses settings that cannot work.

        Raises:
            ValueError: neither or both of --control and --routes, or a non-positive knob.
        """
        if bool(self.control) == bool(self.routes):
            raise ValueError("give --control (the routing table's source) or --routes, not both")
        if self.refresh_interval_s <= 0 or self.control_timeout_s <= 0:
            raise ValueError("--refresh-interval-s and --control-timeout-s must be positive")
        if self.retries < 0 or self.eject_s < 0 or self.miss_gap_s < 0:
            raise ValueError("--retries, --eject-s and --miss-gap-s must not be negative")
        if self.default_timeout_s <= 0:
            raise ValueError("--default-timeout-s must be positive")
        if self.replica_max_payload_bytes <= 0:
            raise ValueError("--replica-max-payload-bytes must be positive")
        if self.data_plane not in ("auto", "haproxy", "python"):
            raise ValueError("--data-plane must be auto, haproxy or python")
        if self.data_plane == "haproxy" and shutil.which(self.haproxy_binary) is None:
            raise ValueError(
                f"--data-plane haproxy: {self.haproxy_binary!r} is not installed "
                "(apt-get install haproxy, or --data-plane python)"
            )
        if (self.auth_tokens_file or self.auth_token_sha256) and not self.auth_token:
            raise ValueError(
                "the gateway calls the control and the replicas with its own token: give "
                "--auth-token-file (or SKMAKER_GATEWAY_AUTH_TOKEN) besides the people's tokens"
            )
        if self.haproxy_endpoint_slots < 1 or self.haproxy_replica_slots < 1:
            raise ValueError("--haproxy-endpoint-slots and --haproxy-replica-slots must be >= 1")

    @property
    def uses_haproxy(self) -> bool:
        """True when HAProxy forwards the calls (asked for, or `auto` and installed)."""
        if self.data_plane == "auto":
            return shutil.which(self.haproxy_binary) is not None
        return self.data_plane == "haproxy"
