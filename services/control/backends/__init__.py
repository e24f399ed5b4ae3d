"""Replica backends: the seam between the control's endpoint logic and where replicas run.

A `ReplicaBackend` keeps, for each endpoint, a set of inference replicas converging on a
target (a model and a replica count), like a Kubernetes Deployment: it starts replicas, watches
their health, replaces one that dies after it served, rolls over to a new model (new replicas
first, old ones drained once the new ones serve), and removes replicas by draining them (health
NOT_SERVING, in-flight requests finish, then exit). The control only sets targets and reads
`replicas()`; it never assumes which backend runs (`local` processes, `docker` containers;
Kubernetes later).

Backends persist what a restarted control needs to clean up after them through a
`ReplicaLedger` (the control's database), and report noteworthy changes as sentences through an
`EventSink`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class ReplicaState(enum.StrEnum):
    """Where one replica is in its life."""

    STARTING = "Starting"  # process started, model loading; not capacity yet
    SERVING = "Serving"  # health SERVING: loaded, warmed up, on the endpoint's address
    DRAINING = "Draining"  # being removed: refuses new requests, finishes in-flight ones
    FAILED = "Failed"  # could not start (see failure_reason); the backend gave up on it


@dataclass(frozen=True)
class ReplicaInfo:
    """One replica as the backend sees it now.

    Attributes:
        id: unique within the endpoint (e.g. `r-3`); never reused while the endpoint lives.
        model_name: the model it serves or loads.
        state: its state.
        address: host:port of its own gRPC port; empty until known.
        metrics_address: host:port of its Prometheus /metrics; empty until known.
        failure_reason: why it failed, for a FAILED replica.
    """

    id: str
    model_name: str
    state: ReplicaState
    address: str = ""
    metrics_address: str = ""
    failure_reason: str = ""


@dataclass(frozen=True)
class RecordedReplica:
    """A replica a backend recorded as started: enough to find it after a control crash."""

    endpoint_name: str
    replica_id: str
    backend: str
    handle: str  # backend-specific: a pid for local processes, a container id for Docker
    model_name: str
    started_at: float


class ReplicaLedger(Protocol):
    """Durable record of started replicas (implemented by the control's store)."""

    def record_replica(self, replica: RecordedReplica) -> None:
        """Records a replica right after it was started."""
        ...

    def forget_replica(self, endpoint_name: str, replica_id: str) -> None:
        """Forgets a replica once it is known to be gone."""
        ...

    def recorded_replicas(self, endpoint_name: str, backend: str) -> list[RecordedReplica]:
        """Every replica of `endpoint_name` recorded by `backend` and not forgotten."""
        ...


# Called with (endpoint name, sentence), e.g. ("iris", "replica r-2 exited with -9; replacing").
EventSink = Callable[[str, str], None]


class ReplicaBackend(Protocol):
    """Runs the replicas of every endpoint. All methods are thread-safe and return quickly
    unless stated otherwise; convergence happens in the backend's own threads."""

    name: str

    def start(self, control_address: str) -> None:
        """Starts the backend; replicas reach the control's ModelService at `control_address`."""
        ...

    def ensure(self, endpoint: str, model: str, desired_replicas: int, address: str = "") -> str:
        """Makes the endpoint converge on `desired_replicas` serving replicas of `model`.

        The first call for an endpoint in this process claims its stable address (`address`,
        when a previous run recorded one, or a new one) and stops replicas a previous control
        left behind. A later call with another model rolls the replicas over without loss;
        replicas marked FAILED are dropped, so calling `ensure` again retries them.

        Returns:
            The endpoint's stable host:port.
        """
        ...

    def scale(self, endpoint: str, desired_replicas: int, remove_first: Sequence[str] = ()) -> None:
        """Changes only the replica count; surplus replicas are removed at once.

        Removal order: starting replicas (not capacity, nothing in flight), then the serving
        replicas named in `remove_first` in that order (the autoscaler lists the idlest
        first), then the newest serving ones. A removed serving replica drains: it leaves the
        serving set (health NOT_SERVING, so clients drop it), refuses new calls with
        UNAVAILABLE, finishes the calls in flight, then exits.

        Raises:
            KeyError: the backend does not run `endpoint`.
        """
        ...

    def replicas(self, endpoint: str) -> list[ReplicaInfo]:
        """The endpoint's replicas now, oldest first; empty for an unknown endpoint."""
        ...

    def drain_replica(self, endpoint: str, replica_id: str) -> None:
        """Removes one replica by draining it, lowering the desired count by one.

        Raises:
            KeyError: no such endpoint or replica.
        """
        ...

    def delete(self, endpoint: str) -> None:
        """Drains and stops every replica of `endpoint` (also ones a previous control left) and
        frees its address. Blocks until they exited (grace period, then SIGKILL)."""
        ...

    def begin_shutdown(self) -> None:
        """No more replacements or starts, and every replica starts draining: the control is
        shutting down (`close()` then waits for them)."""
        ...

    def close(self) -> None:
        """Drains and stops every replica of every endpoint and frees the addresses. Blocks.

        Endpoints are left as they are in the database; the next `ensure` serves them again.
        """
        ...
