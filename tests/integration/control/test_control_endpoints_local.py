"""Models and endpoints through the real control (`--local`) and real inference replicas.

One control serves the endpoint story (create with 2 replicas, predict through the stable and
each replica address, kill -9 of a replica, update to another model, delete) and the failing
script; a second one is killed with -9 and restarted with an endpoint InService.
"""

from __future__ import annotations

import io
import itertools
import os
import signal
import socket
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker.v1 import (
    artifacts_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    model_pb2,
    serving_pb2,
    serving_pb2_grpc,
    transfer,
)
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 3.3, 6.0, 2.5]]
SERVING_SCRIPT = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""
SCRIPT_WITHOUT_MODEL_FN = """
def predict_fn(data, model):
    return model.predict(data)
"""
IN_SERVICE = model_pb2.ENDPOINT_STATUS_IN_SERVICE
FAILED = model_pb2.ENDPOINT_STATUS_FAILED
SERVING = model_pb2.REPLICA_STATE_SERVING


# ----------------------------------------------------------------- helpers


def _iris_model(label_offset: int) -> DecisionTreeClassifier:
    """A tree on iris; `label_offset` shifts its labels so two models answer differently."""
    iris = load_iris()
    return DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target + label_offset)


def _model_archive(path: Path, model: Any, script: str) -> Path:
    """model.tar.gz with model.joblib at the root and the script as code/inference.py."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (("model.joblib", buffer.getvalue()), ("code/inference.py", script)):
            payload = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def _create_model(control: ServiceProcess, tmp: Path, name: str, model: Any, script: str) -> None:
    channel = control.channel()
    archive = _model_archive(tmp / f"{name}.tar.gz", model, script)
    uri = f"store://models/{name}/model.tar.gz"
    transfer.upload_file(artifacts_pb2_grpc.ArtifactServiceStub(channel), archive, uri)
    serving_pb2_grpc.ModelServiceStub(channel).CreateModel(
        serving_pb2.CreateModelRequest(
            model=model_pb2.Model(name=name, model_data_uri=uri, entry_point="inference.py")
        ),
        timeout=10,
    )


def _describe(control: ServiceProcess, name: str) -> model_pb2.Endpoint:
    stub = serving_pb2_grpc.EndpointServiceStub(control.channel())
    request = serving_pb2.DescribeEndpointRequest(name=name)
    return stub.DescribeEndpoint(request, timeout=10).endpoint


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s}s"
        time.sleep(0.1)


def _wait_for_status(
    control: ServiceProcess, name: str, status: int, timeout_s: float = 30.0
) -> model_pb2.Endpoint:
    found: list[model_pb2.Endpoint] = []

    def reached() -> bool:
        found[:] = [_describe(control, name)]
        return found[0].status == status

    try:
        _wait_for(reached, timeout_s, model_pb2.EndpointStatus.Name(status))
    except AssertionError:
        raise AssertionError(f"{found[0] if found else name}\n{control.logs()}") from None
    return found[0]


def _predict(address: str, *, retries: int = 0) -> list[int]:
    """Labels for ROWS from the replica(s) at `address`, over a fresh connection.

    Retries UNAVAILABLE `retries` times, as the client does: a connection the kernel had
    queued on a replica killed a moment ago is reset.
    """
    text = "\n".join(",".join(str(v) for v in row) for row in ROWS)
    request = inference_pb2.PredictRequest(content_type="text/csv", accept="text/csv", text=text)
    for attempt in range(retries + 1):
        with grpc.insecure_channel(address) as channel:
            try:
                answer = inference_pb2_grpc.InferenceServiceStub(channel).Predict(
                    request, timeout=10
                )
                return [int(float(line)) for line in answer.text.split()]
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or attempt == retries:
                    raise
        time.sleep(0.1 * (attempt + 1))  # back off as the client does, not in a tight loop
    raise AssertionError("unreachable")


def _expected(model: Any) -> list[int]:
    return [int(label) for label in model.predict(np.asarray(ROWS, dtype=np.float32))]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return []
    return [] if state == "Z" else [arg.decode() for arg in raw.split(b"\0")]


def _replica_pids(data_dir: Path) -> dict[tuple[str, str], int]:
    """Live inference replicas working under `data_dir`, by (endpoint, replica id)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = _cmdline(int(entry.name))
        if "services.inference" in args and any(str(data_dir) in arg for arg in args):
            flags = dict(itertools.pairwise(args))
            found[(flags["--endpoint-name"], flags["--replica-id"])] = int(entry.name)
    return found


def _replica_files(data_dir: Path, endpoint: str) -> set[str]:
    """Ids of the replicas of `endpoint` with a work dir, port file or failure file left."""
    folder = data_dir / "work" / "endpoints" / endpoint
    if not folder.is_dir():
        return set()
    return {
        entry.name.removesuffix(".ports.json").removesuffix(".failure.txt")
        for entry in folder.iterdir()
        if not entry.name.startswith(".")
    }


def _refuses_connections(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The control's data dir; replicas a failing test leaves behind are killed."""
    path = tmp_path / "data"
    yield path
    for pid in _replica_pids(path).values():
        os.kill(pid, signal.SIGKILL)


def _start_control(tmp_path: Path, data_dir: Path) -> ServiceProcess:
    return run_service(
        "control", tmp_path, ["--local", "--local-trainers", "0", "--data-dir", str(data_dir)]
    )


# ----------------------------------------------------------------- tests


def test_endpoint_serves_survives_a_killed_replica_updates_and_deletes(
    tmp_path: Path, data_dir: Path
) -> None:
    first_model, second_model = _iris_model(0), _iris_model(10)
    control = _start_control(tmp_path, data_dir)
    try:
        _create_model(control, tmp_path, "tree", first_model, SERVING_SCRIPT)
        _create_model(control, tmp_path, "shifted-tree", second_model, SERVING_SCRIPT)
        _create_model(control, tmp_path, "no-model-fn", first_model, SCRIPT_WITHOUT_MODEL_FN)
        endpoints = serving_pb2_grpc.EndpointServiceStub(control.channel())
        created = endpoints.CreateEndpoint(
            serving_pb2.CreateEndpointRequest(name="iris", model_name="tree", initial_replicas=2),
            timeout=10,
        ).endpoint
        assert created.status == model_pb2.ENDPOINT_STATUS_CREATING
        endpoints.CreateEndpoint(
            serving_pb2.CreateEndpointRequest(
                name="broken", model_name="no-model-fn", initial_replicas=1
            ),
            timeout=10,
        )

        # Creating -> InService; every replica and the stable address answer like the model.
        endpoint = _wait_for_status(control, "iris", IN_SERVICE)
        assert endpoint.address == created.address and endpoint.desired_replicas == 2
        assert [r.state for r in endpoint.replicas] == [SERVING, SERVING]
        expected = _expected(first_model)
        assert _predict(endpoint.address) == expected
        for replica in endpoint.replicas:
            assert replica.model_name == "tree" and replica.metrics_address
            assert _predict(replica.address) == expected
        metrics = _scrape(control.metrics_port)
        assert 'skmaker_control_endpoint_replicas{endpoint="iris"} 2.0' in metrics
        assert 'skmaker_control_endpoint_desired_replicas{endpoint="iris"} 2.0' in metrics

        # A script without model_fn fails its endpoint, saying so.
        broken = _wait_for_status(control, "broken", FAILED)
        assert "model_fn" in broken.failure_reason, broken.failure_reason

        # kill -9 of a replica: replaced, InService again, predictions keep working.
        victim = endpoint.replicas[0]
        os.kill(_replica_pids(data_dir)[("iris", victim.id)], signal.SIGKILL)
        # The other replica serves meanwhile (a call the kernel had queued on the victim is
        # reset: UNAVAILABLE, retried as the client does).
        assert _predict(endpoint.address, retries=6) == expected

        def replaced() -> bool:
            now = _describe(control, "iris")
            ids = {r.id for r in now.replicas if r.state == SERVING}
            return now.status == IN_SERVICE and len(ids) == 2 and victim.id not in ids

        _wait_for(replaced, 30, "replacement of the killed replica")
        events = [event.message for event in _describe(control, "iris").events]
        assert any(f"replica {victim.id} exited with -9" in m for m in events), events
        assert _predict(endpoint.address) == expected

        # Update to another model: answers come from it once InService.
        old_addresses = [r.address for r in _describe(control, "iris").replicas]
        endpoints.UpdateEndpoint(
            serving_pb2.UpdateEndpointRequest(name="iris", model_name="shifted-tree"), timeout=10
        )
        updated = _wait_for_status(control, "iris", IN_SERVICE)
        assert updated.model_name == "shifted-tree"
        assert {r.model_name for r in updated.replicas if r.state == SERVING} == {"shifted-tree"}
        assert _predict(updated.address) == _expected(second_model)
        assert [label - 10 for label in _expected(second_model)] == expected
        _wait_for(
            lambda: all(_refuses_connections(a) for a in old_addresses), 20, "old replicas gone"
        )
        # Work dirs, port and failure files of the replicas that are gone are removed.
        current = {r.id for r in _describe(control, "iris").replicas}
        _wait_for(
            lambda: _replica_files(data_dir, "iris") == current,
            20,
            "files of gone replicas removed",
        )

        # Delete: replicas stop and their ports, own and shared, are free.
        addresses = [r.address for r in updated.replicas] + [updated.address]
        endpoints.DeleteEndpoint(serving_pb2.DeleteEndpointRequest(name="iris"), timeout=10)

        def deleted() -> bool:
            try:
                _describe(control, "iris")
            except grpc.RpcError as err:
                return err.code() == grpc.StatusCode.NOT_FOUND
            return False

        _wait_for(deleted, 20, "deletion")
        assert not any(endpoint == "iris" for endpoint, _ in _replica_pids(data_dir))
        assert not (data_dir / "work" / "endpoints" / "iris").exists()
        assert all(_refuses_connections(address) for address in addresses)
    finally:
        control.stop()
    assert _replica_pids(data_dir) == {}, "replicas outlived the control's SIGTERM"


def test_control_killed_and_restarted_serves_its_endpoint_again(
    tmp_path: Path, data_dir: Path
) -> None:
    model = _iris_model(0)
    control = _start_control(tmp_path, data_dir)
    try:
        _create_model(control, tmp_path, "tree", model, SERVING_SCRIPT)
        serving_pb2_grpc.EndpointServiceStub(control.channel()).CreateEndpoint(
            serving_pb2.CreateEndpointRequest(name="iris", model_name="tree", initial_replicas=1),
            timeout=10,
        )
        before = _wait_for_status(control, "iris", IN_SERVICE)
    finally:
        control.kill()  # kill -9 of the control's process group; replicas run in their own
    # Their lifeline to the control broke: they drain and exit by themselves.
    _wait_for(lambda: _replica_pids(data_dir) == {}, 15, "the replicas to stop with the control")

    control = _start_control(tmp_path, data_dir)
    try:
        # A fresh replica loads the model again (its fast path verification takes a while on a
        # busy machine).
        after = _wait_for_status(control, "iris", IN_SERVICE, timeout_s=120)
        assert after.address == before.address
        assert before.replicas[0].id not in {r.id for r in after.replicas}
        assert list(_replica_pids(data_dir)) == [("iris", after.replicas[0].id)]
        # The killed run's replica left its work dir; this run removed it.
        assert _replica_files(data_dir, "iris") == {after.replicas[0].id}
        assert _predict(after.address) == _expected(model)
    finally:
        control.stop()  # SIGTERM: exit 0, asserted by the harness
    assert _replica_pids(data_dir) == {}, "replicas outlived the control's SIGTERM"


def test_without_a_replica_backend_endpoints_are_refused(tmp_path: Path, data_dir: Path) -> None:
    control = run_service("control", tmp_path, ["--data-dir", str(data_dir)])
    try:
        _create_model(control, tmp_path, "tree", _iris_model(0), SERVING_SCRIPT)
        with pytest.raises(grpc.RpcError) as refused:
            serving_pb2_grpc.EndpointServiceStub(control.channel()).CreateEndpoint(
                serving_pb2.CreateEndpointRequest(
                    name="iris", model_name="tree", initial_replicas=1
                ),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--local" in str(refused.value.details())
    finally:
        control.stop()
