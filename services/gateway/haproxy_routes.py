"""Keeps HAProxy's routes equal to the gateway's routing table, through its runtime API.

HAProxy's configuration declares `endpoint_slots` backends (`ep0`, `ep1`, ...), each with
`replica_slots` servers (`r1`, `r2`, ...) in maintenance at an unused address. Pre-declared
servers are re-pointed rather than added: HAProxy 2.6 keeps no idle connection for servers
added at run time, and a new connection per call costs more than the whole Python hop.

`HaproxyRoutes.apply(wanted)` takes each endpoint's serving replica addresses and issues only
the commands that close the difference:

* an endpoint with replicas holds a backend slot; each replica holds one of its servers,
  pointed at the replica's address and set ready; only then is `name -> ep<N>` put in the
  map, so a mapped endpoint always has a server;
* a replica that left has its server set to maintenance at once (no new call; calls in flight
  finish on their connection);
* an endpoint that left, or has no serving replica, is taken out of the map first (its calls
  go to the Python gateway, which explains), then its servers go to maintenance and its slot
  is free.

Freed slots and servers are handed out again last (first freed, first reused), so one freed a
moment ago is not re-pointed while its last calls finish. An endpoint beyond the backend slots,
or a replica beyond its endpoint's server slots, is not routed by HAProxy: its calls go
through the Python gateway (logged once). A command HAProxy refuses is logged and not
recorded, so the next apply tries again.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from services.gateway.haproxy import replica_server, slot_backend

log = logging.getLogger(__name__)


def resolve(address: str) -> tuple[str, int]:
    """host:port -> the (ip, port) HAProxy connects to (servers are set by address).

    Raises:
        OSError: the host name does not resolve.
        ValueError: no port.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    info = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    return str(info[0][4][0]), int(port)


def _address_set(answer: str) -> bool:
    # "IP changed from ...", "no need to change the addr, port changed from ...", ...; errors
    # read "problem converting ...", "No such server.", "Require 'backend/server'.".
    return ("changed from" in answer or "no need to change" in answer) and "problem" not in answer


class _Slot:
    """One backend slot in use: its servers, which replica each serves, which are free."""

    __slots__ = ("backend", "free_servers", "servers")

    def __init__(self, backend: str, replica_slots: int) -> None:
        self.backend = backend
        self.servers: dict[str, tuple[str, int]] = {}  # server name -> (ip, port)
        self.free_servers = deque(replica_server(n) for n in range(1, replica_slots + 1))


class HaproxyRoutes:
    """The map and servers HAProxy was given, and the commands that change them.

    Args:
        command: runs one runtime API command and returns HAProxy's answer.
        map_path: the map file the configuration routes with.
        endpoint_slots: how many endpoint backends the configuration declares.
        replica_slots: how many servers each of them declares.
        resolve_address: host:port -> (ip, port) (tests pass a fake).
    """

    def __init__(
        self,
        command: Callable[[str], str],
        map_path: Path,
        endpoint_slots: int,
        replica_slots: int,
        *,
        resolve_address: Callable[[str], tuple[str, int]] = resolve,
    ) -> None:
        self._command = command
        self._map = str(map_path)
        self._resolve = resolve_address
        # address -> (ip, port) of the replicas in the table: resolved once, when one joins (the
        # table is re-applied every second; a replica's address keeps its host while it lives).
        self._resolved: dict[str, tuple[str, int]] = {}
        self._replica_slots = replica_slots
        self._free_backends = deque(slot_backend(n) for n in range(endpoint_slots))
        self._slots: dict[str, _Slot] = {}  # endpoint -> its slot
        self._mapped: set[str] = set()
        self._warned: set[str] = set()

    def routed(self) -> dict[str, list[str]]:
        """Each endpoint HAProxy routes, with the `ip:port` of its servers."""
        return {
            name: sorted(f"{ip}:{port}" for ip, port in self._slots[name].servers.values())
            for name in sorted(self._mapped)
        }

    def backend_endpoints(self) -> dict[str, str]:
        """backend name -> endpoint, for every routed endpoint."""
        return {self._slots[name].backend: name for name in self._mapped}

    def apply(self, wanted: Mapping[str, Collection[str]]) -> None:
        """Makes HAProxy route each endpoint of `wanted` to exactly its addresses."""
        listed = {address for addresses in wanted.values() for address in addresses}
        self._resolved = {a: t for a, t in self._resolved.items() if a in listed}
        for name in sorted(self._slots):
            if not wanted.get(name):
                self._release(name)
        for name, addresses in sorted(wanted.items()):
            if addresses:
                self._route(name, addresses)

    # -- steps ---------------------------------------------------------------------------------

    def _run(self, line: str, ok: Callable[[str], bool] = lambda answer: answer == "") -> bool:
        try:
            answer = self._command(line)
        except OSError as err:
            log.warning("haproxy runtime API unreachable for %r: %s", line, err)
            return False
        if not ok(answer):
            log.warning("haproxy refused %r: %s", line, answer)
            return False
        return True

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _release(self, name: str) -> None:
        """Unmaps endpoint `name` and frees its slot."""
        if name in self._mapped:
            if not self._run(f"del map {self._map} {name}"):
                return
            self._mapped.discard(name)
        slot = self._slots[name]
        for server in list(slot.servers):
            if not self._park(slot, server):
                return
        del self._slots[name]
        self._free_backends.append(slot.backend)

    def _route(self, name: str, addresses: Collection[str]) -> None:
        slot = self._slots.get(name)
        if slot is None:
            if not self._free_backends:
                self._warn_once(
                    name,
                    "endpoint %r goes through the Python gateway: HAProxy's %d endpoint slots "
                    "are taken (--haproxy-endpoint-slots)",
                    name,
                    len(self._slots),
                )
                return
            slot = self._slots[name] = _Slot(self._free_backends.popleft(), self._replica_slots)
        wanted: set[tuple[str, int]] = set()
        for address in addresses:
            try:
                target = self._resolved.get(address)
                if target is None:
                    target = self._resolved[address] = self._resolve(address)
                wanted.add(target)
            except (OSError, ValueError) as err:
                self._warn_once(address, "replica %s of %r is not routed: %s", address, name, err)
        for server, target in list(slot.servers.items()):
            if target not in wanted:
                self._park(slot, server)
        for target in sorted(wanted - set(slot.servers.values())):
            if not slot.free_servers:
                self._warn_once(
                    f"{name} replicas",
                    "endpoint %r has more replicas than HAProxy's %d server slots "
                    "(--haproxy-replica-slots); the others get no calls through HAProxy",
                    name,
                    self._replica_slots,
                )
                break
            self._point(slot, slot.free_servers[0], target)
        if slot.servers and name not in self._mapped:
            if self._run(f"add map {self._map} {name} {slot.backend}"):
                self._mapped.add(name)
        elif not slot.servers and name in self._mapped:
            self._release(name)

    def _point(self, slot: _Slot, server: str, target: tuple[str, int]) -> None:
        """Points free server `server` at `target` and makes it take calls."""
        ip, port = target
        where = f"{slot.backend}/{server}"
        if self._run(f"set server {where} addr {ip} port {port}", _address_set) and self._run(
            f"set server {where} state ready"
        ):
            slot.free_servers.remove(server)
            slot.servers[server] = target

    def _park(self, slot: _Slot, server: str) -> bool:
        """Puts `server` in maintenance (no new call) and frees it; False if HAProxy refused."""
        if not self._run(f"set server {slot.backend}/{server} state maint"):
            return False
        del slot.servers[server]
        slot.free_servers.append(server)
        return True
