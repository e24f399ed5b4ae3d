"""TableKeeper: a miss gets one describe (rate-limited), a failing source keeps the table."""

from __future__ import annotations

import pytest

from services.gateway.endpoint_source import SourceUnavailable, parse_routes
from services.gateway.routing_table import EndpointState, RoutingTable
from services.gateway.table_keeper import TableKeeper
from services.runtime.errors import NotFound, Unavailable


class Upstream:
    def __init__(self, address: str) -> None:
        self.address = address

    def close(self) -> None:
        pass


class FakeSource:
    """Endpoints in a dict; `down` makes every call fail; counts describes."""

    def __init__(self) -> None:
        self.endpoints: dict[str, EndpointState] = {}
        self.down = False
        self.described: list[str] = []

    def list_endpoints(self) -> list[EndpointState]:
        if self.down:
            raise SourceUnavailable("control down")
        return list(self.endpoints.values())

    def describe(self, name: str) -> EndpointState | None:
        self.described.append(name)
        if self.down:
            raise SourceUnavailable("control down")
        return self.endpoints.get(name)

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def _keeper() -> tuple[TableKeeper[Upstream], FakeSource, Clock]:
    source, clock = FakeSource(), Clock()
    table: RoutingTable[Upstream] = RoutingTable(Upstream, clock=clock)
    keeper = TableKeeper(table, source, refresh_interval_s=1.0, miss_gap_s=0.25, clock=clock)
    return keeper, source, clock


def test_an_endpoint_created_after_the_last_refresh_is_found_by_one_describe() -> None:
    keeper, source, _ = _keeper()
    assert keeper.refresh() and keeper.is_ready
    source.endpoints["new"] = EndpointState("new", "InService", ("127.0.0.1:1",))
    route = keeper.route("new")
    assert [r.address for r in route.replicas] == ["127.0.0.1:1"]
    assert source.described == ["new"]
    keeper.route("new")
    assert source.described == ["new"], "a known endpoint is never described again"


def test_unknown_names_are_described_at_most_once_per_gap() -> None:
    keeper, source, clock = _keeper()
    keeper.refresh()
    for _ in range(5):
        with pytest.raises(NotFound, match="no endpoint named 'ghost'"):
            keeper.route("ghost")
    assert source.described == ["ghost"]
    clock.now += 0.3
    with pytest.raises(NotFound):
        keeper.route("ghost")
    assert source.described == ["ghost", "ghost"]


def test_an_endpoint_without_serving_replicas_is_unavailable() -> None:
    keeper, source, _ = _keeper()
    source.endpoints["iris"] = EndpointState("iris", "Creating", ())
    keeper.refresh()
    with pytest.raises(Unavailable, match="no serving replica \\(status Creating\\)"):
        keeper.route("iris")
    assert source.described == ["iris"]


def test_a_failing_source_keeps_the_last_table() -> None:
    keeper, source, _ = _keeper()
    source.endpoints["iris"] = EndpointState("iris", "InService", ("127.0.0.1:1",))
    assert keeper.refresh()
    source.down = True
    assert not keeper.refresh() and not keeper.refresh()
    assert keeper.refreshes_failed == 2 and keeper.refreshes_ok == 1
    assert keeper.route("iris").replicas[0].address == "127.0.0.1:1"
    # An unknown name cannot be settled while the control is away: retryable, not NOT_FOUND.
    with pytest.raises(Unavailable, match="control could not be asked"):
        keeper.route("other")


def test_parse_routes() -> None:
    states = parse_routes(" iris=127.0.0.1:1, 127.0.0.1:2 ;other=host:3;")
    assert states == [
        EndpointState("iris", "InService", ("127.0.0.1:1", "127.0.0.1:2")),
        EndpointState("other", "InService", ("host:3",)),
    ]
    for bad in ("iris", "=a:1", "iris=", "a=x:1;a=y:1"):
        with pytest.raises(ValueError):
            parse_routes(bad)
