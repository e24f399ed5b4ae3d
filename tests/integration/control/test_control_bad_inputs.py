"""Bad inputs to a real control get INVALID_ARGUMENT, NOT_FOUND or FAILED_PRECONDITION, never
INTERNAL, nothing already stored is lost, and the control keeps serving.

Issue 14's list for the artifact store (10,000-character keys; keys `a` and `a.json/x`, which
collided in the digest layout) and what probing found next to them: long key segments,
multi-byte characters, long names in Describe/Delete/logs, negative offsets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from skmaker.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    serving_pb2,
    serving_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
CLASH = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp_path: Path = tmp_path_factory.mktemp("bad-inputs")
    service = run_service("control", tmp_path, ["--data-dir", str(tmp_path / "data")])
    try:
        yield service
    finally:
        service.stop()


def _messages(uri: str, data: bytes) -> Iterator[artifacts_pb2.UploadArtifactRequest]:
    yield artifacts_pb2.UploadArtifactRequest(
        header=artifacts_pb2.UploadHeader(
            uri=uri, size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
    )
    yield artifacts_pb2.UploadArtifactRequest(chunk=data)


def _upload(channel: grpc.Channel, uri: str, data: bytes) -> artifacts_pb2.ArtifactInfo:
    stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
    return stub.UploadArtifact(_messages(uri, data), timeout=10).artifact


def _download(channel: grpc.Channel, uri: str, offset: int = 0) -> bytes:
    stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
    request = artifacts_pb2.DownloadArtifactRequest(uri=uri, offset=offset)
    return b"".join(m.chunk for m in stub.DownloadArtifact(request, timeout=10))


def _list(channel: grpc.Channel, prefix: str) -> list[str]:
    stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
    listed = stub.ListArtifacts(artifacts_pb2.ListArtifactsRequest(uri_prefix=prefix), timeout=10)
    return [info.uri for info in listed.artifacts]


LONG_KEY = "store://" + "k" * 10_000
LONG_SEGMENT = "store://data/" + "s" * 256
MULTIBYTE_SEGMENT = "store://data/" + "é" * 128  # 256 bytes in UTF-8

CASES: dict[str, tuple[Callable[[grpc.Channel], object], grpc.StatusCode]] = {
    "upload, 10,000-character key": (lambda c: _upload(c, LONG_KEY, b"x"), INVALID),
    "download, 10,000-character key": (lambda c: _download(c, LONG_KEY), INVALID),
    "list, 10,000-character prefix": (lambda c: _list(c, LONG_KEY), INVALID),
    "upload, 256-byte segment": (lambda c: _upload(c, LONG_SEGMENT, b"x"), INVALID),
    "upload, 128 two-byte characters": (lambda c: _upload(c, MULTIBYTE_SEGMENT, b"x"), INVALID),
    "download, 256-byte segment": (lambda c: _download(c, LONG_SEGMENT), INVALID),
    "download, negative offset": (lambda c: _download(c, "store://seed/a", offset=-1), INVALID),
    "upload below an object": (lambda c: _upload(c, "store://seed/a/x", b"x"), CLASH),
    "upload over a folder": (lambda c: _upload(c, "store://seed", b"x"), CLASH),
    "describe, 10,000-character job name": (
        lambda c: training_pb2_grpc.TrainingServiceStub(c).DescribeTrainingJob(
            training_pb2.DescribeTrainingJobRequest(name="j" * 10_000), timeout=10
        ),
        NOT_FOUND,
    ),
    "logs, 10,000-character job name": (
        lambda c: list(
            training_pb2_grpc.TrainingServiceStub(c).GetTrainingJobLogs(
                training_pb2.GetTrainingJobLogsRequest(name="j" * 10_000), timeout=10
            )
        ),
        NOT_FOUND,
    ),
    "delete, 10,000-character model name": (
        lambda c: serving_pb2_grpc.ModelServiceStub(c).DeleteModel(
            serving_pb2.DeleteModelRequest(name="m" * 10_000), timeout=10
        ),
        NOT_FOUND,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_inputs_get_a_clear_status_and_the_control_serves_on(
    control: ServiceProcess, case: str
) -> None:
    channel = control.channel()
    _upload(channel, "store://seed/a", b"seed")
    call, status = CASES[case]
    with pytest.raises(grpc.RpcError) as refused:
        call(channel)
    assert refused.value.code() == status, (case, refused.value.details())
    assert "internal error" not in (refused.value.details() or "")
    assert _download(channel, "store://seed/a") == b"seed"
    assert _list(channel, "store://seed") == ["store://seed/a"]


@pytest.mark.parametrize("first, second", [("a", "a.json/x"), ("b.json/x", "b")])
def test_keys_that_only_look_alike_are_both_kept(
    control: ServiceProcess, first: str, second: str
) -> None:
    channel = control.channel()
    _upload(channel, f"store://alike/{first}", b"first")
    _upload(channel, f"store://alike/{second}", b"second")
    assert _download(channel, f"store://alike/{first}") == b"first"
    assert _download(channel, f"store://alike/{second}") == b"second"
    listed = _list(channel, "store://alike")
    assert {f"store://alike/{first}", f"store://alike/{second}"} <= set(listed)
