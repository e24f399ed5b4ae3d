"""HaproxyRoutes: the runtime API commands that keep HAProxy's routes equal to the table.

A fake HAProxy keeps the map and the servers' addresses and states the way the runtime API
changes them, so each test checks what HAProxy would route, not which strings were sent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.gateway.haproxy_routes import HaproxyRoutes

MAP = Path("/run/endpoints.map")


class FakeHaproxy:
    """The runtime API's map and server commands over an in-memory state."""

    def __init__(self, endpoint_slots: int, replica_slots: int) -> None:
        self.map: dict[str, str] = {}
        self.servers = {
            (f"ep{b}", f"r{s}"): {"addr": "127.0.0.1:1", "state": "maint"}
            for b in range(endpoint_slots)
            for s in range(1, replica_slots + 1)
        }
        self.refuse: re.Pattern[str] | None = None
        self.commands: list[str] = []

    def __call__(self, line: str) -> str:
        self.commands.append(line)
        if self.refuse is not None and self.refuse.search(line):
            return "No such server."
        words = line.split()
        if words[:2] == ["add", "map"]:
            self.map[words[3]] = words[4]
            return ""
        if words[:2] == ["del", "map"]:
            self.map.pop(words[3])
            return ""
        if words[:2] == ["set", "server"]:
            backend, server = words[2].split("/")
            entry = self.servers[(backend, server)]
            if words[3] == "addr":
                entry["addr"] = f"{words[4]}:{words[6]}"
                return f"IP changed from '127.0.0.1' to '{words[4]}' by 'stats socket command'"
            entry["state"] = words[4]
            return ""
        raise AssertionError(f"unexpected command {line!r}")

    def routing(self) -> dict[str, set[str]]:
        """endpoint -> addresses of the ready servers of its backend (what HAProxy routes)."""
        return {
            name: {
                entry["addr"]
                for (b, _), entry in self.servers.items()
                if b == backend and entry["state"] == "ready"
            }
            for name, backend in self.map.items()
        }


def _resolve(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return {"replica-a": "10.0.0.1", "replica-b": "10.0.0.2"}.get(host, host), int(port)


def _routes(haproxy: FakeHaproxy, endpoint_slots: int = 4, replica_slots: int = 4) -> HaproxyRoutes:
    return HaproxyRoutes(haproxy, MAP, endpoint_slots, replica_slots, resolve_address=_resolve)


def test_endpoints_are_routed_to_exactly_their_replicas() -> None:
    haproxy = FakeHaproxy(4, 4)
    routes = _routes(haproxy)
    routes.apply({"iris": ["replica-a:50051", "replica-b:50051"], "other": ["10.0.0.9:7001"]})
    assert haproxy.routing() == {
        "iris": {"10.0.0.1:50051", "10.0.0.2:50051"},
        "other": {"10.0.0.9:7001"},
    }
    assert routes.routed() == {
        "iris": ["10.0.0.1:50051", "10.0.0.2:50051"],
        "other": ["10.0.0.9:7001"],
    }
    haproxy.commands.clear()
    routes.apply({"iris": ["replica-b:50051", "replica-a:50051"], "other": ["10.0.0.9:7001"]})
    assert haproxy.commands == [], "an unchanged table sends nothing"


def test_a_server_is_ready_before_the_endpoint_is_mapped() -> None:
    haproxy = FakeHaproxy(2, 2)
    _routes(haproxy, 2, 2).apply({"iris": ["10.0.0.1:1"]})
    add_map = next(i for i, c in enumerate(haproxy.commands) if c.startswith("add map"))
    ready = next(i for i, c in enumerate(haproxy.commands) if c.endswith("state ready"))
    assert ready < add_map


def test_a_replica_that_left_is_parked_and_its_server_reused_last() -> None:
    haproxy = FakeHaproxy(1, 3)
    routes = _routes(haproxy, 1, 3)
    routes.apply({"iris": ["10.0.0.1:1", "10.0.0.2:1"]})
    routes.apply({"iris": ["10.0.0.2:1"]})
    assert haproxy.routing() == {"iris": {"10.0.0.2:1"}}
    parked = [s for s, e in haproxy.servers.items() if e["addr"] == "10.0.0.1:1"]
    assert [haproxy.servers[s]["state"] for s in parked] == ["maint"]
    routes.apply({"iris": ["10.0.0.2:1", "10.0.0.3:1"]})
    assert haproxy.routing() == {"iris": {"10.0.0.2:1", "10.0.0.3:1"}}
    # The new replica took a never-used server, not the one parked a moment ago.
    assert haproxy.servers[parked[0]]["addr"] == "10.0.0.1:1"


def test_an_endpoint_without_replicas_is_unmapped_and_its_slot_freed() -> None:
    haproxy = FakeHaproxy(1, 2)
    routes = _routes(haproxy, 1, 2)
    routes.apply({"iris": ["10.0.0.1:1"]})
    routes.apply({"iris": []})
    assert haproxy.map == {}
    assert all(e["state"] == "maint" for e in haproxy.servers.values())
    routes.apply({"other": ["10.0.0.5:1"]})  # the only slot is free again
    assert haproxy.routing() == {"other": {"10.0.0.5:1"}}


def test_endpoints_beyond_the_slots_stay_on_the_python_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    haproxy = FakeHaproxy(1, 1)
    routes = _routes(haproxy, 1, 1)
    routes.apply({"a": ["10.0.0.1:1"], "b": ["10.0.0.2:1", "10.0.0.3:1"]})
    routes.apply({"a": ["10.0.0.1:1"], "b": ["10.0.0.2:1", "10.0.0.3:1"]})
    assert haproxy.routing() == {"a": {"10.0.0.1:1"}}
    assert sum("endpoint slots" in r.message for r in caplog.records) == 1, "logged once"
    routes.apply({"b": ["10.0.0.2:1", "10.0.0.3:1"]})  # a left: b takes its slot
    assert list(haproxy.routing()) == ["b"]
    assert len(haproxy.routing()["b"]) == 1, "one server slot: one replica routed"


def test_a_refused_command_is_retried_at_the_next_apply() -> None:
    haproxy = FakeHaproxy(1, 2)
    routes = _routes(haproxy, 1, 2)
    haproxy.refuse = re.compile(r"state ready")
    routes.apply({"iris": ["10.0.0.1:1"]})
    assert haproxy.map == {}, "not mapped while no server is ready"
    haproxy.refuse = None
    routes.apply({"iris": ["10.0.0.1:1"]})
    assert haproxy.routing() == {"iris": {"10.0.0.1:1"}}


def test_an_unresolvable_replica_is_skipped() -> None:
    haproxy = FakeHaproxy(1, 2)

    def resolve(address: str) -> tuple[str, int]:
        if address.startswith("gone"):
            raise OSError("Name or service not known")
        return _resolve(address)

    routes = HaproxyRoutes(haproxy, MAP, 1, 2, resolve_address=resolve)
    routes.apply({"iris": ["gone:50051", "10.0.0.1:50051"]})
    assert haproxy.routing() == {"iris": {"10.0.0.1:50051"}}
