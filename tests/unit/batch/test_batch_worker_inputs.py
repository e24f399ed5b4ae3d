"""Where a batch worker reads a shard's input: the control's file when visible, else a download."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import prometheus_client
import pytest

from services.batch.control_link import ControlLink, ShardAssignment
from services.batch.metrics import BatchMetrics
from services.batch.models import ModelCache
from services.batch.worker import BatchWorker
from services.sagemaker.serving.model_loader import ModelSpec
from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc

DATA = b"".join(f"{i},{i + 1}\n".encode() for i in range(100))


class ArtifactsOnly(artifacts_pb2_grpc.ArtifactServiceServicer):
    """The control's DownloadArtifact over a few objects, in small chunks; each request is kept.

    `breaks` streams are cut off (UNAVAILABLE, as when the control restarts) after their first
    chunk.
    """

    def __init__(self, objects: dict[str, bytes], chunk: int = 16, breaks: int = 0) -> None:
        self.objects = objects
        self.chunk = chunk
        self.breaks = breaks
        self.requests: list[tuple[str, int, int]] = []

    def DownloadArtifact(
        self, request: artifacts_pb2.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[artifacts_pb2.DownloadArtifactResponse]:
        self.requests.append((request.uri, request.offset, request.length))
        data = self.objects[request.uri]
        yield artifacts_pb2.DownloadArtifactResponse(
            info=artifacts_pb2.ArtifactInfo(uri=request.uri, size=len(data))
        )
        end = len(data) if request.length == 0 else request.offset + request.length
        for start in range(request.offset, min(end, len(data)), self.chunk):
            yield artifacts_pb2.DownloadArtifactResponse(
                chunk=data[start : min(start + self.chunk, end)]
            )
            if self.breaks:
                self.breaks -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "the control restarts")


@pytest.fixture
def artifacts() -> Iterator[tuple[ArtifactsOnly, str]]:
    """A gRPC ArtifactService on 127.0.0.1 holding `store://in/data.csv`."""
    servicer = ArtifactsOnly({"store://in/data.csv": DATA})
    server = grpc.server(futures.ThreadPoolExecutor(2))
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0).wait()


class DownloadOnlyLink(ControlLink):
    """A ControlLink to the fake artifact service whose whole-object downloads are counted."""

    def __init__(self, address: str, objects: dict[str, bytes]) -> None:
        super().__init__(address, "test/1", control_timeout_s=5.0)
        self.objects = objects
        self.downloads: list[tuple[str, int, int]] = []

    def download_file(self, uri: str, dest: Path) -> None:
        self.downloads.append((uri, 0, 0))
        dest.write_bytes(self.objects[uri])


def _worker(tmp_path: Path, link: ControlLink, *, local_inputs: bool = True) -> BatchWorker:
    metrics = BatchMetrics.create(prometheus_client.CollectorRegistry())
    models = ModelCache(tmp_path / "work", tmp_path / "deps", {})
    return BatchWorker(link, models, tmp_path / "work", metrics, local_inputs=local_inputs)


def _shard(path: str, size: int, start: int, end: int, **changes: object) -> ShardAssignment:
    values: dict[str, object] = {
        "task_id": "t",
        "attempt": 1,
        "heartbeat_interval_s": 1.0,
        "job_name": "j",
        "model": ModelSpec(name="m", model_data_uri="store://m.tar.gz", entry_point="s.py"),
        "input_uri": "store://in/data.csv",
        "shard_index": 1,
        "start": start,
        "end": end,
        "output_uri": "store://out/x",
        "is_first_shard": start == 0,
        "input_path": path,
        "input_size": size,
    }
    values.update(changes)
    return ShardAssignment(**values)  # type: ignore[arg-type]


@pytest.fixture
def control_file(tmp_path: Path) -> Path:
    path = tmp_path / "control-disk" / "data.csv"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return path


def test_the_control_file_is_read_in_place_when_visible(
    tmp_path: Path, control_file: Path, artifacts: tuple[ArtifactsOnly, str]
) -> None:
    servicer, address = artifacts
    link = DownloadOnlyLink(address, {"store://in/data.csv": DATA})
    worker = _worker(tmp_path, link)
    source, size = worker._open_input(_shard(str(control_file), len(DATA), 40, 90), tmp_path)
    with source:
        assert source.read(size) == DATA[40:90]
    assert link.downloads == [] and servicer.requests == []


@pytest.mark.parametrize(
    "why",
    ["object changed size", "no such file here", "worker told to download"],
)
def test_otherwise_the_range_is_streamed(
    tmp_path: Path, control_file: Path, why: str, artifacts: tuple[ArtifactsOnly, str]
) -> None:
    servicer, address = artifacts
    link = DownloadOnlyLink(address, {"store://in/data.csv": DATA})
    path, size, local_inputs = str(control_file), len(DATA), True
    if why == "object changed size":
        size += 1
    elif why == "no such file here":
        path = str(tmp_path / "elsewhere" / "data.csv")
    else:
        local_inputs = False
    worker = _worker(tmp_path, link, local_inputs=local_inputs)
    source, length = worker._open_input(_shard(path, size, 40, 90), tmp_path)
    with source:
        assert source.read(length) == DATA[40:90]
    assert servicer.requests == [("store://in/data.csv", 40, 50)]
    assert not (tmp_path / "input").exists()  # nothing written to disk on the way


def test_a_broken_stream_resumes_where_it_stopped(
    tmp_path: Path, artifacts: tuple[ArtifactsOnly, str]
) -> None:
    servicer, address = artifacts
    servicer.breaks = 2
    link = DownloadOnlyLink(address, {"store://in/data.csv": DATA})
    with link.open_range("store://in/data.csv", 40, 200) as source:
        buffer = bytearray(150)
        # A full buffer from several chunks, across both breaks; then the rest, then the end.
        assert source.readinto(buffer) == 150 and bytes(buffer) == DATA[40:190]
        assert source.read() == DATA[190:240]
        assert source.read() == b""
    assert servicer.requests == [
        ("store://in/data.csv", 40, 200),
        ("store://in/data.csv", 56, 184),
        ("store://in/data.csv", 72, 168),
    ]


def test_a_range_past_the_objects_end_ends_with_it(artifacts: tuple[ArtifactsOnly, str]) -> None:
    _, address = artifacts
    link = DownloadOnlyLink(address, {})
    with link.open_range("store://in/data.csv", len(DATA) - 30, 100) as source:
        assert source.read() == DATA[-30:]


def test_a_missing_object_is_the_controls_error(artifacts: tuple[ArtifactsOnly, str]) -> None:
    _, address = artifacts
    link = DownloadOnlyLink(address, {})
    with (
        link.open_range("store://in/other.csv", 0, 10) as source,
        pytest.raises(grpc.RpcError) as caught,
    ):
        source.read()
    assert caught.value.code() == grpc.StatusCode.UNKNOWN  # the fake's KeyError


def test_a_gzip_object_is_read_whole(
    tmp_path: Path, control_file: Path, artifacts: tuple[ArtifactsOnly, str]
) -> None:
    _, address = artifacts
    link = DownloadOnlyLink(address, {"store://in/data.csv": DATA})
    worker = _worker(tmp_path, link)
    shard = _shard(str(control_file), len(DATA), 0, len(DATA), compression="Gzip")
    source, size = worker._open_input(shard, tmp_path)
    with source:
        assert (source.read(), size) == (DATA, len(DATA))
