"""A replica started with `--control-lost-exit-s` (how the Docker backend starts its containers,
which cannot hold the control's lifeline) drains and exits once its control is gone for good.
(That a control answering again within the window is ridden out: tests/unit/runtime.)"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from skmaker.v1 import artifacts_pb2_grpc, model_pb2, serving_pb2, serving_pb2_grpc, transfer
from tests.harness import run_service

pytestmark = pytest.mark.integration

SCRIPT = """
def model_fn(model_dir):
    return "echo"

def predict_fn(data, model):
    return data
"""


def _model_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        payload = SCRIPT.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return path


def test_a_replica_stops_once_its_control_is_gone_for_good(tmp_path: Path) -> None:
    control = run_service("control", tmp_path / "control", ["--data-dir", str(tmp_path / "data")])
    try:
        channel = control.channel()
        uri = "store://models/echo/model.tar.gz"
        transfer.upload_file(
            artifacts_pb2_grpc.ArtifactServiceStub(channel),
            _model_archive(tmp_path / "model.tar.gz"),
            uri,
        )
        serving_pb2_grpc.ModelServiceStub(channel).CreateModel(
            serving_pb2.CreateModelRequest(
                model=model_pb2.Model(name="echo", model_data_uri=uri, entry_point="inference.py")
            ),
            timeout=10,
        )
        replica = run_service(
            "inference",
            tmp_path / "replica",
            [
                *("--control", control.address, "--model-name", "echo", "--replica-id", "r-1"),
                *("--work-dir", str(tmp_path / "replica" / "work"), "--shutdown-grace-s", "1"),
                *("--control-lost-exit-s", "4"),
            ],
        )
    finally:
        control.kill()  # kill -9
    killed_at = time.monotonic()
    deadline = killed_at + 30
    while replica.process.poll() is None:
        assert time.monotonic() < deadline, f"the replica outlived its control\n{replica.logs()}"
        time.sleep(0.1)
    assert time.monotonic() - killed_at >= 4, "stopped before the control was silent 4s"
    assert replica.process.returncode == 0, replica.logs()
    assert "the control has not answered" in replica.logs()
