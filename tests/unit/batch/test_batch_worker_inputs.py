"""Where a batch worker reads a shard's input: the control's file when visible, else a download."""

from __future__ import annotations

from pathlib import Path

import prometheus_client
import pytest

from services.batch.control_link import ControlLink, ShardAssignment
from services.batch.metrics import BatchMetrics
from services.batch.models import ModelCache
from services.batch.worker import BatchWorker
from services.sagemaker.serving.model_loader import ModelSpec

DATA = b"".join(f"{i},{i + 1}\n".encode() for i in range(100))


class DownloadOnlyLink(ControlLink):
    """A ControlLink to nowhere whose downloads copy a local object and are counted."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__("127.0.0.1:1", "test/1", control_timeout_s=0.1)
        self.objects = objects
        self.downloads: list[tuple[str, int, int]] = []

    def download_range(self, uri: str, offset: int, length: int, dest: Path) -> int:
        self.downloads.append((uri, offset, length))
        dest.write_bytes(self.objects[uri][offset : offset + length])
        return len(dest.read_bytes())

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


def test_the_control_file_is_read_in_place_when_visible(tmp_path: Path, control_file: Path) -> None:
    link = DownloadOnlyLink({"store://in/data.csv": DATA})
    worker = _worker(tmp_path, link)
    source, size = worker._open_input(_shard(str(control_file), len(DATA), 40, 90), tmp_path)
    with source:
        assert source.read(size) == DATA[40:90]
    assert link.downloads == []


@pytest.mark.parametrize(
    "why",
    ["object changed size", "no such file here", "worker told to download"],
)
def test_otherwise_the_range_is_downloaded(tmp_path: Path, control_file: Path, why: str) -> None:
    link = DownloadOnlyLink({"store://in/data.csv": DATA})
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
    assert link.downloads == [("store://in/data.csv", 40, 50)]


def test_a_gzip_object_is_read_whole(tmp_path: Path, control_file: Path) -> None:
    link = DownloadOnlyLink({"store://in/data.csv": DATA})
    worker = _worker(tmp_path, link)
    shard = _shard(str(control_file), len(DATA), 0, len(DATA), compression="Gzip")
    source, size = worker._open_input(shard, tmp_path)
    with source:
        assert (source.read(), size) == (DATA, len(DATA))
