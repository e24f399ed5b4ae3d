"""Target-tracking autoscaling policy: from load samples to a desired replica count.

The policy is a pure function so every rule is a table test. It follows the rules that keep
Kubernetes' HPA and Ray Serve from flapping, tuned for replicas that start in seconds:

- Target tracking: desired = ceil(serving x metric_per_replica / target), where `serving`
  counts only replicas that already answer (starting replicas are not capacity yet), and a
  ratio within the tolerance band (10 % by default) changes nothing.
- Scale-out stabilization: a scale-out needs every recommendation inside the scale-out window
  to agree, so one spike does not add a replica — except a burst (metric at or above
  `burst_factor` x target), which scales out at once.
- Scale-in stabilization: the desired count never drops below the highest recommendation
  inside the scale-in window, so a square wave shorter than the window causes no scale-in.
- Missing or stale metrics are never zero load: the policy holds and says why.
- The result is clamped to [min_replicas, max_replicas]; `disable_scale_in` forbids scale-in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONCURRENT_REQUESTS = "concurrent_requests_per_replica"
INVOCATIONS_PER_MINUTE = "invocations_per_replica_per_minute"
METRICS = (CONCURRENT_REQUESTS, INVOCATIONS_PER_MINUTE)

UP = "up"
DOWN = "down"
HOLD = "hold"


@dataclass(frozen=True)
class ScalingPolicy:
    """An endpoint's target-tracking policy.

    Attributes:
        min_replicas: Fewest replicas (at least 1).
        max_replicas: Most replicas (at least min_replicas).
        metric: CONCURRENT_REQUESTS (in-flight requests per replica) or INVOCATIONS_PER_MINUTE.
        target_value: The metric value per replica to hold.
        scale_out_window_s: How long a scale-out recommendation must persist.
        scale_in_window_s: How far back the highest recommendation bounds a scale-in.
        disable_scale_in: Never remove replicas.
        tolerance: Relative band around the target in which nothing changes.
        burst_factor: Metric at or above burst_factor x target scales out immediately.
    """

    min_replicas: int = 1
    max_replicas: int = 1
    metric: str = CONCURRENT_REQUESTS
    target_value: float = 4.0
    scale_out_window_s: float = 3.0
    scale_in_window_s: float = 30.0
    disable_scale_in: bool = False
    tolerance: float = 0.1
    burst_factor: float = 2.0

    def validate(self) -> None:
        """Raises ValueError naming the first rule the policy breaks."""
        if self.min_replicas < 1:
            raise ValueError(f"min_replicas must be at least 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be at least "
                f"min_replicas ({self.min_replicas})"
            )
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not self.target_value > 0:
            raise ValueError(f"target_value must be positive, got {self.target_value}")
        if self.scale_out_window_s < 0 or self.scale_in_window_s < 0:
            raise ValueError("stabilization windows cannot be negative")


@dataclass(frozen=True)
class Recommendation:
    """What the raw target-tracking rule asked for at one moment."""

    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one evaluation.

    Attributes:
        desired: Replicas wanted now.
        direction: UP, DOWN or HOLD relative to the current desired count.
        reason: One sentence for the endpoint's events, naming the metric value.
        history: Recommendations to pass to the next evaluation.
    """

    desired: int
    direction: str
    reason: str
    history: tuple[Recommendation, ...]


def _clamp(value: int, policy: ScalingPolicy) -> int:
    return max(policy.min_replicas, min(policy.max_replicas, value))


def raw_recommendation(serving: int, metric_per_replica: float, policy: ScalingPolicy) -> int:
    """ceil(serving x metric / target), clamped; within the tolerance band, `serving` itself."""
    ratio = metric_per_replica / policy.target_value
    if abs(ratio - 1.0) <= policy.tolerance:
        return _clamp(serving, policy)
    # The small epsilon keeps float noise (e.g. 2.0000000001) from adding a replica.
    return _clamp(math.ceil(serving * ratio - 1e-9), policy)


def desired_replicas(
    *,
    current: int,
    serving: int,
    metric_per_replica: float | None,
    policy: ScalingPolicy,
    history: Sequence[Recommendation],
    now: float,
) -> Decision:
    """Decides the replica count for one evaluation.

    Args:
        current: Replicas currently wanted (serving plus starting).
        serving: Replicas answering requests; starting ones are not capacity yet.
        metric_per_replica: The policy's metric averaged over serving replicas; None when
            missing or stale.
        policy: The endpoint's policy.
        history: Recommendations from earlier evaluations (from the last Decision).
        now: Monotonic time in seconds.

    Returns:
        The decision, with the history to carry forward.
    """
    window = max(policy.scale_out_window_s, policy.scale_in_window_s)
    kept = tuple(r for r in history if now - r.at <= window)
    bounded_current = _clamp(current, policy)
    if bounded_current != current:
        direction = UP if bounded_current > current else DOWN
        reason = (
            f"{current} replicas is outside [{policy.min_replicas}, {policy.max_replicas}]; "
            f"moving to {bounded_current}"
        )
        return Decision(bounded_current, direction, reason, kept)
    if metric_per_replica is None:
        return Decision(current, HOLD, f"metrics missing or stale; holding at {current}", kept)
    if serving == 0:
        return Decision(current, HOLD, f"no replica serving yet; holding at {current}", kept)

    raw = raw_recommendation(serving, metric_per_replica, policy)
    history_now = (*kept, Recommendation(now, raw))
    described = f"{policy.metric}={metric_per_replica:.3g} (target {policy.target_value:g})"

    if raw > current:
        if metric_per_replica >= policy.burst_factor * policy.target_value:
            return Decision(raw, UP, f"burst: {described}; {current} -> {raw}", history_now)
        in_window = [r.replicas for r in history_now if now - r.at <= policy.scale_out_window_s]
        spans_window = any(now - r.at >= policy.scale_out_window_s for r in history_now)
        agreed = min(in_window)
        if agreed > current and (spans_window or policy.scale_out_window_s == 0):
            return Decision(agreed, UP, f"{described}; {current} -> {agreed}", history_now)
        return Decision(
            current, HOLD, f"{described}; waiting for the scale-out window", history_now
        )

    if raw < current:
        if policy.disable_scale_in:
            return Decision(current, HOLD, f"{described}; scale-in disabled", history_now)
        in_window = [r.replicas for r in history_now if now - r.at <= policy.scale_in_window_s]
        floor = max(in_window)
        if floor < current:
            return Decision(floor, DOWN, f"{described}; {current} -> {floor}", history_now)
        return Decision(current, HOLD, f"{described}; waiting for the scale-in window", history_now)

    return Decision(current, HOLD, f"{described}; within tolerance", history_now)
