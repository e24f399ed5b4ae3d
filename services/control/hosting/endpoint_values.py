"""Endpoint domain values: statuses (SageMaker's EndpointStatus), scaling policy, events, views.

An endpoint's durable part (`Endpoint`) lives in the database; its replicas' runtime state
comes from the replica backend (`backends.ReplicaInfo`) and is joined in `EndpointView`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from services.control.backends import ReplicaInfo

# SageMaker's FailureReason limit.
FAILURE_REASON_MAX_CHARS = 1024


class EndpointStatus(enum.StrEnum):
    """SageMaker's endpoint statuses that skmaker uses (contract §3.6)."""

    CREATING = "Creating"
    IN_SERVICE = "InService"
    UPDATING = "Updating"
    SYSTEM_UPDATING = "SystemUpdating"
    DELETING = "Deleting"
    FAILED = "Failed"

    @property
    def is_live(self) -> bool:
        """True while the endpoint should have replicas running (not Failed, not Deleting)."""
        return self not in {EndpointStatus.FAILED, EndpointStatus.DELETING}


class ScalingMetric(enum.StrEnum):
    """The load signal an autoscaling policy tracks."""

    CONCURRENT_REQUESTS_PER_REPLICA = "ConcurrentRequestsPerReplica"
    INVOCATIONS_PER_REPLICA_PER_MINUTE = "InvocationsPerReplicaPerMinute"


@dataclass(frozen=True)
class ScalingPolicy:
    """An endpoint's target-tracking policy, stored as given (the autoscaler applies it)."""

    min_replicas: int
    max_replicas: int
    metric: ScalingMetric = ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA
    target_value: float = 0.0
    scale_out_window_seconds: float = 0.0
    scale_in_window_seconds: float = 0.0
    disable_scale_in: bool = False


@dataclass(frozen=True)
class EndpointEvent:
    """Something that happened to an endpoint, as a sentence for people."""

    timestamp: float
    message: str


@dataclass(frozen=True)
class Endpoint:
    """An endpoint's durable state.

    Attributes:
        name: unique, by SageMaker's rule (`skmaker.v1.names`: 1-63 characters).
        model_name: the model its replicas should serve.
        status: where it is in its life.
        desired_replicas: replicas wanted now.
        creation_time: Unix seconds.
        last_modified_time: Unix seconds of the last status or target change.
        failure_reason: why it failed, or why the last update was rolled back.
        address: the stable host:port shared by its replicas; empty until the backend gave one.
        scaling_policy: None for a fixed replica count.
        previous_model_name: during a model update, the model to roll back to.
    """

    name: str
    model_name: str
    status: EndpointStatus
    desired_replicas: int
    creation_time: float
    last_modified_time: float
    failure_reason: str = ""
    address: str = ""
    scaling_policy: ScalingPolicy | None = None
    previous_model_name: str = ""


@dataclass(frozen=True)
class PredictPath:
    """What answers a replica's predict calls, as the replica reported it at model load.

    Attributes:
        model_name: the model it was reported for.
        name: `onnxruntime`, `treelite-gtil` (a verified fast path), `scikit-learn` or
            `user-handler` (services/sagemaker/serving/fast_path.py).
        reason: what was verified, or why scikit-learn serves.
        refused: every fast runtime tried was refused, so scikit-learn serves.
        max_rows: calls with more rows go to scikit-learn; 0 for no limit or no fast path.
    """

    model_name: str
    name: str
    reason: str
    refused: bool = False
    max_rows: int = 0


@dataclass(frozen=True)
class EndpointView:
    """What DescribeEndpoint shows: the endpoint, its replicas now and its recent events.

    `predict_paths` maps a replica id to what its replica reported serving predicts with.
    """

    endpoint: Endpoint
    replicas: tuple[ReplicaInfo, ...]
    events: tuple[EndpointEvent, ...]
    predict_paths: dict[str, PredictPath] = field(default_factory=dict)


def truncate_reason(reason: str) -> str:
    """`reason` cut to 1024 characters (marked with an ellipsis), SageMaker's limit."""
    reason = reason.strip()
    if len(reason) <= FAILURE_REASON_MAX_CHARS:
        return reason
    return reason[: FAILURE_REASON_MAX_CHARS - 1] + "…"
