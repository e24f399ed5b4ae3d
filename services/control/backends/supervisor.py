"""Replica supervision shared by every backend: each endpoint's replicas converge on a target.

`ReplicaSupervisor` implements `ReplicaBackend` over a `ReplicaRuntime` (local processes,
Docker containers). One watcher thread, every `health_interval_s`, probes each replica's own
address over grpc.health.v1 and polls whether it still runs:
  * a starting replica turns SERVING when its health does;
  * one that exits before serving is FAILED at once when it explained why (loading is
    deterministic: a missing `model_fn` stays missing); otherwise (a crash, a signal, no
    SERVING within `start_timeout_s`) it is retried as a new replica, `start_attempts` in all;
  * a serving replica that exits, or fails `unhealthy_checks` probes in a row, is replaced,
    with a backoff that doubles while replacements keep dying young;
  * surplus replicas are drained: SIGTERM (NOT_SERVING, new calls refused, in-flight ones
    finish), SIGKILL after the grace period plus a margin. Starting ones are SIGKILLed.
Started replicas are recorded (id, handle) in the `ReplicaLedger`, so a restarted control stops
those its predecessor left (`ReplicaRuntime.stop_leftovers`) before starting fresh ones.
"""

from __future__ import annotations

import contextlib
import logging
import re
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
from services.control.backends.replica_runtime import (
    EndpointAddress,
    LaunchError,
    Leftover,
    ReplicaRuntime,
    ReplicaSpec,
    RunningReplica,
    SupervisionSettings,
    release_all,
)
from services.runtime.components import StepLoop

log = logging.getLogger(__name__)

_REPLICA_ID = re.compile(r"r-(\d+)")
_SLOT_STATES = (ReplicaState.STARTING, ReplicaState.SERVING, ReplicaState.FAILED)


@dataclass
class _Replica:
    id: str
    model_name: str
    attempt: int
    state: ReplicaState
    running: RunningReplica | None = None  # None for a FAILED tombstone
    started_at: float = 0.0
    served_at: float = 0.0
    address: str = ""
    metrics_address: str = ""
    failed_checks: int = 0
    failure_reason: str = ""
    kill_reason: str = ""
    kill_at: float | None = None


@dataclass
class _EndpointReplicas:
    name: str
    model_name: str
    desired: int
    address: EndpointAddress | None = None
    replicas: dict[str, _Replica] = field(default_factory=dict)
    leftovers: list[Leftover] = field(default_factory=list)
    next_number: int = 1
    replace_not_before: float = 0.0
    replace_backoff_s: float = 0.0
    deleting: bool = False


class ReplicaSupervisor:
    """`ReplicaBackend` over a `ReplicaRuntime`; see the module docstring.

    Args:
        name: the backend's name, also the ledger's `backend` of its replicas.
        runtime: what starts and stops replicas.
        settings: supervision timings.
        ledger: durable record of started replicas.
        on_event: receives noteworthy changes as sentences.
    """

    def __init__(
        self,
        name: str,
        runtime: ReplicaRuntime,
        settings: SupervisionSettings,
        ledger: ReplicaLedger,
        on_event: EventSink,
    ) -> None:
        """Prepares the backend; no replica starts before `start()`."""
        self.name = name
        self._runtime = runtime
        self._settings = settings
        self._ledger = ledger
        self._on_event = on_event
        self._prober = HealthProber(settings.health_timeout_s, settings.tls)
        self._lock = threading.RLock()
        self._endpoints: dict[str, _EndpointReplicas] = {}
        self._events: list[tuple[str, str]] = []
        # Exited replicas whose remains (a container, a work dir) are removed after the lock.
        self._to_release: list[RunningReplica] = []
        self._control_address = ""
        self._shutting_down = False
        # Probes, replaces and reaps replicas every health interval, and at once when woken.
        self._watcher = StepLoop(f"{name}-replicas", self.step, settings.health_interval_s)

    # ----------------------------------------------------------------- ReplicaBackend

    def start(self, control_address: str) -> None:
        """Starts the watcher; replicas will download their model from `control_address`."""
        with self._lock:
            self._control_address = control_address
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
            assert group.address is not None
            result = group.address.address
        self._watcher.wake()
        return result

    def scale(self, endpoint: str, desired_replicas: int, remove_first: Sequence[str] = ()) -> None:
        """See `ReplicaBackend.scale`. Surplus replicas are signalled before this returns."""
        with self._events_flushed(), self._lock:
            group = self._group(endpoint)
            group.desired = desired_replicas
            # Now rather than at the next tick: the caller chose whom to remove from load
            # numbers that are already getting older.
            self._remove_surplus(group, remove_first)
        self._watcher.wake()

    def replicas(self, endpoint: str) -> list[ReplicaInfo]:
        """See `ReplicaBackend.replicas`."""
        with self._lock:
            group = self._endpoints.get(endpoint)
            if group is None:
                return []
            return [
                ReplicaInfo(
                    id=replica.id,
                    model_name=replica.model_name,
                    state=replica.state,
                    address=replica.address,
                    metrics_address=replica.metrics_address,
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
        self._watcher.wake()

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
        """See `ReplicaBackend.begin_shutdown`: replicas start draining now, so they drain
        while the control winds down its own work, and `close()` only waits for them."""
        with self._events_flushed(), self._lock:
            self._shutting_down = True
            for group in self._endpoints.values():
                self._signal_all(group)

    def close(self) -> None:
        """See `ReplicaBackend.close`. Blocks for up to the grace period plus the margin."""
        started = time.monotonic()
        self.begin_shutdown()
        self._watcher.stop(timeout_s=self._settings.health_timeout_s + 5.0)
        watcher_stopped = time.monotonic()
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
        now = time.monotonic()
        log.info(
            "stopped the replicas of %d endpoint(s) in %.2fs (watcher %.2fs, replicas exited "
            "and removed %.2fs)",
            len(groups),
            now - started,
            watcher_stopped - started,
            now - watcher_stopped,
        )

    # ----------------------------------------------------------------- opening, closing

    def _group(self, endpoint: str) -> _EndpointReplicas:
        group = self._endpoints.get(endpoint)
        if group is None or group.deleting:
            raise KeyError(f"the {self.name} backend does not run endpoint {endpoint!r}")
        return group

    def _open(self, endpoint: str, model: str, desired: int, address: str) -> _EndpointReplicas:
        group = _EndpointReplicas(endpoint, model, desired)
        group.address, moved = self._runtime.claim_address(endpoint, address)
        if moved:
            self._event(endpoint, moved)
        self._adopt_leftovers(group)
        self._endpoints[endpoint] = group
        return group

    def _adopt_leftovers(self, group: _EndpointReplicas) -> None:
        """Starts stopping the replicas a previous control run recorded for this endpoint."""
        recorded = self._ledger.recorded_replicas(group.name, self.name)
        leftovers = self._runtime.stop_leftovers(
            group.name, recorded, self._settings.drain_timeout_s
        )
        for replica_id in {r.replica_id for r in recorded} | {r.replica_id for r in leftovers}:
            match = _REPLICA_ID.fullmatch(replica_id)
            if match:  # new ids continue after the old ones, so logs never interleave
                group.next_number = max(group.next_number, int(match.group(1)) + 1)
        running = {leftover.replica_id for leftover in leftovers}
        for gone in recorded:
            if gone.replica_id not in running:
                self._ledger.forget_replica(group.name, gone.replica_id)
        for leftover in leftovers:
            group.leftovers.append(leftover)
            self._event(
                group.name,
                f"stopping replica {leftover.replica_id} ({leftover.label}), left running "
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
            running = replica.running
            if running is None or running.poll() is not None:
                self._forget(group, replica)
                continue
            if replica.kill_at is not None and now >= replica.kill_at:
                running.kill()
                replica.kill_at = None
        self._check_leftovers(group)

    def _release(self, group: _EndpointReplicas) -> None:
        if group.address is not None:
            group.address.release()
            group.address = None

    # ----------------------------------------------------------------- the watcher

    def step(self) -> None:
        """One pass of the watcher: probes every replica's health, then starts, replaces,
        drains and reaps replicas so each endpoint converges on its target (tests call it)."""
        with self._lock:
            probes = {
                replica.address
                for group in self._endpoints.values()
                if not group.deleting
                for replica in self._read_addresses(group)
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

    def _read_addresses(self, group: _EndpointReplicas) -> Iterator[_Replica]:
        """Replicas to probe; learns the addresses of those that just bound."""
        for replica in group.replicas.values():
            if replica.state not in (ReplicaState.STARTING, ReplicaState.SERVING):
                continue
            if not replica.address and replica.running is not None:
                replica.address, replica.metrics_address = replica.running.addresses()
            if replica.address:
                yield replica

    def _observe(self, group: _EndpointReplicas, healthy: dict[str, bool], now: float) -> None:
        for replica in list(group.replicas.values()):
            running = replica.running
            if running is None:
                continue  # a FAILED tombstone
            code = running.poll()
            if code is not None:
                self._on_exit(group, replica, code, now)
                continue
            is_healthy = healthy.get(replica.address, False)
            if replica.state is ReplicaState.STARTING:
                if replica.address and is_healthy:
                    replica.state = ReplicaState.SERVING
                    replica.served_at = now
                    self._event(
                        group.name,
                        f"replica {replica.id} serving model {replica.model_name} "
                        f"at {replica.address}",
                    )
                elif now - replica.started_at > self._settings.start_timeout_s:
                    replica.kill_reason = (
                        f"not SERVING within {self._settings.start_timeout_s:.0f}s "
                        "(--replica-start-timeout-s)"
                    )
                    running.kill()
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
                running.kill()
                replica.kill_at = None

    def _on_exit(self, group: _EndpointReplicas, replica: _Replica, code: int, now: float) -> None:
        state = replica.state
        explained = tail = ""
        if state is ReplicaState.STARTING and replica.running is not None:
            # Read before `_forget` releases what is left of the replica (its container).
            explained = replica.running.failure_text()
            tail = "" if explained else replica.running.log_tail()
        self._forget(group, replica)
        if state is ReplicaState.DRAINING or self._shutting_down:
            self._event(group.name, f"replica {replica.id} stopped (exit code {code})")
            return
        if state is ReplicaState.SERVING:
            self._event(group.name, f"replica {replica.id} exited with {code}; replacing it")
            self._schedule_replacement(group, replica, now)
            return
        # Exited before serving.
        if explained:
            reason = f"replica {replica.id} could not load model {replica.model_name}: {explained}"
        else:
            cause = replica.kill_reason or f"exited with {code} before serving"
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
        if (
            missing > 0
            and now >= group.replace_not_before
            and self._control_address
            # Replicas start once the model's script runtime is built (built on first use).
            and self._runtime.ready_to_launch(group.name, group.model_name)
        ):
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

    # ----------------------------------------------------------------- replicas

    def _spawn(self, group: _EndpointReplicas, model: str, attempt: int) -> _Replica:
        replica_id = f"r-{group.next_number}"
        group.next_number += 1
        assert group.address is not None
        spec = ReplicaSpec(group.name, model, replica_id, self._control_address, group.address)
        try:
            running = self._runtime.launch(spec)
        except LaunchError as err:
            reason = f"replica {replica_id} could not be started: {err}"
            tombstone = _Replica(replica_id, model, attempt, ReplicaState.FAILED)
            tombstone.failure_reason = reason
            group.replicas[replica_id] = tombstone
            self._event(group.name, reason)
            return tombstone
        replica = _Replica(
            id=replica_id,
            model_name=model,
            attempt=attempt,
            state=ReplicaState.STARTING,
            running=running,
            started_at=time.monotonic(),
        )
        group.replicas[replica_id] = replica
        self._ledger.record_replica(
            RecordedReplica(
                endpoint_name=group.name,
                replica_id=replica_id,
                backend=self.name,
                handle=running.handle,
                model_name=model,
                started_at=time.time(),
            )
        )
        self._event(group.name, f"replica {replica_id} started (model {model}, {running.label})")
        return replica

    def _remove(self, group: _EndpointReplicas, replica: _Replica, why: str) -> None:
        """Drains a serving replica (SIGTERM) or kills a starting one (nothing in flight)."""
        running = replica.running
        if running is None or running.poll() is not None:
            return
        if replica.state is ReplicaState.STARTING:
            running.kill()
        else:
            running.terminate()
            replica.kill_at = time.monotonic() + self._settings.drain_timeout_s
        replica.state = ReplicaState.DRAINING
        if why:
            self._event(group.name, f"draining replica {replica.id} ({why})")

    def _forget(self, group: _EndpointReplicas, replica: _Replica) -> None:
        group.replicas.pop(replica.id, None)
        self._ledger.forget_replica(group.name, replica.id)
        if replica.address:
            self._prober.forget(replica.address)
        if replica.running is not None:
            self._to_release.append(replica.running)

    # ----------------------------------------------------------------- events

    def _event(self, endpoint: str, message: str) -> None:
        """Queues an event; delivered once the lock is released (the sink writes the DB)."""
        log.info("endpoint %s: %s", endpoint, message)
        self._events.append((endpoint, message))

    @contextlib.contextmanager
    def _events_flushed(self) -> Iterator[None]:
        """After the block (and its lock) ended: removes what forgotten replicas left, then
        delivers the events queued inside it."""
        try:
            yield
        finally:
            with self._lock:
                events, self._events = self._events, []
                remains, self._to_release = self._to_release, []
            release_all(remains)
            for endpoint, message in events:
                try:
                    self._on_event(endpoint, message)
                except Exception:
                    log.exception("recording an event of endpoint %s failed", endpoint)
