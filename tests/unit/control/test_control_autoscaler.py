"""Table tests of the target-tracking policy (services.control.hosting.autoscaling_policy)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from services.control.hosting.autoscaling_policy import (
    DOWN,
    HOLD,
    UP,
    Decision,
    Recommendation,
    ScalingPolicy,
    desired_replicas,
    raw_recommendation,
)

POLICY = ScalingPolicy(
    min_replicas=1,
    max_replicas=4,
    target_value=4.0,
    scale_out_window_s=3.0,
    scale_in_window_s=10.0,
)


def _run(
    samples: Sequence[tuple[float, float | None]],
    policy: ScalingPolicy = POLICY,
    start: int = 1,
    starting_delay_s: float = 0.0,
) -> list[Decision]:
    """Feeds (time, metric) samples; replicas become serving `starting_delay_s` after a scale."""
    current, history = start, ()
    serving_since: list[float] = [-1e9] * start
    decisions = []
    for now, metric in samples:
        serving = sum(1 for t in serving_since if now - t >= starting_delay_s)
        decision = desired_replicas(
            current=current,
            serving=serving,
            metric_per_replica=metric,
            policy=policy,
            history=history,
            now=now,
        )
        if decision.desired > current:
            serving_since += [now] * (decision.desired - current)
        elif decision.desired < current:
            serving_since = serving_since[: decision.desired]
        current, history = decision.desired, decision.history
        decisions.append(decision)
    return decisions


def _desired(decisions: Sequence[Decision]) -> list[int]:
    return [d.desired for d in decisions]


@pytest.mark.parametrize(
    ("serving", "metric", "expected"),
    [
        (1, 4.0, 1),  # on target
        (2, 4.3, 2),  # within the 10 % band: no change
        (2, 3.7, 2),
        (1, 4.5, 2),  # just outside the band
        (1, 8.0, 2),
        (2, 8.0, 4),
        (3, 8.0, 4),  # clamped to max
        (4, 1.0, 1),
        (2, 0.0, 1),  # clamped to min
        (1, 12.0000000001, 3),  # float noise does not add a replica
    ],
)
def test_raw_recommendation_tracks_the_target(serving: int, metric: float, expected: int) -> None:
    assert raw_recommendation(serving, metric, POLICY) == expected


def test_steady_load_within_tolerance_changes_nothing() -> None:
    decisions = _run([(t, 4.2) for t in range(30)], start=1)
    assert _desired(decisions) == [1] * 30
    assert {d.direction for d in decisions} == {HOLD}


def test_ramp_scales_out_once_the_window_agrees() -> None:
    # 6 in flight on one replica (ratio 1.5, below burst): wait the 3 s window, then 2.
    decisions = _run([(t, 6.0) for t in range(6)], start=1)
    assert _desired(decisions) == [1, 1, 1, 2, 2, 2]
    assert decisions[3].direction == UP
    assert "concurrent_requests_per_replica=6" in decisions[3].reason


def test_burst_scales_out_at_once() -> None:
    decisions = _run([(0, 1.0), (1, 16.0)], start=1)
    assert _desired(decisions) == [1, 4]
    assert decisions[1].reason.startswith("burst")


def test_one_spike_inside_the_window_does_not_scale_out() -> None:
    decisions = _run([(0, 4.0), (1, 7.0), (2, 4.0), (3, 4.0), (4, 4.0)], start=1)
    assert _desired(decisions) == [1, 1, 1, 1, 1]


def test_drop_scales_in_only_after_the_scale_in_window() -> None:
    samples = [(t, 4.0) for t in range(3)] + [(t, 1.0) for t in range(3, 20)]
    decisions = _run(samples, start=2)
    desired = _desired(decisions)
    # The 2-replica recommendations of t=0..2 bound scale-in until they leave the 10 s window.
    assert desired[:13] == [2] * 13
    assert desired[13] == 1
    assert decisions[13].direction == DOWN


def test_missing_metrics_never_count_as_zero_load() -> None:
    decisions = _run([(t, None) for t in range(20)], start=3)
    assert _desired(decisions) == [3] * 20
    assert all("missing or stale" in d.reason for d in decisions)


def test_starting_replicas_are_not_capacity() -> None:
    # Load stays at 8 per SERVING replica while the new one starts: no runaway scale-out.
    policy = ScalingPolicy(
        min_replicas=1,
        max_replicas=8,
        target_value=4.0,
        scale_out_window_s=0.0,
        scale_in_window_s=10.0,
    )
    decisions = _run([(t, 8.0) for t in range(5)], policy=policy, start=1, starting_delay_s=100)
    assert _desired(decisions) == [2, 2, 2, 2, 2]


def test_min_and_max_bound_every_decision() -> None:
    policy = ScalingPolicy(min_replicas=2, max_replicas=3, target_value=1.0, scale_in_window_s=0)
    assert _desired(_run([(0, 50.0)], policy=policy, start=2)) == [3]
    assert _desired(_run([(0, 0.0), (1, 0.0)], policy=policy, start=3)) == [2, 2]
    # A count outside the bounds (policy just changed) is brought inside at once.
    assert _desired(_run([(0, None)], policy=policy, start=1)) == [2]
    assert _desired(_run([(0, None)], policy=policy, start=5)) == [3]


def test_disable_scale_in_keeps_replicas() -> None:
    policy = ScalingPolicy(
        min_replicas=1,
        max_replicas=4,
        target_value=4.0,
        scale_in_window_s=0.0,
        disable_scale_in=True,
    )
    decisions = _run([(t, 0.0) for t in range(5)], policy=policy, start=3)
    assert _desired(decisions) == [3] * 5
    assert "scale-in disabled" in decisions[-1].reason


def test_square_wave_reverses_at_most_once_per_window() -> None:
    # Load alternates 2 s high / 2 s low, far shorter than the 10 s scale-in window.
    samples = [(t / 2, 8.0 if (t // 4) % 2 == 0 else 1.0) for t in range(120)]
    decisions = _run(samples, start=1)
    changes = [(samples[i][0], d.direction) for i, d in enumerate(decisions) if d.direction != HOLD]
    reversals = [
        changes[i][0] for i in range(1, len(changes)) if changes[i][1] != changes[i - 1][1]
    ]
    assert changes[0][1] == UP  # the wave's first high phase is a burst
    for earlier, later in itertools.pairwise(reversals):
        assert later - earlier >= POLICY.scale_in_window_s
    assert len(reversals) <= 1


def test_history_older_than_the_windows_is_dropped() -> None:
    old = tuple(Recommendation(at=float(t), replicas=4) for t in range(5))
    decision = desired_replicas(
        current=1, serving=1, metric_per_replica=4.0, policy=POLICY, history=old, now=100.0
    )
    assert all(r.at >= 90.0 for r in decision.history)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (ScalingPolicy(min_replicas=0), "min_replicas"),
        (ScalingPolicy(min_replicas=3, max_replicas=2), "max_replicas"),
        (ScalingPolicy(metric="cpu"), "metric"),
        (ScalingPolicy(target_value=0), "target_value"),
        (ScalingPolicy(scale_in_window_s=-1), "windows"),
    ],
)
def test_invalid_policies_are_named(policy: ScalingPolicy, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        policy.validate()
