"""LocalArtifactStore: atomic checked writes, listing, digests, and nothing left after errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.control.artifacts.store import LocalArtifactStore, key_of
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts", max_upload_bytes=100)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("uri", "key"),
    [("store://a/b.csv", "a/b.csv"), ("a/b.csv", "a/b.csv"), ("store:///a//b/", "a/b")],
)
def test_key_of_accepts_store_uris_and_bare_keys(uri: str, key: str) -> None:
    assert key_of(uri) == key


@pytest.mark.parametrize(
    "uri", ["", "store://", "s3://b/k", "a/../b", "a\\b", "a/.skmaker-upload-x"]
)
def test_key_of_refuses_bad_keys(uri: str) -> None:
    with pytest.raises(InvalidArgument):
        key_of(uri)


def test_put_read_list(store: LocalArtifactStore) -> None:
    info = store.put("d/a.csv", 3, _sha(b"abc"), [b"a", b"bc"])
    store.put("d/sub/b.csv", 1, _sha(b"x"), [b"x"])
    store.put("dx.csv", 1, _sha(b"y"), [b"y"])
    assert (info.uri, info.size, info.sha256) == ("store://d/a.csv", 3, _sha(b"abc"))
    read_info, chunks = store.read_chunks("d/a.csv")
    assert (read_info, b"".join(chunks)) == (info, b"abc")
    assert [i.key for i in store.list("d")] == ["d/a.csv", "d/sub/b.csv"]
    assert [i.key for i in store.list("d/a.csv")] == ["d/a.csv"]
    assert [i.key for i in store.list("")] == ["d/a.csv", "d/sub/b.csv", "dx.csv"]
    assert store.list("d/a") == []
    assert store.exists_at_or_under("d/sub") and not store.exists_at_or_under("e")


def test_put_replaces_an_existing_object(store: LocalArtifactStore) -> None:
    store.put("k", 1, _sha(b"1"), [b"1"])
    store.put("k", 2, _sha(b"22"), [b"22"])
    info, chunks = store.read_chunks("k")
    assert (info.sha256, b"".join(chunks)) == (_sha(b"22"), b"22")


def test_missing_object_is_not_found(store: LocalArtifactStore) -> None:
    with pytest.raises(NotFound, match="store://nope"):
        store.read_chunks("nope")


@pytest.mark.parametrize(
    ("size", "sha", "chunks", "error", "message"),
    [
        (101, _sha(b""), [], ResourceExhausted, "limit is 100"),
        (3, _sha(b"abc"), [b"ab", b"cd"], InvalidArgument, "more than the announced 3"),
        (3, _sha(b"abc"), [b"ab"], InvalidArgument, "after 2 of the announced 3"),
        (3, _sha(b"abd"), [b"abc"], InvalidArgument, "corrupt"),
        (3, "xyz", [b"abc"], InvalidArgument, "64 hex"),
        (-1, _sha(b""), [], InvalidArgument, "negative"),
    ],
)
def test_failed_uploads_leave_nothing_behind(
    store: LocalArtifactStore,
    tmp_path: Path,
    size: int,
    sha: str,
    chunks: list[bytes],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        store.put("deep/folder/k.bin", size, sha, chunks)
    assert _files(tmp_path / "artifacts") == []
    assert not (tmp_path / "artifacts" / "objects" / "deep").exists()


def test_an_aborted_stream_leaves_nothing_behind(store: LocalArtifactStore, tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"ab"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put("k", 3, _sha(b"abc"), chunks())
    assert _files(tmp_path / "artifacts") == []


def test_object_and_folder_cannot_share_a_key(store: LocalArtifactStore) -> None:
    store.put("a", 1, _sha(b"1"), [b"1"])
    with pytest.raises(FailedPrecondition, match="'a' is an object"):
        store.put("a/b", 1, _sha(b"1"), [b"1"])
    store.put("c/d", 1, _sha(b"1"), [b"1"])
    with pytest.raises(FailedPrecondition, match="objects exist below it"):
        store.put("c", 1, _sha(b"1"), [b"1"])
    assert [info.key for info in store.list("")] == ["a", "c/d"]


@pytest.mark.parametrize("first, second", [("a", "a.json/x"), ("a.json/x", "a")])
def test_keys_that_only_look_alike_are_both_stored(
    store: LocalArtifactStore, first: str, second: str
) -> None:
    # The former digest layout kept `a`'s digest in the file `a.json`, where `a.json/x` needs a
    # folder.
    store.put(first, 1, _sha(b"1"), [b"1"])
    store.put(second, 2, _sha(b"22"), [b"22"])
    assert {info.key: info.sha256 for info in store.list("")} == {
        first: _sha(b"1"),
        second: _sha(b"22"),
    }
    assert store.delete("a") and store.delete("a.json/x")
    assert store.list("") == []


def test_keys_over_the_length_limits_are_refused() -> None:
    from services.control.artifacts.base import MAX_KEY_BYTES, MAX_SEGMENT_BYTES, key_of

    assert key_of("/".join(["s" * 200] * 5)) == "/".join(["s" * 200] * 5)
    for key, limit in [
        ("k" * 10_000, MAX_KEY_BYTES),
        ("/".join(["s" * 200] * 6), MAX_KEY_BYTES),
        ("x/" + "s" * 256, MAX_SEGMENT_BYTES),
        ("é" * 128, MAX_SEGMENT_BYTES),
    ]:
        with pytest.raises(InvalidArgument, match=f"the limit is {limit} bytes"):
            key_of(key)


def test_a_stale_digest_is_recomputed(store: LocalArtifactStore, tmp_path: Path) -> None:
    store.put("k", 1, _sha(b"1"), [b"1"])
    object_path = tmp_path / "artifacts" / "objects" / "k"
    # Simulates a crash between the object's rename and its digest's rename.
    tmp = object_path.with_name("replacement")
    tmp.write_bytes(b"22")
    os.replace(tmp, object_path)
    assert store.list("k")[0].sha256 == _sha(b"22")
    (tmp_path / "artifacts" / "object-digests" / "k").unlink()
    assert store.list("k")[0].sha256 == _sha(b"22")


def test_s3_uris_of_the_default_bucket_name_the_store() -> None:
    from services.control.artifacts.store import key_of, store_uri_of
    from services.control.hosting.convert import model_from_pb
    from services.control.transform.convert import spec_from_pb
    from skmaker.v1 import model_pb2, transform_job_pb2

    assert key_of("s3://skmaker/data/train.csv") == "data/train.csv"
    assert store_uri_of("s3://skmaker/data/") == "store://data"
    assert store_uri_of("s3://skmaker") == "store://"
    assert store_uri_of("file:///x") == "file:///x"
    for other in ("s3://skmakers/data", "s3://elsewhere/data"):
        with pytest.raises(InvalidArgument, match="not an artifact-store URI"):
            key_of(other)
    model = model_from_pb(
        model_pb2.Model(
            name="m", model_data_uri="s3://skmaker/m/model.tar.gz", source_uri="s3://skmaker/c"
        )
    )
    assert (model.model_data_uri, model.source_uri) == ("store://m/model.tar.gz", "store://c")
    spec = spec_from_pb(
        transform_job_pb2.TransformJobSpec(input_uri="s3://skmaker/in", output_uri="s3://skmaker/o")
    )
    assert (spec.input_uri, spec.output_uri) == ("store://in", "store://o")
