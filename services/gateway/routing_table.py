"""The gateway's routing table: each endpoint's serving replicas, and which one gets the next call.

`RoutingTable` maps endpoint names to `Route`s. A route holds the replicas that were SERVING
at the last look, each with its upstream connection (made once by the injected `connect`, kept
while the replica stays, closed once it left and its last call ended) and its count of
outstanding calls. `acquire` picks a replica by the power of two choices over outstanding
calls (two distinct replicas at random, the less busy one wins; with two replicas that is
"least outstanding, ties broken at random"), skipping replicas ejected for a moment after they
answered UNAVAILABLE; `release` gives the call back.

The table is replaced as a whole from the control's list (`replace_all`) or per endpoint from
one describe (`replace_one`). No grpc here: an upstream is whatever `connect` returns.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Upstream(Protocol):
    """A connection to one replica; the table only ever closes it."""

    def close(self) -> None:
        """Releases the connection."""


U = TypeVar("U", bound=Upstream)


@dataclass(frozen=True)
class EndpointState:
    """What the table needs to know about an endpoint: its status and its serving replicas.

    Attributes:
        name: the endpoint name.
        status: SageMaker's endpoint status (InService, Creating, ...), for messages.
        addresses: host:port of each replica that is SERVING, in no particular order.
    """

    name: str
    status: str
    addresses: tuple[str, ...]


class Replica(Generic[U]):
    """One serving replica: its address, its upstream and the calls it has in flight."""

    __slots__ = ("address", "ejected_until", "outstanding", "retired", "upstream")

    def __init__(self, address: str, upstream: U) -> None:
        self.address = address
        self.upstream = upstream
        self.outstanding = 0
        # monotonic time before which it gets no new call while another replica can take it.
        self.ejected_until = 0.0
        # Left the table: closed as soon as its last outstanding call ends.
        self.retired = False

    def __repr__(self) -> str:
        return f"Replica({self.address!r}, outstanding={self.outstanding})"


class Route(Generic[U]):
    """An endpoint's entry: its status and its serving replicas (replaced, never mutated)."""

    __slots__ = ("name", "replicas", "status")

    def __init__(self, name: str, status: str, replicas: tuple[Replica[U], ...]) -> None:
        self.name = name
        self.status = status
        self.replicas = replicas

    def __repr__(self) -> str:
        return f"Route({self.name!r}, {self.status}, {list(self.replicas)})"


class RoutingTable(Generic[U]):
    """Endpoints to serving replicas, with per-replica outstanding counts; thread-safe.

    Lookups read a dict without locking (a route is replaced whole, never changed in place);
    the outstanding counts and membership changes share one lock, held for a few operations.

    Args:
        connect: makes the upstream of a replica address; called once per replica joining.
        on_removed: told the names of endpoints that left the table (to drop their metrics).
        on_replaced: called after every `replace_all`/`replace_one` (e.g. to mirror the table
            into HAProxy); it must return quickly.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        connect: Callable[[str], U],
        *,
        on_removed: Callable[[Collection[str]], None] | None = None,
        on_replaced: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._on_removed = on_removed
        self._on_replaced = on_replaced
        self._clock = clock
        self._routes: dict[str, Route[U]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Route[U] | None:
        """The route of endpoint `name`, or None when it is not in the table."""
        return self._routes.get(name)

    def names(self) -> list[str]:
        """The endpoints in the table."""
        return list(self._routes)

    def routes(self) -> list[Route[U]]:
        """Every route (a snapshot), e.g. to export outstanding counts."""
        return list(self._routes.values())

    # -- choosing a replica --------------------------------------------------------------------

    def acquire(self, route: Route[U], exclude: Collection[Replica[U]] = ()) -> Replica[U] | None:
        """Picks a replica of `route` for one call and counts the call as outstanding on it.

        Replicas in `exclude` (tried already) are never picked; ejected ones only when no
        other is left. Returns None when no replica can be picked. Call `release` after.
        """
        replicas = route.replicas
        if exclude:
            replicas = tuple(r for r in replicas if r not in exclude)
        if len(replicas) > 1:
            now = self._clock()
            healthy = [r for r in replicas if r.ejected_until <= now]
            if healthy:
                replicas = tuple(healthy)
        count = len(replicas)
        if count == 0:
            return None
        if count == 1:
            chosen = replicas[0]
        else:
            # Power of two choices: two distinct replicas at random, the less busy wins; the
            # first drawn wins a tie, so ties are broken at random too.
            first, second = random.sample(replicas, 2)
            chosen = second if second.outstanding < first.outstanding else first
        with self._lock:
            chosen.outstanding += 1
        return chosen

    def release(self, replica: Replica[U]) -> None:
        """Ends one call on `replica`; closes its upstream if it left the table meanwhile."""
        with self._lock:
            replica.outstanding -= 1
            close = replica.retired and replica.outstanding == 0
        if close:
            replica.upstream.close()

    def eject(self, replica: Replica[U], seconds: float) -> None:
        """Gives `replica` no new call for `seconds` while another replica can take it."""
        replica.ejected_until = self._clock() + seconds

    # -- membership ----------------------------------------------------------------------------

    def replace_all(self, states: Iterable[EndpointState]) -> None:
        """Makes the table exactly `states` (the control's full list)."""
        wanted = {state.name: state for state in states}
        with self._lock:
            removed = [name for name in self._routes if name not in wanted]
            to_close = self._apply_locked(wanted, removed)
        self._finish(to_close, removed)

    def replace_one(self, name: str, state: EndpointState | None) -> None:
        """Sets one endpoint's entry from a describe; None removes it (the endpoint is gone)."""
        with self._lock:
            if state is None:
                removed = [name] if name in self._routes else []
                to_close = self._apply_locked({}, removed)
            else:
                removed = []
                to_close = self._apply_locked({name: state}, removed)
        self._finish(to_close, removed)

    def close(self) -> None:
        """Empties the table and closes every upstream not in use (the rest close when idle)."""
        with self._lock:
            removed = list(self._routes)
            to_close = self._apply_locked({}, removed)
        self._finish(to_close, removed)

    def _apply_locked(
        self, wanted: Mapping[str, EndpointState], removed: list[str]
    ) -> list[Replica[U]]:
        """Updates the routes in `wanted`, drops `removed`; returns replicas to close now."""
        leaving: list[Replica[U]] = []
        for name in removed:
            leaving.extend(self._routes.pop(name).replicas)
        for name, state in wanted.items():
            current = self._routes.get(name)
            known = {r.address: r for r in current.replicas} if current else {}
            addresses = sorted(set(state.addresses))
            kept = tuple(known.get(a) or Replica(a, self._connect(a)) for a in addresses)
            if current is not None:
                leaving.extend(r for r in current.replicas if r.address not in state.addresses)
                if current.status == state.status and current.replicas == kept:
                    continue
            self._routes[name] = Route(name, state.status, kept)
        to_close = []
        for replica in leaving:
            replica.retired = True
            if replica.outstanding == 0:
                to_close.append(replica)
        return to_close

    def _finish(self, to_close: list[Replica[U]], removed: list[str]) -> None:
        for replica in to_close:
            replica.upstream.close()
        if removed and self._on_removed is not None:
            self._on_removed(removed)
        if self._on_replaced is not None:
            self._on_replaced()
