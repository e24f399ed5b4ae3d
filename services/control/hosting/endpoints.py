"""Endpoints: the API's behaviour and the status machine, over a `ReplicaBackend`.

The database holds what is wanted (model, replica count, policy) and the status; the backend
runs replicas toward it. A reconciler thread compares the two, every `reconcile_interval_s`
and whenever the backend reports an event, and moves the status:

  Creating        -> InService once `desired` replicas of the model serve;
                  -> Failed when a replica cannot load the model (its reason, e.g. model_fn
                     missing, becomes the failure reason) and the replicas are stopped.
  Updating        -> InService once `desired` replicas of the new model serve and no replica
                     of the old one is left; a new model that cannot load is rolled back to
                     the previous one (failure_reason says why), as SageMaker does.
  InService       -> SystemUpdating when fewer than `desired` replicas serve (a replica died
                     and is being replaced), and back once they all serve again.
  Deleting        -> (row removed) once the backend drained and stopped every replica.

After a control restart, every live endpoint is handed to the backend again (which stops the
replicas the previous run left and starts fresh ones at the same address); InService ones show
SystemUpdating until the fresh replicas serve.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from services.control.backends import ReplicaBackend, ReplicaInfo, ReplicaState
from services.control.hosting.endpoint_store import EndpointStore
from services.control.hosting.endpoint_values import (
    Endpoint,
    EndpointEvent,
    EndpointStatus,
    EndpointView,
    PredictPath,
    ScalingPolicy,
    truncate_reason,
)
from services.control.hosting.model_registry import ModelRegistry
from services.control.metrics import ControlMetrics
from services.control.names import Resource, require_resource_name
from services.control.state import ControlStore
from services.runtime.components import StepLoop
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

log = logging.getLogger(__name__)

EVENTS_SHOWN = 50
_ACTIVE = (ReplicaState.STARTING, ReplicaState.SERVING)
_UPDATABLE = (EndpointStatus.IN_SERVICE, EndpointStatus.SYSTEM_UPDATING)


class Endpoints:
    """Creates, describes, updates and deletes endpoints, and keeps their status true."""

    def __init__(
        self,
        store: ControlStore,
        models: ModelRegistry,
        backend: ReplicaBackend | None,
        metrics: ControlMetrics,
        *,
        max_replicas: int = 16,
        reconcile_interval_s: float = 0.5,
        retry_backoff_s: float = 5.0,
        max_retry_backoff_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepares the endpoint logic; the reconciler starts with `start()`.

        Args:
            store: the control's database.
            models: the models endpoints serve.
            backend: runs the replicas; None when the control has no backend configured.
            metrics: the control's metrics (replica gauges).
            max_replicas: the most replicas one endpoint may ask for.
            reconcile_interval_s: how often statuses are re-derived without an event.
            retry_backoff_s: first wait before retrying a replacement that failed to load.
            max_retry_backoff_s: the longest such wait.
            clock: wall clock for stored times.
        """
        self._store = store
        self._endpoints = EndpointStore(store)
        self._models = models
        self._backend = backend
        self._metrics = metrics
        self._max_replicas = max_replicas
        self._retry_backoff_s = retry_backoff_s
        self._max_retry_backoff_s = max_retry_backoff_s
        self._clock = clock
        self._lock = threading.RLock()
        self._retry: dict[str, tuple[float, float]] = {}  # name -> (not before, backoff)
        self._releasing: dict[str, threading.Thread] = {}
        # Reconciles every endpoint each interval, and at once on a change or a replica event.
        self._reconciler = StepLoop("endpoint-reconciler", self.step, reconcile_interval_s)

    # ----------------------------------------------------------------- API

    def create(
        self,
        name: str,
        model_name: str,
        initial_replicas: int,
        policy: ScalingPolicy | None,
    ) -> EndpointView:
        """Stores an endpoint (Creating) and asks the backend for its replicas.

        Raises:
            FailedPrecondition: no replica backend is configured.
            InvalidArgument: a bad name, replica count or policy.
            ResourceExhausted: more replicas than the per-endpoint cap.
            NotFound: the model does not exist.
            AlreadyExists: an endpoint with this name exists.
        """
        backend = self._require_backend()
        require_resource_name(Resource.ENDPOINT, name)
        self._check_replicas("initial_replicas", initial_replicas)
        self._check_policy(policy)
        self._models.describe(model_name)
        now = self._clock()
        endpoint = Endpoint(
            name=name,
            model_name=model_name,
            status=EndpointStatus.CREATING,
            desired_replicas=initial_replicas,
            creation_time=now,
            last_modified_time=now,
            scaling_policy=policy,
        )
        with self._lock:
            self._endpoints.insert(endpoint)
            self.record_event(
                name, f"endpoint created: model {model_name}, {initial_replicas} replica(s)"
            )
            address = backend.ensure(name, model_name, initial_replicas)
            endpoint = replace(endpoint, address=address)
            self._endpoints.update(endpoint)
        self._metrics.endpoint_desired_replicas.labels(endpoint=name).set(initial_replicas)
        return self.describe(name)

    def describe(self, name: str) -> EndpointView:
        """The endpoint, its replicas and its recent events.

        Raises:
            NotFound: no such endpoint.
        """
        endpoint = self._get(name)
        return EndpointView(
            endpoint,
            self._replicas(name),
            tuple(self._endpoints.recent_events(name, EVENTS_SHOWN)),
            self._endpoints.predict_paths(name),
        )

    def list(self, name_prefix: str) -> list[EndpointView]:
        """Endpoints whose name starts with `name_prefix`, newest first, without events."""
        return [
            EndpointView(endpoint, self._replicas(endpoint.name), ())
            for endpoint in self._endpoints.list_endpoints(name_prefix)
        ]

    def update(
        self,
        name: str,
        *,
        model_name: str = "",
        replicas: int = 0,
        policy: ScalingPolicy | None = None,
    ) -> EndpointView:
        """Moves an endpoint to another model and/or replica count, and/or sets its policy.

        A new model is rolled out without loss: new replicas start, and old ones are drained
        only as new ones serve. A replica count change scales through the backend.

        Raises:
            NotFound: no such endpoint, or no such model.
            FailedPrecondition: the endpoint is not InService (or SystemUpdating).
            InvalidArgument: nothing to change, or a bad replica count or policy.
            ResourceExhausted: more replicas than the per-endpoint cap.
        """
        backend = self._require_backend()
        if not model_name and not replicas and policy is None:
            raise InvalidArgument("nothing to update: give a model_name, replicas or a policy")
        if replicas:
            self._check_replicas("replicas", replicas)
        self._check_policy(policy)
        if model_name:
            self._models.describe(model_name)
        with self._lock:
            endpoint = self._get(name)
            if endpoint.status not in _UPDATABLE:
                raise FailedPrecondition(
                    f"endpoint {name!r} is {endpoint.status.value}; it can be updated once "
                    "InService"
                )
            changes: list[str] = []
            updated = endpoint
            if policy is not None:
                updated = replace(updated, scaling_policy=policy)
                changes.append(
                    f"scaling policy min {policy.min_replicas} max {policy.max_replicas}"
                )
            new_model = bool(model_name) and model_name != endpoint.model_name
            if new_model:
                updated = replace(
                    updated, model_name=model_name, previous_model_name=endpoint.model_name
                )
                changes.append(f"model {endpoint.model_name} -> {model_name}")
            new_count = bool(replicas) and replicas != endpoint.desired_replicas
            if new_count:
                updated = replace(updated, desired_replicas=replicas)
                changes.append(f"replicas {endpoint.desired_replicas} -> {replicas}")
            if new_model or new_count:
                updated = replace(updated, status=EndpointStatus.UPDATING, failure_reason="")
            updated = replace(updated, last_modified_time=self._clock())
            self._endpoints.update(updated)
            self.record_event(name, "update: " + ("; ".join(changes) or "no change"))
            if new_model:
                backend.ensure(name, updated.model_name, updated.desired_replicas, updated.address)
            elif new_count:
                backend.scale(name, updated.desired_replicas)
        self._metrics.endpoint_desired_replicas.labels(endpoint=name).set(updated.desired_replicas)
        return self.describe(name)

    def scale(
        self, name: str, replicas: int, reason: str, *, remove_first: Sequence[str] = ()
    ) -> Endpoint:
        """Sets the replica count on the autoscaler's behalf and records why.

        Unlike `update`, this never blocks other changes: a scale-out shows SystemUpdating
        until the new replicas serve (the reconciler then returns it to InService), a
        scale-in keeps the status. The backend removes starting replicas first, then the
        serving ones in `remove_first` (the idlest), then the newest; removed ones drain.

        Args:
            name: the endpoint.
            replicas: the new desired count.
            reason: why, with the metric value that caused it; becomes an endpoint event.
            remove_first: on scale-in, serving replica ids to remove first, in order.

        Returns:
            The endpoint as stored after the change (unchanged when `replicas` is the count).

        Raises:
            NotFound: no such endpoint.
            FailedPrecondition: the endpoint is not InService or SystemUpdating (a model
                update or a deletion is under way; the autoscaler skips it).
            InvalidArgument, ResourceExhausted: a replica count out of range.
        """
        backend = self._require_backend()
        self._check_replicas("replicas", replicas)
        with self._lock:
            endpoint = self._get(name)
            if endpoint.status not in _UPDATABLE:
                raise FailedPrecondition(
                    f"endpoint {name!r} is {endpoint.status.value}; not scaling it now"
                )
            if replicas == endpoint.desired_replicas:
                return endpoint
            scaled = replace(endpoint, desired_replicas=replicas, last_modified_time=self._clock())
            if replicas > endpoint.desired_replicas:
                scaled = replace(scaled, status=EndpointStatus.SYSTEM_UPDATING)
            self._endpoints.update(scaled)
            self.record_event(name, reason)
            backend.scale(name, replicas, remove_first)
        self._metrics.endpoint_desired_replicas.labels(endpoint=name).set(replicas)
        return scaled

    def delete(self, name: str) -> None:
        """Marks the endpoint Deleting; its replicas are drained and stopped, then it is gone.

        Raises:
            NotFound: no such endpoint.
        """
        with self._lock:
            endpoint = self._get(name)
            if endpoint.status is EndpointStatus.DELETING:
                return
            self._set_status(endpoint, EndpointStatus.DELETING, "deleting: draining replicas")
            self._release(name, remove_row=True)

    def record_event(self, endpoint_name: str, message: str) -> None:
        """Appends an event to an endpoint and wakes the reconciler (the backends' EventSink).

        Events of an endpoint already gone are dropped.
        """
        if self._endpoints.get(endpoint_name) is not None:
            self._endpoints.append_event(endpoint_name, EndpointEvent(self._clock(), message))
        self._reconciler.wake()

    def record_predict_path(self, endpoint_name: str, replica_id: str, path: PredictPath) -> str:
        """Stores what answers a replica's predict calls; a refused fast path is an event.

        The event ("fast path refused for model M: <reasons>; scikit-learn serves") is recorded
        once per model and reason, not once per replica.

        Returns:
            The event recorded, or "" when there was none.

        Raises:
            NotFound: no such endpoint.
        """
        self._get(endpoint_name)
        is_news = self._endpoints.record_predict_path(endpoint_name, replica_id, path)
        if not (path.refused and is_news):
            return ""
        message = truncate_reason(
            f"fast path refused for model {path.model_name}: {path.reason}; "
            f"{path.name} serves (replica {replica_id})"
        )
        log.warning("endpoint %s: %s", endpoint_name, message)
        self.record_event(endpoint_name, message)
        return message

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Hands every stored endpoint back to the backend, then starts the reconciler."""
        for endpoint in self._endpoints.list_endpoints():
            self._restore(endpoint)
        self._reconciler.start()

    def begin_shutdown(self) -> None:
        """Stops reconciling and replacing (the control is shutting down); waits for the
        reconciler's pass under way."""
        self._reconciler.stop(timeout_s=10.0)
        if self._backend is not None:
            self._backend.begin_shutdown()

    def close(self) -> None:
        """Waits for the reconciler and releases, then stops every replica; rows stay."""
        self.begin_shutdown()
        for thread in list(self._releasing.values()):
            thread.join(timeout=30.0)
        if self._backend is not None:
            self._backend.close()

    # ----------------------------------------------------------------- reconciling

    def _restore(self, endpoint: Endpoint) -> None:
        if endpoint.status is EndpointStatus.DELETING:
            self._release(endpoint.name, remove_row=True)
            return
        if self._backend is None:
            return
        if endpoint.status is EndpointStatus.FAILED:
            # Its replicas were stopped, unless the previous control died first.
            self._release(endpoint.name, remove_row=False)
            return
        with self._lock:
            address = self._backend.ensure(
                endpoint.name, endpoint.model_name, endpoint.desired_replicas, endpoint.address
            )
            restored = replace(endpoint, address=address)
            if endpoint.status is EndpointStatus.IN_SERVICE:
                restored = replace(restored, status=EndpointStatus.SYSTEM_UPDATING)
            self._endpoints.update(restored)
            self.record_event(endpoint.name, "control restarted: starting fresh replicas")
        self._metrics.endpoint_desired_replicas.labels(endpoint=endpoint.name).set(
            endpoint.desired_replicas
        )

    def step(self) -> None:
        """One pass of the reconciler over every endpoint (its status against its replicas)."""
        for endpoint in self._endpoints.list_endpoints():
            try:
                self._reconcile(endpoint.name)
            except Exception:
                # One endpoint's bug must not stop the others from being watched.
                log.exception("reconciling endpoint %s failed", endpoint.name)

    def _reconcile(self, name: str) -> None:
        backend = self._backend
        if backend is None:
            return
        with self._lock:
            endpoint = self._endpoints.get(name)
            if endpoint is None or not endpoint.status.is_live:
                return
            replicas = backend.replicas(name)
            target = [r for r in replicas if r.model_name == endpoint.model_name]
            serving = sum(1 for r in target if r.state is ReplicaState.SERVING)
            self._metrics.endpoint_replicas.labels(endpoint=name).set(serving)
            failed = [r for r in target if r.state is ReplicaState.FAILED]
            if failed:
                self._on_failed_replica(endpoint, failed[0])
                return
            self._retry.pop(name, None)
            # A model update is complete only once the old model's replicas exited, draining
            # ones included: until then a new connection may still reach one of them.
            others_left = any(
                r.model_name != endpoint.model_name and r.state is not ReplicaState.FAILED
                for r in replicas
            )
            active = sum(1 for r in target if r.state in _ACTIVE)
            is_complete = (
                serving >= endpoint.desired_replicas
                and active <= endpoint.desired_replicas
                and not others_left
            )
            status = endpoint.status
            if is_complete and status is not EndpointStatus.IN_SERVICE:
                message = f"InService: {serving} replica(s) of model {endpoint.model_name} serve"
                self._set_status(
                    replace(endpoint, previous_model_name=""), EndpointStatus.IN_SERVICE, message
                )
            elif status is EndpointStatus.IN_SERVICE and serving < endpoint.desired_replicas:
                self._set_status(
                    endpoint,
                    EndpointStatus.SYSTEM_UPDATING,
                    f"{serving} of {endpoint.desired_replicas} replica(s) serve; replacing",
                )

    def _on_failed_replica(self, endpoint: Endpoint, replica: ReplicaInfo) -> None:
        reason = replica.failure_reason or f"replica {replica.id} failed"
        if endpoint.status is EndpointStatus.CREATING:
            failed = replace(endpoint, failure_reason=truncate_reason(reason))
            self._set_status(failed, EndpointStatus.FAILED, "Failed: stopping its replicas")
            self._release(endpoint.name, remove_row=False)
            return
        backend = self._backend
        assert backend is not None
        if endpoint.status is EndpointStatus.UPDATING and endpoint.previous_model_name:
            previous = endpoint.previous_model_name
            rolled_back = replace(
                endpoint,
                model_name=previous,
                previous_model_name="",
                failure_reason=truncate_reason(
                    f"update to model {endpoint.model_name} failed and was rolled back to "
                    f"model {previous}: {reason}"
                ),
                last_modified_time=self._clock(),
            )
            self._endpoints.update(rolled_back)
            self.record_event(endpoint.name, f"rolling back to model {previous}: {reason}")
            backend.ensure(endpoint.name, previous, endpoint.desired_replicas, endpoint.address)
            return
        # A replacement or a scale-out could not load a model that served before: most likely
        # something transient (disk, memory); retry with a growing backoff.
        now = time.monotonic()
        not_before, backoff = self._retry.get(endpoint.name, (0.0, 0.0))
        if now < not_before:
            return
        backoff = min(max(backoff * 2, self._retry_backoff_s), self._max_retry_backoff_s)
        self._retry[endpoint.name] = (now + backoff, backoff)
        self.record_event(endpoint.name, f"{reason}; retrying (next retry in {backoff:.0f}s)")
        backend.ensure(
            endpoint.name, endpoint.model_name, endpoint.desired_replicas, endpoint.address
        )

    def _release(self, name: str, *, remove_row: bool) -> None:
        """Stops the endpoint's replicas in a thread; then removes the row if `remove_row`.

        A release already running (a Failed endpoint's) is waited for, so that a later delete
        still removes the row.
        """
        previous = self._releasing.get(name)
        thread = threading.Thread(
            target=self._run_release,
            args=(name, remove_row, previous),
            name=f"release-{name}",
            daemon=True,
        )
        self._releasing[name] = thread
        thread.start()

    def _run_release(self, name: str, remove_row: bool, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        try:
            if self._backend is not None:
                self._backend.delete(name)
        except Exception:
            log.exception("stopping the replicas of endpoint %s failed", name)
            return
        self._metrics.endpoint_replicas.labels(endpoint=name).set(0)
        if remove_row:
            with self._lock:
                self._endpoints.delete(name)
            for gauge in (self._metrics.endpoint_replicas, self._metrics.endpoint_desired_replicas):
                with contextlib.suppress(KeyError):  # never set: deleted before any reconcile
                    gauge.remove(name)
            self._metrics.forget_scaling_decisions(name)
            log.info("endpoint %s deleted", name)
        with self._lock:
            if self._releasing.get(name) is threading.current_thread():
                del self._releasing[name]
        self._reconciler.wake()

    # ----------------------------------------------------------------- helpers

    def _get(self, name: str) -> Endpoint:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise NotFound(f"endpoint {name!r} not found")
        return endpoint

    def _replicas(self, name: str) -> tuple[ReplicaInfo, ...]:
        return tuple(self._backend.replicas(name)) if self._backend is not None else ()

    def _set_status(self, endpoint: Endpoint, status: EndpointStatus, message: str) -> None:
        # The event first: whoever sees the new status also sees why it changed.
        self.record_event(endpoint.name, message)
        self._endpoints.update(replace(endpoint, status=status, last_modified_time=self._clock()))

    def _require_backend(self) -> ReplicaBackend:
        if self._backend is None:
            raise FailedPrecondition(
                "no replica backend: start the control with --local (or --replica-backend)"
            )
        return self._backend

    def _check_replicas(self, field: str, count: int) -> None:
        if count < 1:
            raise InvalidArgument(f"{field} is {count}: an endpoint needs at least 1 replica")
        if count > self._max_replicas:
            raise ResourceExhausted(
                f"{field} is {count}: at most {self._max_replicas} replicas per endpoint "
                "(--max-endpoint-replicas)"
            )

    def _check_policy(self, policy: ScalingPolicy | None) -> None:
        _check_policy_fields(policy)
        if policy is not None:
            # The autoscaler could never reach a larger count: refuse it up front.
            self._check_replicas("scaling_policy.max_replicas", policy.max_replicas)


def _check_policy_fields(policy: ScalingPolicy | None) -> None:
    if policy is None:
        return
    if policy.min_replicas < 1:
        raise InvalidArgument(
            f"scaling_policy.min_replicas is {policy.min_replicas}: it must be at least 1"
        )
    if policy.max_replicas < policy.min_replicas:
        raise InvalidArgument(
            f"scaling_policy.max_replicas ({policy.max_replicas}) is below min_replicas "
            f"({policy.min_replicas})"
        )
    if policy.target_value < 0:
        raise InvalidArgument("scaling_policy.target_value must not be negative")
    if policy.scale_out_window_seconds < 0 or policy.scale_in_window_seconds < 0:
        raise InvalidArgument("scaling_policy windows must not be negative (0 means the default)")
