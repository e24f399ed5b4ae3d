"""Keeps the routing table fresh without putting the control on the request path.

A background thread re-reads the whole table (`list_endpoints`) every `refresh_interval_s`; a
failed read keeps the last table, so calls go on while the control is away. A call for an
endpoint that is not in the table, or that has no serving replica, gets one immediate
`describe` before it is answered (an endpoint created a moment ago is found at once), at most
once per `miss_gap_s` per name so that a caller hammering an unknown name costs the control
little.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic

from services.gateway.endpoint_source import EndpointSource, SourceUnavailable
from services.gateway.routing_table import Route, RoutingTable, U
from services.runtime.components import StepLoop
from services.runtime.errors import NotFound, Unavailable

log = logging.getLogger(__name__)

# Names described recently are remembered this many at most; then the memory starts over
# (it only rate-limits describes, forgetting early costs one describe more).
_MAX_REMEMBERED_MISSES = 10_000


class TableKeeper(Generic[U]):
    """Feeds a `RoutingTable` from an `EndpointSource` and answers route lookups.

    Args:
        table: the table to keep.
        source: where endpoints are read.
        refresh_interval_s: pause between two full reads.
        miss_gap_s: least time between two describes of one name on a miss.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        table: RoutingTable[U],
        source: EndpointSource,
        *,
        refresh_interval_s: float,
        miss_gap_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self._source = source
        self._interval_s = refresh_interval_s
        self._miss_gap_s = miss_gap_s
        self._clock = clock
        self._described_at: dict[str, float] = {}
        # Refreshes every interval; `start` did the first one itself.
        self._loop = StepLoop("gateway-table", self.step, refresh_interval_s, step_at_start=False)
        self._failing = False
        self.last_success: float | None = None
        self.refreshes_ok = 0
        self.refreshes_failed = 0

    @property
    def is_ready(self) -> bool:
        """True once the table has been read at least once."""
        return self.last_success is not None

    # -- refreshing ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Reads the whole table now; returns False (keeping the old table) when that failed."""
        try:
            states = self._source.list_endpoints()
        except SourceUnavailable as err:
            self.refreshes_failed += 1
            if not self._failing:  # one line per outage, not one per second
                log.warning("routing table not refreshed, keeping the last one: %s", err)
                self._failing = True
            return False
        self.table.replace_all(states)
        self.refreshes_ok += 1
        self.last_success = self._clock()
        if self._failing:
            log.info("routing table refreshed again (%d endpoints)", len(states))
            self._failing = False
        return True

    def start(self) -> None:
        """Reads the table once (a failure is logged, not raised) and starts the thread."""
        self.refresh()
        self._loop.start()

    def step(self) -> bool:
        """One pass of the refresh loop (`refresh`); the loop runs it every interval."""
        return self.refresh()

    def stop(self) -> None:
        """Stops the thread and closes the source; the table itself stays as it is."""
        self._loop.stop(timeout_s=self._interval_s + 5)
        self._source.close()

    # -- lookups -------------------------------------------------------------------------------

    def route(self, name: str) -> Route[U]:
        """The route of endpoint `name`, with at least one serving replica.

        Raises:
            NotFound: the endpoint does not exist (not in the table, nor on a fresh describe).
            Unavailable: it has no serving replica, or the control could not be asked.
        """
        route = self.table.get(name)
        if route is not None and route.replicas:
            return route
        return self._route_after_miss(name, route)

    def _route_after_miss(self, name: str, route: Route[U] | None) -> Route[U]:
        now = self._clock()
        last = self._described_at.get(name)
        if last is None or now - last >= self._miss_gap_s:
            if len(self._described_at) >= _MAX_REMEMBERED_MISSES:
                self._described_at.clear()
            self._described_at[name] = now
            try:
                self.table.replace_one(name, self._source.describe(name))
            except SourceUnavailable as err:
                if route is None:
                    raise Unavailable(
                        f"endpoint {name!r} is not in the gateway's routing table and the "
                        f"control could not be asked about it ({err}); retry shortly"
                    ) from None
            route = self.table.get(name)
        if route is None:
            raise NotFound(f"no endpoint named {name!r}")
        if not route.replicas:
            raise Unavailable(
                f"endpoint {name!r} has no serving replica (status {route.status}); retry shortly"
            )
        return route
