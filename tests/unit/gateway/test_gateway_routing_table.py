"""RoutingTable: power of two choices over outstanding calls, ejection, membership, closing."""

from __future__ import annotations

import collections

from services.gateway.routing_table import EndpointState, RoutingTable


class FakeUpstream:
    """Records whether the table closed it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.closed = False

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _table(clock: Clock | None = None) -> tuple[RoutingTable[FakeUpstream], list[list[str]]]:
    removed: list[list[str]] = []
    table: RoutingTable[FakeUpstream] = RoutingTable(
        FakeUpstream,
        on_removed=lambda names: removed.append(sorted(names)),
        clock=clock or Clock(),
    )
    return table, removed


def _state(name: str, *addresses: str, status: str = "InService") -> EndpointState:
    return EndpointState(name=name, status=status, addresses=addresses)


def test_idle_replicas_share_calls_at_random() -> None:
    table, _ = _table()
    table.replace_all([_state("iris", "a:1", "b:1", "c:1")])
    route = table.get("iris")
    assert route is not None
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(600):
        replica = table.acquire(route)
        assert replica is not None
        counts[replica.address] += 1
        table.release(replica)
    assert set(counts) == {"a:1", "b:1", "c:1"}
    assert min(counts.values()) > 100, counts


def test_the_less_busy_of_two_replicas_gets_the_call() -> None:
    table, _ = _table()
    table.replace_all([_state("iris", "a:1", "b:1")])
    route = table.get("iris")
    assert route is not None
    busy = table.acquire(route)
    assert busy is not None
    # With two replicas both are drawn every time: the idle one always wins.
    for _ in range(50):
        replica = table.acquire(route)
        assert replica is not None and replica is not busy
        table.release(replica)
    assert busy.outstanding == 1
    table.release(busy)
    assert busy.outstanding == 0


def test_tried_replicas_are_excluded_and_ejected_ones_avoided() -> None:
    clock = Clock()
    table, _ = _table(clock)
    table.replace_all([_state("iris", "a:1", "b:1")])
    route = table.get("iris")
    assert route is not None
    first = table.acquire(route)
    assert first is not None
    table.release(first)
    other = table.acquire(route, exclude=[first])
    assert other is not None and other is not first
    table.release(other)
    assert table.acquire(route, exclude=[first, other]) is None

    table.eject(first, 1.0)
    picks = set()
    for _ in range(20):
        replica = table.acquire(route)
        assert replica is not None
        picks.add(replica.address)
        table.release(replica)
    assert picks == {other.address}
    # Ejected replicas still serve when nothing else can.
    only = table.acquire(route, exclude=[other])
    assert only is first
    table.release(only)
    clock.now += 1.5
    assert len({table.acquire(route).address for _ in range(40)}) == 2  # type: ignore[union-attr]


def test_a_refresh_keeps_known_replicas_and_closes_those_that_left() -> None:
    table, removed = _table()
    table.replace_all([_state("iris", "a:1", "b:1"), _state("other", "c:1")])
    iris = table.get("iris")
    assert iris is not None
    a, b = iris.replicas
    in_flight = table.acquire(iris, exclude=[a])
    assert in_flight is b

    table.replace_all([_state("iris", "a:1", "d:1")])
    updated = table.get("iris")
    assert updated is not None
    assert updated.replicas[0] is a and not a.upstream.closed  # same channel, reused
    assert [r.address for r in updated.replicas] == ["a:1", "d:1"]
    assert table.get("other") is None and removed == [["other"]]
    # b left while a call was on it: closed only once that call ends.
    assert not b.upstream.closed
    table.release(b)
    assert b.upstream.closed


def test_describe_updates_or_removes_one_endpoint() -> None:
    table, removed = _table()
    table.replace_all([_state("iris", "a:1")])
    table.replace_one("new", _state("new", status="Creating"))
    new = table.get("new")
    assert new is not None and new.replicas == () and new.status == "Creating"
    assert table.get("iris") is not None  # a describe touches only its endpoint
    a = table.get("iris").replicas[0]  # type: ignore[union-attr]
    table.replace_one("iris", None)
    assert table.get("iris") is None and a.upstream.closed and removed == [["iris"]]
    table.replace_one("ghost", None)
    assert removed == [["iris"]]


def test_close_empties_the_table() -> None:
    table, removed = _table()
    table.replace_all([_state("iris", "a:1", "b:1")])
    replicas = table.get("iris").replicas  # type: ignore[union-attr]
    table.close()
    assert table.names() == [] and all(r.upstream.closed for r in replicas)
    assert removed == [["iris"]]
