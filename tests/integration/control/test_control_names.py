"""Resource names over SageMaker's length limits are refused by a real control.

Every Create RPC answers INVALID_ARGUMENT, with the limit in the message, for names one over the
limit, 300 and 10,000 characters long, written as letters or as a run of hyphens (which the
pattern alone let through); nothing is stored, and the control keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from skmaker.v1 import (
    model_pb2,
    serving_pb2,
    serving_pb2_grpc,
    training_job_pb2,
    training_pb2,
    training_pb2_grpc,
    transform_job_pb2,
    transform_pb2,
    transform_pb2_grpc,
    tuning_job_pb2,
    tuning_pb2,
    tuning_pb2_grpc,
)
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp_path: Path = tmp_path_factory.mktemp("names")
    service = run_service(
        "control", tmp_path, ["--data-dir", str(tmp_path / "data"), "--replica-backend", "local"]
    )
    try:
        yield service
    finally:
        service.stop()


def _names(limit: int) -> list[str]:
    lengths = [limit + 1, 300, 10_000]
    return [("x" * n) for n in lengths] + [("a" + "-" * (n - 2) + "b") for n in lengths]


def _template() -> training_job_pb2.TrainingJobSpec:
    return training_job_pb2.TrainingJobSpec(
        entry_point="train.py", source_uri="store://jobs/x/source/sourcedir.tar.gz"
    )


def _calls(channel: grpc.Channel) -> dict[str, tuple[int, Callable[[str], object]]]:
    training = training_pb2_grpc.TrainingServiceStub(channel)
    tuning = tuning_pb2_grpc.TuningServiceStub(channel)
    transform = transform_pb2_grpc.TransformServiceStub(channel)
    models = serving_pb2_grpc.ModelServiceStub(channel)
    endpoints = serving_pb2_grpc.EndpointServiceStub(channel)
    return {
        "training job": (
            63,
            lambda name: training.CreateTrainingJob(
                training_pb2.CreateTrainingJobRequest(name=name, spec=_template()), timeout=10
            ),
        ),
        "tuning job": (
            32,
            lambda name: tuning.CreateTuningJob(
                tuning_pb2.CreateTuningJobRequest(
                    name=name,
                    spec=tuning_job_pb2.TuningJobSpec(
                        training_job_template=_template(), objective_metric_name="acc"
                    ),
                ),
                timeout=10,
            ),
        ),
        "transform job": (
            63,
            lambda name: transform.CreateTransformJob(
                transform_pb2.CreateTransformJobRequest(
                    name=name,
                    spec=transform_job_pb2.TransformJobSpec(
                        model_name="m", input_uri="store://in", output_uri="store://out"
                    ),
                ),
                timeout=10,
            ),
        ),
        "model": (
            63,
            lambda name: models.CreateModel(
                serving_pb2.CreateModelRequest(
                    model=model_pb2.Model(
                        name=name, model_data_uri="store://m/model.tar.gz", entry_point="i.py"
                    )
                ),
                timeout=10,
            ),
        ),
        "endpoint": (
            63,
            lambda name: endpoints.CreateEndpoint(
                serving_pb2.CreateEndpointRequest(name=name, model_name="m", initial_replicas=1),
                timeout=10,
            ),
        ),
    }


@pytest.mark.parametrize(
    "resource", ["training job", "tuning job", "transform job", "model", "endpoint"]
)
def test_names_over_the_limit_are_invalid_argument(control: ServiceProcess, resource: str) -> None:
    limit, create = _calls(control.channel())[resource]
    for name in _names(limit):
        with pytest.raises(grpc.RpcError) as caught:
            create(name)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (resource, len(name))
        details = caught.value.details() or ""
        assert f"invalid {resource} name" in details
        assert f"{len(name)} characters long, over the limit of {limit}" in details
        assert len(details) < 400, "the message repeats a long name only in part"


def test_the_control_lists_nothing_and_keeps_serving(control: ServiceProcess) -> None:
    channel = control.channel()
    for _, create in _calls(channel).values():
        with pytest.raises(grpc.RpcError):
            create("y" * 10_000)
    training = training_pb2_grpc.TrainingServiceStub(channel)
    listed = training.ListTrainingJobs(training_pb2.ListTrainingJobsRequest(), timeout=10)
    assert list(listed.training_jobs) == []
    endpoints = serving_pb2_grpc.EndpointServiceStub(channel)
    assert (
        list(endpoints.ListEndpoints(serving_pb2.ListEndpointsRequest(), timeout=10).endpoints)
        == []
    )
    models = serving_pb2_grpc.ModelServiceStub(channel)
    assert list(models.ListModels(serving_pb2.ListModelsRequest(), timeout=10).models) == []
