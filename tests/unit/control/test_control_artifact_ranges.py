"""Byte-range downloads (offset, length) through a real ArtifactService, and the store's helpers
for transforms: writes of the control's own bytes, deletes, and the hidden staging folder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import prometheus_client
import pytest

from services.control.artifacts.servicer import ArtifactsServicer
from services.control.artifacts.store import LocalArtifactStore, key_of
from services.control.metrics import ControlMetrics
from services.runtime.errors import ErrorInterceptor, InvalidArgument, NotFound
from skmaker.v1 import artifacts_pb2_grpc, transfer

DATA = bytes(range(256)) * 9000  # a little over 2 MiB: ranges cross chunk boundaries


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    artifacts = LocalArtifactStore(tmp_path / "artifacts", max_upload_bytes=10 * 1024 * 1024)
    artifacts.put("in/big.bin", len(DATA), hashlib.sha256(DATA).hexdigest(), [DATA])
    return artifacts


@pytest.fixture
def stub(store: LocalArtifactStore) -> Iterator[artifacts_pb2_grpc.ArtifactServiceStub]:
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[ErrorInterceptor()])
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(
        ArtifactsServicer(store, ControlMetrics(prometheus_client.CollectorRegistry())), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield artifacts_pb2_grpc.ArtifactServiceStub(channel)
    server.stop(None)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 0), (0, 10), (5, 0), (1024 * 1024 - 3, 7), (1_000_000, 1_200_000), (len(DATA) - 1, 50)],
)
def test_ranges_match_the_slice(
    stub: artifacts_pb2_grpc.ArtifactServiceStub, tmp_path: Path, offset: int, length: int
) -> None:
    expected = DATA[offset:] if length == 0 else DATA[offset : offset + length]
    got = b"".join(transfer.iter_range(stub, "store://in/big.bin", offset, length))
    assert got == expected
    dest = tmp_path / "range.bin"
    assert transfer.download_range(stub, "store://in/big.bin", offset, length, dest) == len(got)
    assert dest.read_bytes() == expected


def test_offset_at_the_end_is_empty_and_beyond_is_refused(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
) -> None:
    assert b"".join(transfer.iter_range(stub, "store://in/big.bin", len(DATA), 0)) == b""
    with pytest.raises(grpc.RpcError) as caught:
        list(transfer.iter_range(stub, "store://in/big.bin", len(DATA) + 1, 0))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "beyond the end" in (caught.value.details() or "")


def test_missing_object_is_not_found(stub: artifacts_pb2_grpc.ArtifactServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(transfer.iter_range(stub, "store://in/nope.bin", 0, 10))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_whole_downloads_still_check_the_digest(
    stub: artifacts_pb2_grpc.ArtifactServiceStub, tmp_path: Path
) -> None:
    info = transfer.download_file(stub, "store://in/big.bin", tmp_path / "all.bin")
    assert info.size == len(DATA)
    assert (tmp_path / "all.bin").read_bytes() == DATA


def test_store_range_reads(store: LocalArtifactStore) -> None:
    assert store.read_range("in/big.bin", 3, 4) == DATA[3:7]
    assert store.read_range("in/big.bin", len(DATA) - 2, 10) == DATA[-2:]
    with pytest.raises(NotFound):
        store.read_range("in/none", 0, 1)
    with pytest.raises(InvalidArgument):
        store.read_chunks("in/big.bin", -1, 0)


def test_staging_folder_is_writable_but_never_listed(store: LocalArtifactStore) -> None:
    staged = key_of("store://out/.skmaker-shards/a.csv.out.000000")
    store.write(staged, lambda out: out.write(b"1\n2\n"))
    store.write("out/a.csv.out", lambda out: out.writelines([b"1\n", b"2\n"]))
    assert [info.key for info in store.list("out")] == ["out/a.csv.out"]
    assert store.read_range(staged, 0, 100) == b"1\n2\n"
    info, handle = store.open("out/a.csv.out")
    handle.close()
    assert info.sha256 == hashlib.sha256(b"1\n2\n").hexdigest()
    with pytest.raises(InvalidArgument):
        key_of("out/.skmaker-upload-x")


def test_delete_and_delete_tree(store: LocalArtifactStore, tmp_path: Path) -> None:
    for index in range(3):
        store.write(f"out/.skmaker-shards/a/b.csv.out.{index:06d}", lambda out: out.write(b"x"))
    store.write("out/keep.out", lambda out: out.write(b"y"))
    assert store.delete_tree("out/.skmaker-shards") == 3
    assert not (tmp_path / "artifacts" / "objects" / "out" / ".skmaker-shards").exists()
    assert [info.key for info in store.list("out")] == ["out/keep.out"]
    assert store.delete("out/keep.out") and not store.delete("out/keep.out")
    assert not (tmp_path / "artifacts" / "objects" / "out").exists()
    with pytest.raises(InvalidArgument):
        store.delete_tree("")
