"""The control with `--artifact-store s3://BUCKET/PREFIX` against a real SeaweedFS process.

Uploads and downloads go over presigned URLs straight to the object store (one PUT, or a
multipart upload), ranged GETs read byte ranges, the objects land in the bucket under the
prefix with their sha256, and the control's artifact RPCs carry no byte (its /metrics).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.control.artifacts.base import StoreLocation
from services.control.artifacts.s3_store import S3ArtifactStore
from skmaker import Session
from skmaker.s3 import S3Downloader, S3Uploader
from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc, presigned, transfer
from tests.harness import ServiceProcess, run_service
from tests.s3server import S3Server, start_s3_server

pytestmark = pytest.mark.integration

BUCKET = "skmaker-it"
PREFIX = "team/a"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3"), [BUCKET])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def control(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One control for the module: each test uses keys of its own."""
    tmp_path = tmp_path_factory.mktemp("control")
    service = run_service(
        "control",
        tmp_path / "control",
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--replica-backend",
            "none",
            "--artifact-store",
            f"s3://{BUCKET}/{PREFIX}",
        ],
        env=s3.env(),
    )
    try:
        yield service
    finally:
        service.stop()


def _rpc_bytes(control: ServiceProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{control.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    pattern = r'skmaker_control_artifact_rpc_bytes_total\{direction="(\w+)"\} (\S+)'
    return {direction: float(value) for direction, value in re.findall(pattern, text)}


def test_transfers_go_to_the_bucket_directly(
    s3: S3Server, control: ServiceProcess, tmp_path: Path
) -> None:
    stub = artifacts_pb2_grpc.ArtifactServiceStub(control.channel())
    store = stub.DescribeArtifactStore(artifacts_pb2.DescribeArtifactStoreRequest())
    assert (store.kind, store.bucket, store.prefix) == ("s3", BUCKET, PREFIX)

    small = tmp_path / "small.csv"
    small.write_bytes(b"1,2,3\n" * 1000)
    info = transfer.upload_file(stub, small, "store://data/small.csv")
    assert (info.uri, info.size) == ("store://data/small.csv", small.stat().st_size)

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * MIB + 123))
    info = transfer.upload_file(
        stub,
        big,
        f"s3://{BUCKET}/{PREFIX}/data/big.bin",  # the s3:// form of store://data/big.bin
        multipart_threshold_bytes=8 * MIB,
        part_bytes=5 * MIB,
    )
    assert info.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()

    client = s3.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")["Contents"]
    assert sorted((item["Key"], item["Size"]) for item in listed) == [
        (f"{PREFIX}/data/big.bin", big.stat().st_size),
        (f"{PREFIX}/data/small.csv", small.stat().st_size),
    ]
    head = client.head_object(Bucket=BUCKET, Key=f"{PREFIX}/data/big.bin")
    assert head["Metadata"]["sha256"] == info.sha256

    back = tmp_path / "back" / "big.bin"
    transfer.download_file(stub, "store://data/big.bin", back)
    assert back.read_bytes() == big.read_bytes()
    # A byte range across the boundary of the first two parts.
    ranged = tmp_path / "range.bin"
    written = transfer.download_range(stub, "store://data/big.bin", 5 * MIB - 10, 30, ranged)
    assert (written, ranged.read_bytes()) == (30, big.read_bytes()[5 * MIB - 10 : 5 * MIB + 20])
    tail = b"".join(transfer.iter_range(stub, "store://data/big.bin", 12 * MIB, 0))
    assert tail == big.read_bytes()[12 * MIB :]

    infos = transfer.list_artifacts(stub, "store://data")
    assert [(i.uri, i.size) for i in infos] == [
        ("store://data/big.bin", big.stat().st_size),
        ("store://data/small.csv", small.stat().st_size),
    ]
    assert _rpc_bytes(control) == {"upload": 0.0, "download": 0.0}


def test_an_object_written_by_boto3_downloads_without_a_digest(
    s3: S3Server, control: ServiceProcess, tmp_path: Path
) -> None:
    s3.client().put_object(Bucket=BUCKET, Key=f"{PREFIX}/script/out.txt", Body=b"from a script")
    stub = artifacts_pb2_grpc.ArtifactServiceStub(control.channel())
    dest = tmp_path / "out.txt"
    info = transfer.download_file(stub, "store://script/out.txt", dest)
    assert (info.sha256, dest.read_bytes()) == ("", b"from a script")


def test_the_object_store_refuses_bytes_other_than_announced(
    control: ServiceProcess, tmp_path: Path
) -> None:
    stub = artifacts_pb2_grpc.ArtifactServiceStub(control.channel())
    announced, sent = tmp_path / "announced.bin", tmp_path / "sent.bin"
    announced.write_bytes(b"a" * 1000)
    sent.write_bytes(b"b" * 1000)
    digests = presigned.digests_of(announced, presigned.PART_BYTES, multipart=False)
    header = artifacts_pb2.UploadHeader(
        uri="store://forged.bin", size=digests.size, sha256=digests.sha256
    )
    plan = stub.StartUpload(
        artifacts_pb2.StartUploadRequest(header=header, content_md5=digests.content_md5)
    )
    with pytest.raises(OSError, match="PUT refused by the object store: 400"):
        presigned.put_file(sent, plan.url, plan.headers, 1000, timeout_s=10)
    with pytest.raises(grpc.RpcError) as completed:
        stub.CompleteUpload(artifacts_pb2.CompleteUploadRequest(header=header))
    assert completed.value.code() == grpc.StatusCode.NOT_FOUND


def test_uploads_over_the_limit_and_bad_keys_are_refused(control: ServiceProcess) -> None:
    stub = artifacts_pb2_grpc.ArtifactServiceStub(control.channel())
    sha = "0" * 64
    cases = [
        ("store://../x", 1, grpc.StatusCode.INVALID_ARGUMENT),
        ("s3://other-bucket/x", 1, grpc.StatusCode.INVALID_ARGUMENT),
        ("store://huge.bin", 11 * 1024**3, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ]
    for uri, size, code in cases:
        header = artifacts_pb2.UploadHeader(uri=uri, size=size, sha256=sha)
        with pytest.raises(grpc.RpcError) as refused:
            stub.StartUpload(artifacts_pb2.StartUploadRequest(header=header, content_md5="x"))
        assert refused.value.code() == code, uri


def test_a_missing_bucket_stops_the_control_with_the_reason(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"artifact store s3://no-such-bucket cannot be reached"):
        run_service(
            "control",
            tmp_path / "control",
            ["--data-dir", str(tmp_path / "data"), "--artifact-store", "s3://no-such-bucket"],
            env=s3.env(),
        )


def test_the_session_speaks_the_buckets_s3_uris(
    s3: S3Server, control: ServiceProcess, tmp_path: Path
) -> None:
    root = f"s3://{BUCKET}/{PREFIX}"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "train.csv").write_text("1,2\n")
    with Session(control.address) as session:
        assert session.default_bucket() == BUCKET
        assert session.store_uri(f"{root}/session/x.csv") == "store://session/x.csv"
        with pytest.raises(ValueError, match=rf"outside skmaker's artifact store {root}/"):
            session.store_uri(f"s3://{BUCKET}/elsewhere/x.csv")

        uploaded = session.upload_data(tmp_path / "in", key_prefix="session/in")
        assert uploaded == f"{root}/session/in"
        # SageMaker's form: the bucket and an object key in it.
        explicit = session.upload_data(tmp_path / "in" / "train.csv", BUCKET, f"{PREFIX}/session/b")
        assert explicit == f"{root}/session/b/train.csv"
        assert (
            S3Uploader.upload_string_as_file_body(
                "hello", f"{root}/session/hello.txt", sagemaker_session=session
            )
            == f"{root}/session/hello.txt"
        )
        assert S3Downloader.read_file(f"{root}/session/hello.txt", sagemaker_session=session) == (
            "hello"
        )
        assert S3Downloader.list(f"{root}/session/in", sagemaker_session=session) == [
            f"{root}/session/in/train.csv"
        ]
        written = session.download_data(str(tmp_path / "out"), BUCKET, f"{PREFIX}/session/b")
        assert [Path(path).read_text() for path in written] == ["1,2\n"]

    # boto3 finds each object where the URI says.
    body = s3.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/session/in/train.csv")["Body"]
    assert body.read() == b"1,2\n"


def test_the_object_store_concatenates_large_parts_itself(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    store = S3ArtifactStore(StoreLocation("s3", BUCKET, "concat"), max_upload_bytes=MIB * 100)
    big, small = os.urandom(5 * MIB + 7), b"tail\n"
    for key, data in (("p/0", big), ("p/1", big), ("p/2", small), ("q/0", small)):
        store.put(key, len(data), hashlib.sha256(data).hexdigest(), [data])

    copied = store.concatenate("out/large.out", ["p/0", "p/1", "p/2"])
    # Copied by the server: the control never saw the bytes, so it knows no digest.
    assert (copied.size, copied.sha256) == (2 * len(big) + len(small), "")
    _info, chunks = store.read_chunks("out/large.out")
    assert b"".join(chunks) == big + big + small

    # Parts under S3's 5 MiB minimum are copied through the control, digest and all.
    assembled = store.concatenate("out/small.out", ["q/0", "p/2"])
    assert assembled.sha256 == hashlib.sha256(small + small).hexdigest()
    assert store.read_range("out/small.out", 0, 100) == small + small


def test_callers_that_cannot_reach_the_store_stream_through_the_control(
    s3: S3Server, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{probe.getsockname()[1]}"
    control = run_service(
        "control",
        tmp_path / "control",
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--replica-backend",
            "none",
            "--artifact-store",
            f"s3://{BUCKET}/unreachable",
            "--artifact-presign-endpoint",
            unreachable,
        ],
        env=s3.env(),
    )
    try:
        stub = artifacts_pb2_grpc.ArtifactServiceStub(control.channel())
        source = tmp_path / "f.bin"
        source.write_bytes(b"x" * 1000)
        transfer.upload_file(stub, source, "store://f.bin")
        back = tmp_path / "back.bin"
        transfer.download_file(stub, "store://f.bin", back)
        assert back.read_bytes() == source.read_bytes()
        assert b"".join(transfer.iter_range(stub, "store://f.bin", 10, 5)) == b"x" * 5
        head = s3.client().head_object(Bucket=BUCKET, Key="unreachable/f.bin")
        assert head["ContentLength"] == 1000
        assert _rpc_bytes(control) == {"upload": 1000.0, "download": 1005.0}
    finally:
        control.stop()
