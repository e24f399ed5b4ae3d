"""The local replica backend: inference replicas as processes on this machine (`--local`).

Replicas are started by `local_process.launch_replica` in their own sessions, and all bind the
endpoint's stable port P (reserved by the control, see `shared_ports`) once their model loaded.
One watcher thread, every `health_interval_s`, probes each replica's own port over
grpc.health.v1 and polls its process:
  * a starting replica turns SERVING when its health does;
  * one that exits before serving is FAILED at once when it wrote a failure file (loading is
    deterministic: a missing `model_fn` stays missing); otherwise (a crash, a signal, no
    SERVING within `start_timeout_s`) it is retried as a new replica, `start_attempts` in all;
  * a serving replica that exits, or fails `unhealthy_checks` probes in a row, is replaced,
    with a backoff that doubles while replacements keep dying young;
  * surplus replicas are drained: SIGTERM (NOT_SERVING, new calls refused, in-flight ones
    finish), SIGKILL after the grace period plus a margin. Starting ones are SIGKILLed.
Started replicas are recorded (id, pid) in the `ReplicaLedger`, so a restarted control stops
those its predecessor left (`local_process.stop_leftover`) before starting fresh ones.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from services.control.backends import (
    EventSink,
    RecordedReplica,
    ReplicaInfo,
    ReplicaLedger,
    ReplicaState,
)
from services.control.backends.health import HealthProber
from services.control.backends.local_process import (
    Leftover,
    LocalBackendSettings,
    ReplicaLaunch,
    ReplicaProcess,
    launch_replica,
    stop_leftover,
)
from services.control.backends.shared_ports import reserve_shared_port

log = logging.getLogger(__name__)

BACKEND_NAME = "local"
_REPLICA_ID = re.compile(r"r-(\d+)")
_SLOT_STATES = (ReplicaState.STARTING, ReplicaState.SERVING, ReplicaState.FAILED)


@dataclass
class _Replica:
    id: str
    model_name: str
    attempt: int
    state: ReplicaState
    proc: ReplicaProcess | None = None  # None for a FAILED tombstone
    started_at: float = 0.0
    served_at: float = 0.0
    grpc_port: int = 0
    metrics_port: int = 0
    failed_checks: int = 0
    failure_reason: str = ""
    kill_reason: str = ""
    kill_at: float | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The replica's process; None for a FAILED tombstone."""
        return None if self.proc is None else self.proc.process


@dataclass
class _EndpointReplicas:
    name: str
    model_name: str
    desired: int
    port: int = 0
    reservation: socket.socket | None = None
    replicas: dict[str, _Replica] = field(default_factory=dict)
    leftovers: list[Leftover] = field(default_factory=list)
    next_number: int = 1
    replace_not_before: float = 0.0
    replace_backoff_s: float = 0.0
    deleting: bool = False


class LocalReplicaBackend:
    """`ReplicaBackend` running replicas as local processes; see the module docstring."""

    name = BACKEND_NAME

    def __init__(
        self, settings: LocalBackendSettings, ledger: ReplicaLedger, on_event: EventSink
    ) -> None:
        """Prepares the backend; no replica starts before `start()`."""
        self._settings = settings
        self._ledger = ledger
        self._on_event = on_event
        self._data_dir = settings.data_dir.resolve()
        self._prober = HealthProber(settings.health_timeout_s)
        self._lock = threading.RLock()
        self._endpoints: dict[str, _EndpointReplicas] = {}
        self._events: list[tuple[str, str]] = []
        self._control_address = ""
        self._shutting_down = False
        self._stop_watcher = threading.Event()
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None

    # ----------------------------------------------------------------- ReplicaBackend

    def start(self, control_address: str) -> None:
        """Starts the watcher; replicas will download their model from `control_address`."""
        with self._lock:
            self._control_address = control_address
        self._watcher = threading.Thread(target=self._watch, name="local-replicas", daemon=True)
        self._watcher.start()

    def ensure(self, endpoint: str, model: str, desired_replicas: int, address: str = "") -> str:
        """See `ReplicaBackend.ensure`."""
        with self._events_flushed(), self._lock:
            group = self._endpoints.get(endpoint)
            if group is None or group.deleting:
                group = self._open(endpoint, model, desired_replicas, address)
            group.model_name = model
            group.desired = desired_replicas
            for replica in list(group.replicas.values()):
                if replica.state is ReplicaState.FAILED:
                    del group.replicas[replica.id]
            group.replace_not_before = 0.0
            result = f"{self._settings.host}:{group.port}"
        self._wake.set()
        return result

    def scale(self, endpoint: str, desired_replicas: int, remove_first: Sequence[str] = ()) -> None:
        """See `ReplicaBackend.scale`. Surplus replicas are signalled before this returns."""
        with self._events_flushed(), self._lock:
            group = self._group(endpoint)
            group.desired = desired_replicas
            # Now rather than at the next tick: the caller chose whom to remove from load
            # numbers that are already getting older.
            self._remove_surplus(group, remove_first)
        self._wake.set()

    def replicas(self, endpoint: str) -> list[ReplicaInfo]:
        """See `ReplicaBackend.replicas`."""
        host = self._settings.host
        with self._lock:
            group = self._endpoints.get(endpoint)
            if group is None:
                return []
            return [
                ReplicaInfo(
                    id=replica.id,
                    model_name=replica.model_name,
                    state=replica.state,
                    address=f"{host}:{replica.grpc_port}" if replica.grpc_port else "",
                    metrics_address=f"{host}:{replica.metrics_port}"
                    if replica.metrics_port
                    else "",
                    failure_reason=replica.failure_reason,
                )
                for replica in group.replicas.values()
            ]

    def drain_replica(self, endpoint: str, replica_id: str) -> None:
        """See `ReplicaBackend.drain_replica`."""
        with self._events_flushed(), self._lock:
            group = self._group(endpoint)
            replica = group.replicas.get(replica_id)
            if replica is None:
                raise KeyError(f"endpoint {endpoint!r} has no replica {replica_id!r}")
            if replica.state in (ReplicaState.STARTING, ReplicaState.SERVING):
                group.desired = max(0, group.desired - 1)
                self._remove(group, replica, "removed on request")
        self._wake.set()

    def delete(self, endpoint: str) -> None:
        """See `ReplicaBackend.delete`. Blocks for up to the grace period plus the margin."""
        with self._events_flushed(), self._lock:
            group = self._endpoints.get(endpoint)
            if group is None:
                # Not served by this run (a Failed endpoint after a restart): still stop what a
                # previous run may have left.
                group = _EndpointReplicas(endpoint, "", 0)
                self._endpoints[endpoint] = group
                self._adopt_leftovers(group)
            group.deleting = True
            self._signal_all(group)
        self._wait_stopped([group])
        with self._lock:
            if self._endpoints.get(endpoint) is group:
                del self._endpoints[endpoint]
        self._release(group)

    def begin_shutdown(self) -> None:
        """See `ReplicaBackend.begin_shutdown`."""
        with self._lock:
            self._shutting_down = True

    def close(self) -> None:
        """See `ReplicaBackend.close`. Blocks for up to the grace period plus the margin."""
        self.begin_shutdown()
        self._stop_watcher.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(timeout=self._settings.health_timeout_s + 5.0)
        with self._events_flushed(), self._lock:
            groups = list(self._endpoints.values())
            for group in groups:
                group.deleting = True
                self._signal_all(group)
        self._wait_stopped(groups)
        with self._lock:
            self._endpoints.clear()
        for group in groups:
            self._release(group)
        self._prober.close()
        log.info("stopped the replicas of %d endpoint(s)", len(groups))

    # ----------------------------------------------------------------- opening, closing

    def _group(self, endpoint: str) -> _EndpointReplicas:
        group = self._endpoints.get(endpoint)
        if group is None or group.deleting:
            raise KeyError(f"the local backend does not run endpoint {endpoint!r}")
        return group

    def _open(self, endpoint: str, model: str, desired: int, address: str) -> _EndpointReplicas:
        group = _EndpointReplicas(endpoint, model, desired)
        wanted = _port_of(address)
        try:
            group.reservation = reserve_shared_port(self._settings.host, wanted)
        except OSError as err:
            # Another program took the port while no replica held it: moving beats not
            # serving, and the new address is in DescribeEndpoint and the events.
            group.reservation = reserve_shared_port(self._settings.host, 0)
            self._event(
                endpoint,
                f"stable address {address} is no longer free ({err.strerror}); "
                f"the endpoint moved to port {group.reservation.getsockname()[1]}",
            )
        group.port = int(group.reservation.getsockname()[1])
        self._adopt_leftovers(group)
        self._endpoints[endpoint] = group
        return group

    def _adopt_leftovers(self, group: _EndpointReplicas) -> None:
        """Starts stopping the replicas a previous control run recorded for this endpoint."""
        for recorded in self._ledger.recorded_replicas(group.name, BACKEND_NAME):
            match = _REPLICA_ID.fullmatch(recorded.replica_id)
            if match:  # new ids continue after the old ones, so logs never interleave
                group.next_number = max(group.next_number, int(match.group(1)) + 1)
            leftover = stop_leftover(
                group.name, recorded.replica_id, recorded.handle, self._drain_timeout_s()
            )
            if leftover is None:
                self._ledger.forget_replica(group.name, recorded.replica_id)
                continue
            group.leftovers.append(leftover)
            self._event(
                group.name,
                f"stopping replica {leftover.replica_id} (pid {leftover.pid}), left running "
                "by a previous control",
            )

    def _signal_all(self, group: _EndpointReplicas) -> None:
        for replica in group.replicas.values():
            if replica.state in (ReplicaState.STARTING, ReplicaState.SERVING):
                self._remove(group, replica, "")

    def _wait_stopped(self, groups: list[_EndpointReplicas]) -> None:
        """Waits for every replica and leftover of `groups` to exit, killing the overdue."""
        while True:
            now = time.monotonic()
            with self._events_flushed(), self._lock:
                pending = 0
                for group in groups:
                    self._reap(group, now)
                    pending += len(group.replicas) + len(group.leftovers)
            if not pending:
                return
            time.sleep(0.05)

    def _reap(self, group: _EndpointReplicas, now: float) -> None:
        """During delete/close: forgets exited replicas, SIGKILLs overdue ones."""
        for replica in list(group.replicas.values()):
            process = replica.process
            if process is None or process.poll() is not None:
                self._forget(group, replica)
                continue
            if replica.kill_at is not None and now >= replica.kill_at:
                process.kill()
                replica.kill_at = None
        self._check_leftovers(group)

    def _release(self, group: _EndpointReplicas) -> None:
        if group.reservation is not None:
            group.reservation.close()
            group.reservation = None

    # ----------------------------------------------------------------- the watcher

    def _watch(self) -> None:
        interval = self._settings.health_interval_s
        while not self._stop_watcher.is_set():
            try:
                self._tick()
            except Exception:
                # One bad tick must not end supervision of every endpoint.
                log.exception("local replica watcher failed; continuing")
            self._wake.wait(interval)
            self._wake.clear()

    def _tick(self) -> None:
        with self._lock:
            probes = {
                f"{self._settings.host}:{replica.grpc_port}"
                for group in self._endpoints.values()
                if not group.deleting
                for replica in self._read_ports(group)
            }
        healthy = self._prober.check_all(probes)
        now = time.monotonic()
        with self._events_flushed(), self._lock:
            for group in list(self._endpoints.values()):
                if group.deleting:
                    continue
                self._observe(group, healthy, now)
                self._check_leftovers(group)
                if not self._shutting_down:
                    self._converge(group, now)

    def _read_ports(self, group: _EndpointReplicas) -> Iterator[_Replica]:
        """Replicas to probe; reads the port file of those that just bound."""
        for replica in group.replicas.values():
            if replica.state not in (ReplicaState.STARTING, ReplicaState.SERVING):
                continue
            if not replica.grpc_port and replica.proc is not None:
                ports = replica.proc.read_ports()
                replica.grpc_port = ports.get("grpc", 0)
                replica.metrics_port = ports.get("metrics", 0)
            if replica.grpc_port:
                yield replica

    def _observe(self, group: _EndpointReplicas, healthy: dict[str, bool], now: float) -> None:
        host = self._settings.host
        for replica in list(group.replicas.values()):
            process = replica.process
            if process is None:
                continue  # a FAILED tombstone
            code = process.poll()
            if code is not None:
                self._on_exit(group, replica, code, now)
                continue
            is_healthy = healthy.get(f"{host}:{replica.grpc_port}", False)
            if replica.state is ReplicaState.STARTING:
                if replica.grpc_port and is_healthy:
                    replica.state = ReplicaState.SERVING
                    replica.served_at = now
                    self._event(
                        group.name,
                        f"replica {replica.id} serving model {replica.model_name} "
                        f"at {host}:{replica.grpc_port}",
                    )
                elif now - replica.started_at > self._settings.start_timeout_s:
                    replica.kill_reason = (
                        f"not SERVING within {self._settings.start_timeout_s:.0f}s "
                        "(--replica-start-timeout-s)"
                    )
                    process.kill()
            elif replica.state is ReplicaState.SERVING:
                replica.failed_checks = 0 if is_healthy else replica.failed_checks + 1
                if replica.failed_checks >= self._settings.unhealthy_checks:
                    self._event(
                        group.name,
                        f"replica {replica.id} failed {replica.failed_checks} health checks "
                        "in a row; replacing it",
                    )
                    self._remove(group, replica, "")
                    self._schedule_replacement(group, replica, now)
            elif replica.kill_at is not None and now >= replica.kill_at:
                log.warning("replica %s/%s overran its drain; killing it", group.name, replica.id)
                process.kill()
                replica.kill_at = None

    def _on_exit(self, group: _EndpointReplicas, replica: _Replica, code: int, now: float) -> None:
        state = replica.state
        self._forget(group, replica)
        if state is ReplicaState.DRAINING or self._shutting_down:
            self._event(group.name, f"replica {replica.id} stopped (exit code {code})")
            return
        if state is ReplicaState.SERVING:
            self._event(group.name, f"replica {replica.id} exited with {code}; replacing it")
            self._schedule_replacement(group, replica, now)
            return
        # Exited before serving.
        explained = replica.proc.failure_text() if replica.proc is not None else ""
        if explained:
            reason = f"replica {replica.id} could not load model {replica.model_name}: {explained}"
        else:
            cause = replica.kill_reason or f"exited with {code} before serving"
            tail = replica.proc.log_tail() if replica.proc is not None else ""
            reason = f"replica {replica.id} {cause}; last log lines: {tail}"
        if not explained and replica.attempt < self._settings.start_attempts:
            successor = self._spawn(group, replica.model_name, replica.attempt + 1)
            self._event(
                group.name,
                f"replica {replica.id} {replica.kill_reason or f'exited with {code}'} before "
                f"serving; retrying as {successor.id} (attempt {successor.attempt} of "
                f"{self._settings.start_attempts})",
            )
            return
        group.replicas[replica.id] = _Replica(
            id=replica.id,
            model_name=replica.model_name,
            attempt=replica.attempt,
            state=ReplicaState.FAILED,
            failure_reason=reason,
        )
        self._event(group.name, reason)

    def _schedule_replacement(
        self, group: _EndpointReplicas, replica: _Replica, now: float
    ) -> None:
        # Replacements of replicas that keep dying young back off, so a crash loop does not
        # burn the machine; one that served long enough resets the backoff.
        if replica.served_at and now - replica.served_at >= self._settings.stable_after_s:
            group.replace_backoff_s = 0.0
        elif group.replace_backoff_s == 0.0:
            group.replace_backoff_s = self._settings.replace_backoff_s
        else:
            group.replace_backoff_s = min(
                group.replace_backoff_s * 2, self._settings.max_replace_backoff_s
            )
        group.replace_not_before = now + group.replace_backoff_s

    def _check_leftovers(self, group: _EndpointReplicas) -> None:
        for leftover in list(group.leftovers):
            if leftover.is_gone():
                group.leftovers.remove(leftover)
                self._ledger.forget_replica(group.name, leftover.replica_id)
                self._event(group.name, f"replica {leftover.replica_id} of the previous run exited")

    def _slots(self, group: _EndpointReplicas) -> list[_Replica]:
        """Replicas of the target model that count toward `desired` (failed ones hold a slot)."""
        return [
            r
            for r in group.replicas.values()
            if r.model_name == group.model_name and r.state in _SLOT_STATES
        ]

    def _remove_surplus(self, group: _EndpointReplicas, remove_first: Sequence[str]) -> None:
        """Removes replicas of the target model beyond `desired`, cheapest loss first.

        Failed tombstones go first, then starting replicas (newest first), then the serving
        ones named in `remove_first` (in its order), then the newest serving ones.
        """
        slots = self._slots(group)
        surplus = len(slots) - group.desired
        if surplus <= 0:
            return
        preferred = {replica_id: rank for rank, replica_id in enumerate(remove_first)}
        order = {ReplicaState.FAILED: 0, ReplicaState.STARTING: 1, ReplicaState.SERVING: 2}
        ranked = sorted(
            slots,
            key=lambda r: (order[r.state], preferred.get(r.id, len(preferred)), -r.started_at),
        )
        for replica in ranked[:surplus]:
            if replica.state is ReplicaState.FAILED:
                del group.replicas[replica.id]
            else:
                self._remove(group, replica, "scaled in")

    def _converge(self, group: _EndpointReplicas, now: float) -> None:
        """Starts missing replicas of the target model and drains surplus and old ones."""
        active = (ReplicaState.STARTING, ReplicaState.SERVING)
        for replica in list(group.replicas.values()):
            if replica.state is ReplicaState.FAILED and replica.model_name != group.model_name:
                del group.replicas[replica.id]
        current = [r for r in group.replicas.values() if r.model_name == group.model_name]
        self._remove_surplus(group, ())
        missing = group.desired - len(self._slots(group))
        if missing > 0 and now >= group.replace_not_before and self._control_address:
            for _ in range(missing):
                self._spawn(group, group.model_name, attempt=1)
        # Replicas of a previous model keep serving until enough new ones serve (no loss).
        serving_new = sum(1 for r in current if r.state is ReplicaState.SERVING)
        old = [
            r
            for r in group.replicas.values()
            if r.model_name != group.model_name and r.state in active
        ]
        allowed_old = max(0, group.desired - serving_new)
        old.sort(key=lambda r: (r.state is ReplicaState.SERVING, r.started_at))
        for replica in old[: max(0, len(old) - allowed_old)]:
            self._remove(group, replica, f"replaced by model {group.model_name}")

    # ----------------------------------------------------------------- processes

    def _spawn(self, group: _EndpointReplicas, model: str, attempt: int) -> _Replica:
        replica_id = f"r-{group.next_number}"
        group.next_number += 1
        started = launch_replica(
            ReplicaLaunch(
                data_dir=self._data_dir,
                control_address=self._control_address,
                endpoint_name=group.name,
                model_name=model,
                replica_id=replica_id,
                host=self._settings.host,
                shared_port=group.port,
                shutdown_grace_s=self._settings.shutdown_grace_s,
                auth_token=self._settings.auth_token,
                extra_args=self._settings.extra_args,
            )
        )
        replica = _Replica(
            id=replica_id,
            model_name=model,
            attempt=attempt,
            state=ReplicaState.STARTING,
            proc=started,
            started_at=time.monotonic(),
        )
        group.replicas[replica_id] = replica
        pid = started.process.pid
        self._ledger.record_replica(
            RecordedReplica(
                endpoint_name=group.name,
                replica_id=replica_id,
                backend=BACKEND_NAME,
                handle=str(pid),
                model_name=model,
                started_at=time.time(),
            )
        )
        self._event(group.name, f"replica {replica_id} started (model {model}, pid {pid})")
        return replica

    def _remove(self, group: _EndpointReplicas, replica: _Replica, why: str) -> None:
        """Drains a serving replica (SIGTERM) or kills a starting one (nothing in flight)."""
        process = replica.process
        if process is None or process.poll() is not None:
            return
        if replica.state is ReplicaState.STARTING:
            process.kill()
        else:
            process.send_signal(signal.SIGTERM)
            replica.kill_at = time.monotonic() + self._drain_timeout_s()
        replica.state = ReplicaState.DRAINING
        if why:
            self._event(group.name, f"draining replica {replica.id} ({why})")

    def _forget(self, group: _EndpointReplicas, replica: _Replica) -> None:
        group.replicas.pop(replica.id, None)
        self._ledger.forget_replica(group.name, replica.id)
        if replica.grpc_port:
            self._prober.forget(f"{self._settings.host}:{replica.grpc_port}")

    def _drain_timeout_s(self) -> float:
        return self._settings.shutdown_grace_s + self._settings.kill_margin_s

    # ----------------------------------------------------------------- events

    def _event(self, endpoint: str, message: str) -> None:
        """Queues an event; delivered once the lock is released (the sink writes the DB)."""
        log.info("endpoint %s: %s", endpoint, message)
        self._events.append((endpoint, message))

    @contextlib.contextmanager
    def _events_flushed(self) -> Iterator[None]:
        """Delivers the events queued inside the block after it (and its lock) ended."""
        try:
            yield
        finally:
            with self._lock:
                events, self._events = self._events, []
            for endpoint, message in events:
                try:
                    self._on_event(endpoint, message)
                except Exception:
                    log.exception("recording an event of endpoint %s failed", endpoint)


def _port_of(address: str) -> int:
    _host, _, port = address.rpartition(":")
    return int(port) if port.isdigit() else 0
