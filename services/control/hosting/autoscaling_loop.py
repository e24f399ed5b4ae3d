"""The autoscaling loop: measures autoscaled endpoints and carries out the policy's decisions.

The policy itself is the pure `autoscaling_policy.desired_replicas`; replicas are run by the
`ReplicaBackend` behind `Endpoints`. This loop connects the two. Every `interval_s`:

1. It lists every endpoint's replicas and hands those with a /metrics address to an observer
   (the Prometheus file-SD file, `scrape_targets`), whatever the endpoint's policy.
2. For each endpoint with a scaling policy that is InService or SystemUpdating (a model update
   or a deletion is never scaled under), it samples the policy's metric over the replicas of
   the current model that serve — starting ones are not capacity — from the `LoadSource`
   (the replicas' /metrics, or PromQL) and asks the policy, passing the endpoint's history of
   recommendations (kept in memory: after a control restart or a policy change it starts
   afresh, as if the current count had just been recommended, which can only delay a change).
3. An UP or DOWN decision becomes `Endpoints.scale`, which records an event naming the metric
   value, and counts in `skmaker_control_scaling_decisions_total`. A scale-in names the
   replicas with the fewest requests in flight, so the backend drains the idlest first.

Missing or stale load is never zero load: the policy holds, and the endpoint gets an event
saying why; the same hold message is recorded at most once per `hold_event_interval_s`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.control.backends import ReplicaInfo, ReplicaState
from services.control.hosting import autoscaling_policy as autoscaler
from services.control.hosting.endpoint_values import (
    Endpoint,
    EndpointStatus,
    EndpointView,
    ScalingMetric,
    ScalingPolicy,
)
from services.control.hosting.endpoints import Endpoints
from services.control.hosting.load_metrics import LoadSample, LoadSource, ReplicaTarget
from services.control.hosting.scrape_targets import ScrapeTarget
from services.control.metrics import ControlMetrics
from services.runtime.components import StepLoop
from services.runtime.errors import SkmakerError

log = logging.getLogger(__name__)

# A policy's zero fields mean "the default" (proto3 doubles have no presence).
DEFAULT_TARGET_VALUES = {
    autoscaler.CONCURRENT_REQUESTS: 4.0,
    autoscaler.INVOCATIONS_PER_MINUTE: 1000.0,
}
# With a 1 s loop, a load step that is not a burst is acted on 2-3 s after it began, inside
# the 5 s the issue asks for; a burst (2x target) is acted on at the first sample.
DEFAULT_SCALE_OUT_WINDOW_S = 2.0
# As Ray Serve's downscale delay is to its upscale delay: removing capacity is the mistake
# that costs requests, so it waits an order of magnitude longer.
DEFAULT_SCALE_IN_WINDOW_S = 30.0
# Identical "holding" events are recorded at most this often, so describe is not flooded.
HOLD_EVENT_INTERVAL_S = 60.0

_SCALED = (EndpointStatus.IN_SERVICE, EndpointStatus.SYSTEM_UPDATING)
_METRICS = {
    ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA: autoscaler.CONCURRENT_REQUESTS,
    ScalingMetric.INVOCATIONS_PER_REPLICA_PER_MINUTE: autoscaler.INVOCATIONS_PER_MINUTE,
}

ScrapeTargetsObserver = Callable[[list[ScrapeTarget]], object]


def policy_for(stored: ScalingPolicy) -> autoscaler.ScalingPolicy:
    """The autoscaler's policy for an endpoint's stored policy, zero fields made defaults.

    Raises:
        ValueError: the stored policy breaks a rule (see `autoscaler.ScalingPolicy.validate`).
    """
    metric = _METRICS[stored.metric]
    policy = autoscaler.ScalingPolicy(
        min_replicas=stored.min_replicas,
        max_replicas=stored.max_replicas,
        metric=metric,
        target_value=stored.target_value or DEFAULT_TARGET_VALUES[metric],
        scale_out_window_s=stored.scale_out_window_seconds or DEFAULT_SCALE_OUT_WINDOW_S,
        scale_in_window_s=stored.scale_in_window_seconds or DEFAULT_SCALE_IN_WINDOW_S,
        disable_scale_in=stored.disable_scale_in,
    )
    policy.validate()
    return policy


@dataclass
class _Tracked:
    """What the loop remembers about one endpoint between evaluations."""

    creation_time: float  # tells a re-created endpoint of the same name from the old one
    policy: autoscaler.ScalingPolicy
    history: tuple[autoscaler.Recommendation, ...] = ()
    last_hold: tuple[str, float] | None = None  # (message, monotonic time) of the last event
    desired: int = 0  # the endpoint's desired count when the loop last looked or decided


@dataclass(frozen=True)
class Evaluation:
    """One endpoint's evaluation, for logs and tests."""

    endpoint: str
    sample: LoadSample
    decision: autoscaler.Decision
    applied: bool  # an UP/DOWN decision that Endpoints.scale carried out


class Autoscaling:
    """The loop; see the module docstring. `step()` is one pass, `start()` runs it in a thread.

    Args:
        endpoints: the endpoint logic (listing, `scale`, events).
        source: where load samples come from.
        metrics: the control's metrics (the decision counter).
        interval_s: time between passes.
        on_scrape_targets: called each pass with every replica's /metrics address (the
            Prometheus SD file); None for none.
        clock: monotonic seconds, for the policy's windows.
        hold_event_interval_s: the least time between two identical hold events.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        source: LoadSource,
        metrics: ControlMetrics,
        *,
        interval_s: float = 1.0,
        on_scrape_targets: ScrapeTargetsObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        hold_event_interval_s: float = HOLD_EVENT_INTERVAL_S,
    ) -> None:
        self._endpoints = endpoints
        self._source = source
        self._metrics = metrics
        self._interval_s = interval_s
        self._on_scrape_targets = on_scrape_targets
        self._clock = clock
        self._hold_event_interval_s = hold_event_interval_s
        self._tracked: dict[str, _Tracked] = {}
        self._loop = StepLoop("autoscaling", self.step, interval_s)

    def start(self) -> None:
        """Starts the loop thread (first pass at once)."""
        self._loop.start()

    def drain(self) -> None:
        """Stops the loop and waits for the pass under way, so nothing is scaled while the
        endpoints shut down; the SD file is emptied."""
        self._loop.stop(timeout_s=30.0)
        if self._on_scrape_targets is not None:
            # Replicas are about to be stopped: Prometheus should not keep failing on them.
            self._publish([])

    def stop(self) -> None:
        """Stops the loop (as `drain`)."""
        self.drain()

    def step(self) -> list[Evaluation]:
        """One pass over every endpoint; returns the evaluations of the autoscaled ones.

        The loop runs it every `interval_s`; tests call it directly.
        """
        views = self._endpoints.list("")
        if self._on_scrape_targets is not None:
            self._publish(
                [
                    ScrapeTarget(view.endpoint.name, replica.id, replica.metrics_address)
                    for view in views
                    for replica in view.replicas
                    if replica.metrics_address
                ]
            )
        live = {view.endpoint.name for view in views}
        for name in [name for name in self._tracked if name not in live]:
            del self._tracked[name]
        evaluations = []
        for view in views:
            try:
                evaluation = self.evaluate(view)
            except Exception:
                log.exception("autoscaling endpoint %s failed", view.endpoint.name)
                continue
            if evaluation is not None:
                evaluations.append(evaluation)
        return evaluations

    def evaluate(self, view: EndpointView) -> Evaluation | None:
        """Measures one endpoint and applies the decision; None when it is not autoscaled now."""
        endpoint = view.endpoint
        if endpoint.scaling_policy is None or endpoint.status not in _SCALED:
            return None
        tracked = self._track(endpoint)
        if tracked is None:
            return None
        policy = tracked.policy
        serving = [
            replica
            for replica in view.replicas
            if replica.model_name == endpoint.model_name
            and replica.state is ReplicaState.SERVING
            and replica.metrics_address
        ]
        sample = self._sample(endpoint.name, policy.metric, serving)
        now = self._clock()
        decision = autoscaler.desired_replicas(
            current=endpoint.desired_replicas,
            serving=len(serving),
            metric_per_replica=sample.value,
            policy=policy,
            history=tracked.history,
            now=now,
        )
        tracked.history = decision.history
        if decision.direction == autoscaler.HOLD:
            if sample.value is None:
                self._record_hold(endpoint, tracked, decision, sample, now)
            return Evaluation(endpoint.name, sample, decision, applied=False)
        applied = self._apply(endpoint, decision, sample, serving)
        if applied:
            tracked.desired = decision.desired
        return Evaluation(endpoint.name, sample, decision, applied)

    # ----------------------------------------------------------------- helpers

    def _track(self, endpoint: Endpoint) -> _Tracked | None:
        assert endpoint.scaling_policy is not None
        try:
            policy = policy_for(endpoint.scaling_policy)
        except ValueError as err:
            log.warning("endpoint %s: not autoscaling: %s", endpoint.name, err)
            return None
        tracked = self._tracked.get(endpoint.name)
        if (
            tracked is None
            or tracked.creation_time != endpoint.creation_time
            or tracked.policy != policy
        ):
            # Recommendations made under another policy (UpdateEndpoint) say nothing now. A
            # fresh history starts with the current count as if just recommended, so that no
            # replica is removed before a whole scale-in window of evidence (after a control
            # restart, say); bursts still scale out at once.
            seed = autoscaler.Recommendation(self._clock(), endpoint.desired_replicas)
            tracked = _Tracked(
                endpoint.creation_time,
                policy,
                history=(seed,),
                desired=endpoint.desired_replicas,
            )
            self._tracked[endpoint.name] = tracked
        elif tracked.desired != endpoint.desired_replicas:
            # Someone set the count (UpdateEndpoint): it counts as just recommended, so the
            # loop does not undo it before a whole scale-in window of evidence says so.
            seed = autoscaler.Recommendation(self._clock(), endpoint.desired_replicas)
            tracked.history = (*tracked.history, seed)
            tracked.desired = endpoint.desired_replicas
        return tracked

    def _sample(self, name: str, metric: str, serving: Sequence[ReplicaInfo]) -> LoadSample:
        targets = [ReplicaTarget(replica.id, replica.metrics_address) for replica in serving]
        try:
            return self._source.sample(name, metric, targets)
        except Exception as err:
            # A source bug must look like what it is to the policy: no data, so hold.
            log.exception("sampling endpoint %s failed", name)
            return LoadSample(None, f"reading the load failed: {err}")

    def _apply(
        self,
        endpoint: Endpoint,
        decision: autoscaler.Decision,
        sample: LoadSample,
        serving: Sequence[ReplicaInfo],
    ) -> bool:
        up = decision.direction == autoscaler.UP
        idlest = sorted(
            (replica.id for replica in serving),
            key=lambda rid: sample.in_flight.get(rid, math.inf),
        )
        detail = f" [{sample.detail}]" if sample.value is not None else ""
        reason = (
            f"autoscaling {'out' if up else 'in'} to {decision.desired} replica(s): "
            f"{decision.reason}{detail}"
        )
        try:
            self._endpoints.scale(
                endpoint.name, decision.desired, reason, remove_first=() if up else idlest
            )
        except SkmakerError as err:
            # Raced with an update or a delete: the next pass sees the new state.
            log.info("endpoint %s: not scaled: %s", endpoint.name, err)
            return False
        self._metrics.scaling_decisions.labels(endpoint.name, decision.direction).inc()
        log.info("endpoint %s: %s", endpoint.name, reason)
        return True

    def _record_hold(
        self,
        endpoint: Endpoint,
        tracked: _Tracked,
        decision: autoscaler.Decision,
        sample: LoadSample,
        now: float,
    ) -> None:
        message = f"autoscaling holding at {decision.desired} replica(s): {sample.detail}"
        last = tracked.last_hold
        if last is not None and last[0] == message and now - last[1] < self._hold_event_interval_s:
            return
        tracked.last_hold = (message, now)
        self._endpoints.record_event(endpoint.name, message)

    def _publish(self, targets: list[ScrapeTarget]) -> None:
        assert self._on_scrape_targets is not None
        try:
            self._on_scrape_targets(targets)
        except OSError:
            log.exception("writing the scrape targets failed")
