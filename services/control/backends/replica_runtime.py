"""The seam under the replica supervisor: where and how one replica runs (a process, a container).

`supervisor.ReplicaSupervisor` decides when replicas start, serve, get replaced and drain; a
`ReplicaRuntime` carries those decisions out for one kind of place: it claims an endpoint's
address, launches a replica, and stops what a previous control run left. Each launched replica
is a `RunningReplica` the supervisor polls, signals and finally releases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from services.control.backends import RecordedReplica
from services.runtime.tls import ClientTls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupervisionSettings:
    """How replicas are supervised, whatever runs them.

    Attributes:
        start_timeout_s: a replica not SERVING this long after its start is killed.
        start_attempts: starts a replica slot gets when it dies before serving without
            explaining why (no failure text).
        health_interval_s: how often replicas are probed and polled.
        health_timeout_s: deadline of one health probe.
        unhealthy_checks: failed probes in a row after which a serving replica is replaced.
        shutdown_grace_s: a replica's grace period for in-flight calls (its --shutdown-grace-s).
        kill_margin_s: waited past the grace period before SIGKILL.
        replace_backoff_s: first wait before replacing a replica that died young.
        max_replace_backoff_s: the longest such wait.
        stable_after_s: a replica that served this long resets the replacement backoff.
        tls: how the control reaches replicas serving TLS (health probes); None: plaintext.
    """

    tls: ClientTls | None = None
    start_timeout_s: float = 180.0
    start_attempts: int = 2
    health_interval_s: float = 0.5
    health_timeout_s: float = 1.0
    unhealthy_checks: int = 3
    shutdown_grace_s: float = 5.0
    kill_margin_s: float = 5.0
    replace_backoff_s: float = 1.0
    max_replace_backoff_s: float = 30.0
    stable_after_s: float = 60.0

    @property
    def drain_timeout_s(self) -> float:
        """How long a draining replica may take before it is killed."""
        return self.shutdown_grace_s + self.kill_margin_s


# (endpoint, model) -> the interpreter the model's replicas run on (its script runtime's), or
# None while that runtime is being built. Raises for a model or runtime that cannot be had.
ReplicaPython = Callable[[str, str], "str | None"]


class LaunchError(Exception):
    """A replica could not even be started (e.g. its image is missing); the text says why."""


class EndpointAddress(Protocol):
    """An endpoint's stable address, held from the endpoint's first `ensure` to its deletion."""

    @property
    def address(self) -> str:
        """The host:port shown as the endpoint's Address."""
        ...

    def release(self) -> None:
        """Frees the address (idempotent)."""
        ...


@dataclass(frozen=True)
class ReplicaSpec:
    """What one replica is started with."""

    endpoint_name: str
    model_name: str
    replica_id: str
    control_address: str
    endpoint_address: EndpointAddress


class RunningReplica(Protocol):
    """One started replica, as the supervisor sees it. Calls return quickly."""

    @property
    def handle(self) -> str:
        """What the ReplicaLedger records to find it again: a pid, a container id."""
        ...

    @property
    def label(self) -> str:
        """How events name it: "pid 123", "container skmaker-iris-r-1"."""
        ...

    def addresses(self) -> tuple[str, str]:
        """Its gRPC and /metrics host:port; empty strings until known."""
        ...

    def poll(self) -> int | None:
        """Its exit code once it exited, else None."""
        ...

    def terminate(self) -> None:
        """Asks it to drain and exit (SIGTERM); a replica already gone is fine."""
        ...

    def kill(self) -> None:
        """Ends it now (SIGKILL); a replica already gone is fine."""
        ...

    def failure_text(self) -> str:
        """Why it could not load its model, on one line; empty when it did not say."""
        ...

    def log_tail(self) -> str:
        """The last lines of its output, joined with ' | '."""
        ...

    def release(self) -> None:
        """Frees what is left of it once it exited (e.g. removes its container)."""
        ...


class Leftover(Protocol):
    """A replica a previous control run left running, being stopped by this run."""

    @property
    def replica_id(self) -> str:
        """Its replica id."""
        ...

    @property
    def label(self) -> str:
        """How events name it."""
        ...

    def is_gone(self) -> bool:
        """True once it exited (and was cleaned up); kills it (once) when it overran."""
        ...


class ReplicaRuntime(Protocol):
    """Starts and stops replicas in one kind of place. Called with the supervisor's lock held."""

    def claim_address(self, endpoint: str, wanted: str) -> tuple[EndpointAddress, str]:
        """Claims the endpoint's stable address, `wanted` again when a previous run had one.

        Returns:
            The address, and a sentence for the endpoint's events when it had to move
            (empty otherwise).
        """
        ...

    def ready_to_launch(self, endpoint: str, model: str) -> bool:
        """Whether replicas of `model` can start now: False while the script runtime they
        run on is being built (they start once it is ready)."""
        ...

    def launch(self, spec: ReplicaSpec) -> RunningReplica:
        """Starts one replica; it loads its model, then reports SERVING on its health.

        Raises:
            LaunchError: it could not be started at all.
        """
        ...

    def stop_leftovers(
        self, endpoint: str, recorded: Sequence[RecordedReplica], kill_after_s: float
    ) -> list[Leftover]:
        """Starts draining the replicas of `endpoint` a previous run left (the recorded ones,
        and any other the runtime can find); returns those not gone yet."""
        ...


def python_ready(python_for: ReplicaPython | None, endpoint: str, model: str) -> bool:
    """`ready_to_launch` over a `ReplicaPython`; True when it fails (launch then says why)."""
    if python_for is None:
        return True
    try:
        return python_for(endpoint, model) is not None
    except Exception:
        return True


def replica_python(python_for: ReplicaPython | None, spec: ReplicaSpec, default: str) -> str:
    """The interpreter `spec`'s replica runs on: `python_for`'s answer, else `default`.

    Raises:
        LaunchError: its runtime is unknown, still being built or failed to build.
    """
    if python_for is None:
        return default
    try:
        python = python_for(spec.endpoint_name, spec.model_name)
    except Exception as err:
        raise LaunchError(f"no script runtime for model {spec.model_name}: {err}") from err
    if python is None:
        raise LaunchError(f"the script runtime of model {spec.model_name} is being built")
    return python


def port_of(address: str) -> int:
    """The port of a host:port address; 0 when it has none."""
    _host, _, port = address.rpartition(":")
    return int(port) if port.isdigit() else 0


def release_all(remains: Sequence[RunningReplica]) -> None:
    """Releases `remains` side by side: removing a container is a Docker API call that took
    about a second on a busy machine, and a stopping control removes all its replicas at once."""
    if len(remains) <= 1:
        for running in remains:
            _release(running)
        return
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(8, len(remains)), thread_name_prefix="release") as pool:
        list(pool.map(_release, remains))
    log.info("removed what %d replicas left in %.2fs", len(remains), time.monotonic() - started)


def _release(running: RunningReplica) -> None:
    try:
        running.release()
    except Exception:
        log.exception("removing the remains of %s failed", running.label)
