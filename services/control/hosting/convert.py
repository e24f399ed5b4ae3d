"""Pure conversions between the model and endpoint wire messages and the control's values.

With the model and endpoint servicers, the only hosting modules that import generated protobuf.
"""

from __future__ import annotations

from services.control.artifacts.store import store_uri_of
from services.control.backends import ReplicaInfo, ReplicaState
from services.control.hosting.endpoint_values import (
    EndpointStatus,
    EndpointView,
    PredictPath,
    ScalingMetric,
    ScalingPolicy,
)
from services.control.hosting.model_values import Model
from services.control.timestamps import timestamp
from services.control.training.convert import runtime_to_pb
from services.control.training.values import RuntimeVersions
from services.runtime.errors import InvalidArgument
from skmaker.v1 import (
    model_pb2,
)

_ENDPOINT_STATUS_TO_PB = {
    EndpointStatus.CREATING: model_pb2.ENDPOINT_STATUS_CREATING,
    EndpointStatus.IN_SERVICE: model_pb2.ENDPOINT_STATUS_IN_SERVICE,
    EndpointStatus.UPDATING: model_pb2.ENDPOINT_STATUS_UPDATING,
    EndpointStatus.SYSTEM_UPDATING: model_pb2.ENDPOINT_STATUS_SYSTEM_UPDATING,
    EndpointStatus.DELETING: model_pb2.ENDPOINT_STATUS_DELETING,
    EndpointStatus.FAILED: model_pb2.ENDPOINT_STATUS_FAILED,
}
_REPLICA_STATE_TO_PB = {
    ReplicaState.STARTING: model_pb2.REPLICA_STATE_STARTING,
    ReplicaState.SERVING: model_pb2.REPLICA_STATE_SERVING,
    ReplicaState.DRAINING: model_pb2.REPLICA_STATE_DRAINING,
    ReplicaState.FAILED: model_pb2.REPLICA_STATE_FAILED,
}
_METRIC_FROM_PB = {
    model_pb2.SCALING_METRIC_UNSPECIFIED: ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA,
    model_pb2.SCALING_METRIC_CONCURRENT_REQUESTS_PER_REPLICA: (
        ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA
    ),
    model_pb2.SCALING_METRIC_INVOCATIONS_PER_REPLICA_PER_MINUTE: (
        ScalingMetric.INVOCATIONS_PER_REPLICA_PER_MINUTE
    ),
}
_METRIC_TO_PB = {
    ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA: (
        model_pb2.SCALING_METRIC_CONCURRENT_REQUESTS_PER_REPLICA
    ),
    ScalingMetric.INVOCATIONS_PER_REPLICA_PER_MINUTE: (
        model_pb2.SCALING_METRIC_INVOCATIONS_PER_REPLICA_PER_MINUTE
    ),
}


def model_from_pb(model: model_pb2.Model) -> Model:
    """The domain model of a CreateModel request's model (times are set by the control)."""
    return Model(
        name=model.name,
        model_data_uri=store_uri_of(model.model_data_uri),
        entry_point=model.entry_point,
        source_uri=store_uri_of(model.source_uri),
        environment=dict(model.environment),
        training_job_name=model.training_job_name,
        framework_version=model.framework_version,
        # script_runtime is the control's to set.
    )


def model_to_pb(model: Model) -> model_pb2.Model:
    """The wire form of a model."""
    return model_pb2.Model(
        name=model.name,
        model_data_uri=model.model_data_uri,
        entry_point=model.entry_point,
        source_uri=model.source_uri,
        environment=dict(model.environment),
        creation_time=timestamp(model.creation_time),
        training_job_name=model.training_job_name,
        runtime_versions=(
            runtime_to_pb(model.runtime_versions)
            if model.runtime_versions != RuntimeVersions()
            else None
        ),
        framework_version=model.framework_version,
        script_runtime=model.script_runtime,
    )


def scaling_policy_from_pb(message: model_pb2.ScalingPolicy, is_set: bool) -> ScalingPolicy | None:
    """The domain policy; None when the request left the field unset.

    Raises:
        InvalidArgument: an unknown metric.
    """
    if not is_set:
        return None
    try:
        metric = _METRIC_FROM_PB[message.metric]
    except KeyError:
        raise InvalidArgument(f"unknown scaling metric {message.metric}") from None
    return ScalingPolicy(
        min_replicas=message.min_replicas,
        max_replicas=message.max_replicas,
        metric=metric,
        target_value=message.target_value,
        scale_out_window_seconds=message.scale_out_window_seconds,
        scale_in_window_seconds=message.scale_in_window_seconds,
        disable_scale_in=message.disable_scale_in,
    )


def predict_path_from_pb(model_name: str, message: model_pb2.PredictPath) -> PredictPath:
    """The domain form of the predict path a replica reported for `model_name`."""
    return PredictPath(
        model_name=model_name,
        name=message.name,
        reason=message.reason,
        refused=message.refused,
        max_rows=max(0, message.max_rows),
    )


def _replica_to_pb(replica: ReplicaInfo, path: PredictPath | None) -> model_pb2.Replica:
    message = model_pb2.Replica(
        id=replica.id,
        address=replica.address,
        state=_REPLICA_STATE_TO_PB[replica.state],
        metrics_address=replica.metrics_address,
        model_name=replica.model_name,
    )
    # A report for another model (before a replica id's model changed) does not apply.
    if path is not None and path.model_name == replica.model_name:
        message.predict_path.CopyFrom(
            model_pb2.PredictPath(
                name=path.name, reason=path.reason, refused=path.refused, max_rows=path.max_rows
            )
        )
    return message


def endpoint_to_pb(view: EndpointView) -> model_pb2.Endpoint:
    """The wire form of an endpoint with its replicas and events."""
    endpoint = view.endpoint
    message = model_pb2.Endpoint(
        name=endpoint.name,
        model_name=endpoint.model_name,
        status=_ENDPOINT_STATUS_TO_PB[endpoint.status],
        failure_reason=endpoint.failure_reason,
        address=endpoint.address,
        replicas=[
            _replica_to_pb(replica, view.predict_paths.get(replica.id)) for replica in view.replicas
        ],
        desired_replicas=endpoint.desired_replicas,
        creation_time=timestamp(endpoint.creation_time),
        last_modified_time=timestamp(endpoint.last_modified_time),
        events=[
            model_pb2.EndpointEvent(timestamp=timestamp(event.timestamp), message=event.message)
            for event in view.events
        ],
    )
    policy = endpoint.scaling_policy
    if policy is not None:
        message.scaling_policy.CopyFrom(
            model_pb2.ScalingPolicy(
                min_replicas=policy.min_replicas,
                max_replicas=policy.max_replicas,
                metric=_METRIC_TO_PB[policy.metric],
                target_value=policy.target_value,
                scale_out_window_seconds=policy.scale_out_window_seconds,
                scale_in_window_seconds=policy.scale_in_window_seconds,
                disable_scale_in=policy.disable_scale_in,
            )
        )
    return message
