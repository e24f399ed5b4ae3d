"""Pure serving values of the client: endpoint/model descriptions, routing targets, policies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2

from skmaker import Unavailable, UnexpectedStatusException, naming
from skmaker.autoscaling import AutoScalingPolicy
from skmaker.descriptions import endpoint_description, endpoint_summary, model_description
from skmaker.routing import addresses_target, routing_target
from skmaker.v1 import model_pb2


def _stamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def _endpoint(**fields: object) -> model_pb2.Endpoint:
    defaults: dict[str, object] = {
        "name": "iris",
        "model_name": "iris-model",
        "status": model_pb2.ENDPOINT_STATUS_IN_SERVICE,
        "address": "127.0.0.1:7000",
        "desired_replicas": 2,
        "replicas": [
            model_pb2.Replica(
                id="r1",
                address="127.0.0.1:7001",
                state=model_pb2.REPLICA_STATE_SERVING,
                metrics_address="127.0.0.1:9001",
                model_name="iris-model",
                predict_path=model_pb2.PredictPath(
                    name="onnxruntime", reason="verified on 2401 rows", max_rows=2401
                ),
            ),
            model_pb2.Replica(
                id="r2", address="127.0.0.1:7002", state=model_pb2.REPLICA_STATE_STARTING
            ),
        ],
        "creation_time": _stamp(100),
        "last_modified_time": _stamp(200),
        "events": [model_pb2.EndpointEvent(timestamp=_stamp(150), message="replica r1 serving")],
    }
    defaults.update(fields)
    return model_pb2.Endpoint(**defaults)  # type: ignore[arg-type]


# -- descriptions ------------------------------------------------------------------------------


def test_endpoint_description_is_shaped_like_describe_endpoint() -> None:
    description = endpoint_description(_endpoint())
    assert description["EndpointName"] == "iris"
    assert description["EndpointStatus"] == "InService"
    assert description["ModelName"] == "iris-model"
    assert description["ProductionVariants"] == [
        {"VariantName": "AllTraffic", "CurrentInstanceCount": 1, "DesiredInstanceCount": 2}
    ]
    assert description["Address"] == "127.0.0.1:7000"
    assert description["DesiredReplicas"] == 2
    assert description["Replicas"] == [
        {
            "Id": "r1",
            "Address": "127.0.0.1:7001",
            "State": "Serving",
            "MetricsAddress": "127.0.0.1:9001",
            "ModelName": "iris-model",
            "PredictPath": {
                "Name": "onnxruntime",
                "Reason": "verified on 2401 rows",
                "Refused": False,
                "MaxRows": 2401,
            },
        },
        {"Id": "r2", "Address": "127.0.0.1:7002", "State": "Starting"},
    ]
    assert description["Events"] == [
        {"Message": "replica r1 serving", "Timestamp": datetime.fromtimestamp(150, UTC)}
    ]
    assert description["CreationTime"] == datetime.fromtimestamp(100, UTC)
    assert description["LastModifiedTime"] == datetime.fromtimestamp(200, UTC)
    assert "FailureReason" not in description
    assert "ScalingPolicy" not in description


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (model_pb2.ENDPOINT_STATUS_CREATING, "Creating"),
        (model_pb2.ENDPOINT_STATUS_IN_SERVICE, "InService"),
        (model_pb2.ENDPOINT_STATUS_UPDATING, "Updating"),
        (model_pb2.ENDPOINT_STATUS_DELETING, "Deleting"),
        (model_pb2.ENDPOINT_STATUS_FAILED, "Failed"),
        (model_pb2.ENDPOINT_STATUS_SYSTEM_UPDATING, "SystemUpdating"),
    ],
)
def test_endpoint_statuses_are_sagemakers(status: int, name: str) -> None:
    assert endpoint_description(_endpoint(status=status))["EndpointStatus"] == name


def test_failed_endpoint_carries_its_reason_and_policy() -> None:
    policy = AutoScalingPolicy(max_replicas=4, target_value=8, scale_in_window_s=30)
    description = endpoint_description(
        _endpoint(
            status=model_pb2.ENDPOINT_STATUS_FAILED,
            failure_reason="entry point defines no model_fn",
            scaling_policy=policy.to_proto(),
        )
    )
    assert description["FailureReason"] == "entry point defines no model_fn"
    assert description["ScalingPolicy"] == {
        "MinReplicas": 1,
        "MaxReplicas": 4,
        "Metric": "concurrent_requests_per_replica",
        "TargetValue": 8.0,
        "ScaleOutWindowSeconds": 0.0,
        "ScaleInWindowSeconds": 30.0,
        "DisableScaleIn": False,
    }


def test_endpoint_summary_counts_serving_replicas() -> None:
    summary = endpoint_summary(_endpoint())
    assert (summary["EndpointName"], summary["EndpointStatus"]) == ("iris", "InService")
    assert (summary["CurrentReplicas"], summary["DesiredReplicas"]) == (1, 2)


def test_model_description_is_shaped_like_describe_model() -> None:
    model = model_pb2.Model(
        name="m",
        model_data_uri="store://jobs/j/output/model.tar.gz",
        entry_point="train.py",
        source_uri="store://jobs/j/source/sourcedir.tar.gz",
        environment={"A": "1"},
        creation_time=_stamp(5),
        training_job_name="j",
    )
    assert model_description(model) == {
        "ModelName": "m",
        "PrimaryContainer": {
            "ModelDataUrl": "store://jobs/j/output/model.tar.gz",
            "Environment": {"A": "1"},
        },
        "EntryPoint": "train.py",
        "SourceUri": "store://jobs/j/source/sourcedir.tar.gz",
        "TrainingJobName": "j",
        "CreationTime": datetime.fromtimestamp(5, UTC),
    }


# -- routing targets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "target"),
    [
        (["127.0.0.1:7002", "127.0.0.1:7001"], "ipv4:127.0.0.1:7001,127.0.0.1:7002"),
        (["127.0.0.1:7001", "127.0.0.1:7001"], "ipv4:127.0.0.1:7001"),
        (["[::1]:7001", "[::1]:7002"], "ipv6:[::1]:7001,[::1]:7002"),
        (["replica.local:7001"], "replica.local:7001"),
    ],
)
def test_addresses_target(addresses: list[str], target: str) -> None:
    assert addresses_target(addresses) == target


@pytest.mark.parametrize("addresses", [[], ["a.local:1", "b.local:2"], ["127.0.0.1:1", "[::1]:2"]])
def test_addresses_that_one_channel_cannot_balance(addresses: list[str]) -> None:
    with pytest.raises(ValueError):
        addresses_target(addresses)


def test_routing_goes_to_serving_replicas_directly() -> None:
    assert routing_target(endpoint_description(_endpoint())) == "ipv4:127.0.0.1:7001"


def test_routing_falls_back_to_the_stable_address() -> None:
    starting = _endpoint(
        replicas=[
            model_pb2.Replica(
                id="r", address="127.0.0.1:7001", state=model_pb2.REPLICA_STATE_STARTING
            )
        ]
    )
    by_name = _endpoint(
        replicas=[
            model_pb2.Replica(
                id=f"r{i}", address=f"replica-{i}.svc:7000", state=model_pb2.REPLICA_STATE_SERVING
            )
            for i in range(2)
        ]
    )
    assert routing_target(endpoint_description(starting)) == "127.0.0.1:7000"
    assert routing_target(endpoint_description(by_name)) == "127.0.0.1:7000"


def test_routing_without_any_address_is_unavailable() -> None:
    description = endpoint_description(
        _endpoint(address="", replicas=[], status=model_pb2.ENDPOINT_STATUS_CREATING)
    )
    with pytest.raises(Unavailable, match=r"no serving replica.*Creating"):
        routing_target(description)


# -- policies, errors, names -------------------------------------------------------------------


def test_policy_from_a_dict_matches_the_dataclass() -> None:
    policy = AutoScalingPolicy.from_value(
        {"min_replicas": 2, "max_replicas": 5, "target_value": 600, "metric":
         "invocations_per_replica_per_minute", "disable_scale_in": True}
    )  # fmt: skip
    wire = policy.to_proto()
    assert (wire.min_replicas, wire.max_replicas, wire.target_value) == (2, 5, 600.0)
    assert wire.metric == model_pb2.SCALING_METRIC_INVOCATIONS_PER_REPLICA_PER_MINUTE
    assert wire.disable_scale_in
    assert AutoScalingPolicy.from_value(policy) is policy


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_replicas": 2, "target_value": 1, "min_replicas": 0}, "min_replicas"),
        ({"max_replicas": 1, "target_value": 1, "min_replicas": 2}, "max_replicas"),
        ({"max_replicas": 2, "target_value": 0}, "target_value"),
        ({"max_replicas": 2, "target_value": 1, "metric": "cpu"}, "unknown metric"),
        ({"max_replicas": 2, "target_value": 1, "scale_in_window_s": -1}, "scale_in_window_s"),
    ],
)
def test_policy_refuses_values_out_of_range(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoScalingPolicy.from_value(fields)


def test_policy_refuses_unknown_keys_and_types() -> None:
    with pytest.raises(TypeError, match="unknown autoscaling keys"):
        AutoScalingPolicy.from_value({"max_replicas": 2, "target_value": 1, "MaxCapacity": 3})
    with pytest.raises(TypeError, match="AutoScalingPolicy or a dict"):
        AutoScalingPolicy.from_value([2, 1])  # type: ignore[arg-type]


def test_endpoint_failure_has_sagemakers_wording() -> None:
    error = UnexpectedStatusException.for_endpoint("ep", "Failed", "no model_fn")
    assert str(error) == "Error hosting endpoint ep: Failed. Reason: no model_fn"
    assert (error.job_name, error.status, error.failure_reason) == ("ep", "Failed", "no model_fn")


def test_names_say_what_they_name() -> None:
    with pytest.raises(ValueError, match="invalid endpoint name"):
        naming.validate_name("bad_name", kind="endpoint")
