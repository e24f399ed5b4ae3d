"""`AutoScalingPolicy`: an endpoint's target-tracking policy, given to `deploy(autoscaling=...)`.

SageMaker's SDK has no autoscaling argument (users call Application Auto Scaling with boto3);
skmaker takes the policy with the deployment and sends it as the endpoint's ScalingPolicy.
The control's autoscaler keeps `metric` per replica near `target_value` between
`min_replicas` and `max_replicas`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skmaker.v1 import model_pb2

METRIC_VALUES: dict[str, int] = {
    "concurrent_requests_per_replica": model_pb2.SCALING_METRIC_CONCURRENT_REQUESTS_PER_REPLICA,
    "invocations_per_replica_per_minute": (
        model_pb2.SCALING_METRIC_INVOCATIONS_PER_REPLICA_PER_MINUTE
    ),
}
METRIC_NAMES: dict[int, str] = {value: name for name, value in METRIC_VALUES.items()}
DEFAULT_METRIC = "concurrent_requests_per_replica"


@dataclass(frozen=True)
class AutoScalingPolicy:
    """Target tracking for one endpoint.

    Attributes:
        max_replicas: the most replicas, at least `min_replicas`.
        target_value: wanted value of `metric` per replica, above 0 (e.g. 4 requests in
            flight, or 600 invocations a minute).
        min_replicas: the fewest replicas, at least 1.
        metric: "concurrent_requests_per_replica" (requests in flight, the default) or
            "invocations_per_replica_per_minute" (SageMaker's
            SageMakerVariantInvocationsPerInstance).
        scale_out_window_s: stabilization window before adding replicas; None leaves it to
            the control's default.
        scale_in_window_s: stabilization window before removing replicas; None leaves it to
            the control's default.
        disable_scale_in: never remove replicas.

    Raises:
        ValueError: for a value out of range or an unknown metric.
    """

    max_replicas: int
    target_value: float
    min_replicas: int = 1
    metric: str = DEFAULT_METRIC
    scale_out_window_s: float | None = None
    scale_in_window_s: float | None = None
    disable_scale_in: bool = False

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise ValueError(f"min_replicas must be at least 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be at least min_replicas "
                f"({self.min_replicas})"
            )
        if not (math.isfinite(self.target_value) and self.target_value > 0):
            raise ValueError(f"target_value must be a number above 0, got {self.target_value}")
        if self.metric not in METRIC_VALUES:
            raise ValueError(
                f"unknown metric {self.metric!r}; expected one of {', '.join(METRIC_VALUES)}"
            )
        for name in ("scale_out_window_s", "scale_in_window_s"):
            window = getattr(self, name)
            if window is not None and not (math.isfinite(window) and window >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {window}")

    @classmethod
    def from_value(cls, value: AutoScalingPolicy | Mapping[str, Any]) -> AutoScalingPolicy:
        """A policy from itself or from a dict of its fields (`{"max_replicas": 4, ...}`).

        Raises:
            TypeError: for another type, or a dict with keys that are not fields.
            ValueError: for values out of range.
        """
        if isinstance(value, AutoScalingPolicy):
            return value
        if isinstance(value, Mapping):
            known = {field.name for field in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise TypeError(
                    f"unknown autoscaling keys {unknown}; expected some of {sorted(known)}"
                )
            return cls(**value)
        raise TypeError(
            f"autoscaling must be an AutoScalingPolicy or a dict, got {type(value).__name__}"
        )

    def to_proto(self) -> model_pb2.ScalingPolicy:
        """The wire message; an unset window travels as 0, the proto's "unset"."""
        return model_pb2.ScalingPolicy(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            metric=METRIC_VALUES[self.metric],  # type: ignore[arg-type]
            target_value=self.target_value,
            scale_out_window_seconds=self.scale_out_window_s or 0.0,
            scale_in_window_seconds=self.scale_in_window_s or 0.0,
            disable_scale_in=self.disable_scale_in,
        )
