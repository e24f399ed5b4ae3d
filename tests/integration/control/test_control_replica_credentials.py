"""Replicas and batch workers hold no admin token, only their own, scoped one.

A real `--local` control with a token starts real replicas and batch workers. The model's
`predict_fn` plays the unkind model author: it looks for the token in its environment and /proc,
digs the process's credential out of its memory (the settings object) and calls the control
with it. A replica's reads its own model and nothing else; a batch worker's leases and reports
tasks and moves artifacts, but cannot list, create or delete anything.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from skmaker import Session, SKLearnModel, transfer
from skmaker.v1 import (
    artifacts_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    model_pb2,
    serving_pb2,
    serving_pb2_grpc,
)
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

TOKEN = "admin-" + secrets.token_hex(16)
METADATA = (("authorization", f"Bearer {TOKEN}"),)

# Answers every request with what it found and what the found credential could do.
PROBING_SCRIPT = """
import gc, json, os

def model_fn(model_dir):
    return "probe"

def input_fn(body, content_type):
    return json.loads(body)

def output_fn(found, accept):
    return json.dumps(found), "application/json"

def predict_fn(data, model):
    import grpc
    from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc, serving_pb2, serving_pb2_grpc
    from skmaker.v1 import training_pb2, training_pb2_grpc
    with open("/proc/self/environ", "rb") as handle:
        proc_environ = handle.read().decode("utf-8", "replace")
    kinds = ("InferenceSettings", "BatchSettings")
    settings = [o for o in gc.get_objects() if type(o).__name__ in kinds]
    stolen = settings[0].auth_token
    found = {"environ": dict(os.environ), "proc_environ": proc_environ, "stolen": stolen}
    metadata = (("authorization", "Bearer " + stolen),)
    calls = {}
    with grpc.insecure_channel(settings[0].control) as channel:
        models = serving_pb2_grpc.ModelServiceStub(channel)
        artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        training = training_pb2_grpc.TrainingServiceStub(channel)
        attempts = {
            "own model": lambda: models.DescribeModel(
                serving_pb2.DescribeModelRequest(name=data["own"]), metadata=metadata),
            "other model": lambda: models.DescribeModel(
                serving_pb2.DescribeModelRequest(name=data["other"]), metadata=metadata),
            "list models": lambda: models.ListModels(
                serving_pb2.ListModelsRequest(), metadata=metadata),
            "list jobs": lambda: training.ListTrainingJobs(
                training_pb2.ListTrainingJobsRequest(), metadata=metadata),
            "own archive": lambda: list(artifacts.DownloadArtifact(
                artifacts_pb2.DownloadArtifactRequest(uri=data["own_uri"]), metadata=metadata)),
            "other archive": lambda: list(artifacts.DownloadArtifact(
                artifacts_pb2.DownloadArtifactRequest(uri=data["other_uri"]), metadata=metadata)),
            "own archive URL": lambda: artifacts.PresignDownload(
                artifacts_pb2.PresignDownloadRequest(uri=data["own_uri"]), metadata=metadata),
            "other archive URL": lambda: artifacts.PresignDownload(
                artifacts_pb2.PresignDownloadRequest(uri=data["other_uri"]), metadata=metadata),
        }
        for what, call in attempts.items():
            try:
                call()
                calls[what] = "OK"
            except grpc.RpcError as err:
                calls[what] = err.code().name
    found["calls"] = calls
    return found
"""


def _model_archive(path: Path, script: str) -> Path:
    """model.tar.gz holding only the script, as code/inference.py."""
    with tarfile.open(path, "w:gz") as archive:
        payload = script.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return path


def _create_model(control: ServiceProcess, folder: Path, name: str) -> str:
    channel = control.channel()
    archive = _model_archive(folder / f"{name}.tar.gz", PROBING_SCRIPT)
    uri = f"store://models/{name}/model.tar.gz"
    transfer.upload_file(
        artifacts_pb2_grpc.ArtifactServiceStub(channel), archive, uri, metadata=METADATA
    )
    serving_pb2_grpc.ModelServiceStub(channel).CreateModel(
        serving_pb2.CreateModelRequest(
            model=model_pb2.Model(name=name, model_data_uri=uri, entry_point="inference.py")
        ),
        timeout=10,
        metadata=METADATA,
    )
    return uri


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("credentials")
    token_file = workdir / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    service = run_service(
        "control",
        workdir,
        ["--local", f"--data-dir={workdir / 'data'}", f"--auth-token-file={token_file}"],
    )
    yield service
    service.stop()


def _serving_address(control: ServiceProcess, endpoint: str) -> str:
    stub = serving_pb2_grpc.EndpointServiceStub(control.channel())
    deadline = time.monotonic() + 60
    while True:
        described = stub.DescribeEndpoint(
            serving_pb2.DescribeEndpointRequest(name=endpoint), timeout=10, metadata=METADATA
        ).endpoint
        if described.status == model_pb2.ENDPOINT_STATUS_IN_SERVICE:
            return described.address
        assert described.status != model_pb2.ENDPOINT_STATUS_FAILED, described
        assert time.monotonic() < deadline, f"{endpoint} not InService: {described}"
        time.sleep(0.1)


def _probe(address: str, body: dict[str, str], metadata: Any = METADATA) -> dict[str, Any]:
    request = inference_pb2.PredictRequest(
        content_type="application/json", accept="application/json", text=json.dumps(body)
    )
    with grpc.insecure_channel(address) as channel:
        answer = inference_pb2_grpc.InferenceServiceStub(channel).Predict(
            request, timeout=30, metadata=metadata
        )
    return dict(json.loads(answer.text))


def test_a_replicas_credential_reads_its_own_model_and_nothing_else(
    control: ServiceProcess, tmp_path: Path
) -> None:
    own_uri = _create_model(control, tmp_path, "probe-a")
    other_uri = _create_model(control, tmp_path, "probe-b")
    endpoints = serving_pb2_grpc.EndpointServiceStub(control.channel())
    endpoints.CreateEndpoint(
        serving_pb2.CreateEndpointRequest(name="probe", model_name="probe-a", initial_replicas=1),
        timeout=10,
        metadata=METADATA,
    )
    address = _serving_address(control, "probe")
    body = {"own": "probe-a", "other": "probe-b", "own_uri": own_uri, "other_uri": other_uri}

    found = _probe(address, body)

    assert TOKEN not in json.dumps(found["environ"]) and TOKEN not in found["proc_environ"]
    assert found["stolen"] and found["stolen"] != TOKEN
    assert found["calls"] == {
        "own model": "OK",
        "other model": "PERMISSION_DENIED",
        "list models": "PERMISSION_DENIED",
        "list jobs": "PERMISSION_DENIED",
        "own archive": "OK",
        "other archive": "PERMISSION_DENIED",
        "own archive URL": "OK",
        "other archive URL": "PERMISSION_DENIED",
    }
    # Callers still need the admin token, which the replica checks by its digest.
    with pytest.raises(grpc.RpcError) as refused:
        _probe(address, body, metadata=(("authorization", "Bearer " + found["stolen"]),))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_batch_workers_credential_cannot_act_as_a_user(
    control: ServiceProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "serve.py").write_text(PROBING_SCRIPT)
    with tarfile.open(folder / "model.tar.gz", "w:gz"):
        pass  # the model is the script alone
    with Session(control.address, token=TOKEN) as session:
        model = SKLearnModel(
            str(folder / "model.tar.gz"),
            entry_point=str(folder / "serve.py"),
            name="probe-batch",
            session=session,
        )
        model.create()
        own_uri = session.describe_model("probe-batch")["PrimaryContainer"]["ModelDataUrl"]
        other_uri = _create_model(control, tmp_path, "probe-other")
        body = {"own": "probe-batch", "other": "probe-other"}
        body |= {"own_uri": own_uri, "other_uri": other_uri}
        inputs = tmp_path / "inputs"
        inputs.mkdir()
        (inputs / "probe.json").write_text(json.dumps(body))
        data = session.upload_data(inputs, key_prefix="probe-inputs")
        transformer = model.transformer(instance_count=1, accept="application/json")
        transformer.transform(data, content_type="application/json")
        session.download_data(tmp_path / "out", transformer.output_path)

    found = json.loads((tmp_path / "out" / "probe.json.out").read_text())
    assert TOKEN not in json.dumps(found["environ"]) and TOKEN not in found["proc_environ"]
    assert found["stolen"] and found["stolen"] != TOKEN
    assert found["calls"] == {
        "own model": "OK",
        "other model": "OK",
        "list models": "PERMISSION_DENIED",
        "list jobs": "PERMISSION_DENIED",
        "own archive": "OK",
        "other archive": "OK",
        "own archive URL": "OK",
        "other archive URL": "OK",
    }
