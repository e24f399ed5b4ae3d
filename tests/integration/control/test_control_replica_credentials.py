"""Replicas and batch workers hold no admin token, only their own, scoped one.

A real `--local` control with a token starts real replicas and batch workers. The model's
`predict_fn` plays the unkind model author: it looks for the token in its environment and /proc,
digs the process's credential out of its memory (the settings object) and calls the control
with it, and tries to read the control's database, artifacts, logs, environment and memory
(which a root control's replicas and batch workers, run as its job user, cannot). A replica's
credential reads its own model and nothing else; a batch worker's leases and reports tasks and
moves artifacts, but cannot list, create or delete anything.
"""

from __future__ import annotations

import io
import json
import os
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
from tests.harness import ServiceProcess, run_service, script_visible_dir

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
    try:
        with open("/proc/self/environ", "rb") as handle:
            proc_environ = handle.read().decode("utf-8", "replace")
    except OSError as err:  # not dumpable, and not root: /proc/self is root's
        proc_environ = type(err).__name__
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
    import pwd
    reads = {}
    for what, path in data.get("secrets", {}).items():
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, "rb") as handle:
                    handle.read(1)
            reads[what] = "read"
        except OSError as err:
            reads[what] = type(err).__name__
    found["reads"] = reads
    found["user"] = pwd.getpwuid(os.getuid()).pw_name
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


# A root control runs replicas and batch workers as its job user, which must reach the data
# folder (pytest's tmp_path is closed to other users).
DATA_DIR = script_visible_dir() / "data"


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("credentials")
    token_file = workdir / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    service = run_service(
        "control",
        workdir,
        ["--local", f"--data-dir={DATA_DIR}", f"--auth-token-file={token_file}"],
    )
    yield service
    service.stop()


def _secrets(control: ServiceProcess) -> dict[str, str]:
    """What model code must not read: the control's state, its environment and memory."""
    return {
        "data folder": str(DATA_DIR),
        "database": str(DATA_DIR / "control.db"),
        "artifacts": str(DATA_DIR / "artifacts"),
        "logs": str(DATA_DIR / "logs"),
        "control environ": f"/proc/{control.process.pid}/environ",
        "control memory": f"/proc/{control.process.pid}/mem",
    }


def _assert_runs_without_the_controls_power(found: dict[str, Any]) -> None:
    if os.geteuid() != 0:
        pytest.skip("model code runs as the control's own user unless the control is root")
    assert found["user"] == "skmaker-job"
    assert found["reads"] == {
        "data folder": "PermissionError",
        "database": "PermissionError",
        "artifacts": "PermissionError",
        "logs": "PermissionError",
        "control environ": "PermissionError",
        "control memory": "PermissionError",
    }
    names = set(found["environ"])
    assert not {name for name in names if name.endswith(("AUTH_TOKEN", "_TOKEN"))}, names


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
    body: dict[str, Any] = {"own": "probe-a", "other": "probe-b"}
    body |= {"own_uri": own_uri, "other_uri": other_uri, "secrets": _secrets(control)}

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
    _assert_runs_without_the_controls_power(found)


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
        body: dict[str, Any] = {"own": "probe-batch", "other": "probe-other"}
        body |= {"own_uri": own_uri, "other_uri": other_uri, "secrets": _secrets(control)}
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
    _assert_runs_without_the_controls_power(found)
