"""The artifact store's interface and what every backend shares: keys and `store://`/`s3://`
URIs, object metadata, upload checks, presigned transfer plans.

Keys are relative POSIX paths (`store://` URIs or bare keys) without `.`/`..` segments, as in
`skmaker.v1.transfer.key_of`, of at most `MAX_KEY_BYTES` (S3's limit) with segments of at most
`MAX_SEGMENT_BYTES` (a file name's) in UTF-8; segments starting with `.skmaker-` are reserved.
One reserved folder name is writable, `STAGING_FOLDER` (`.skmaker-shards`), for work in
progress: batch workers stage the outputs of transform shards there until the control
assembles them into `.out` files.
Listings skip it, so whoever lists an output path sees only whole `.out` files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, BinaryIO, Protocol

from services.runtime.errors import InvalidArgument, ResourceExhausted

SCHEME = "store://"
# The bucket that stands for the local store in `s3://` URIs (the client's
# `Session.default_bucket()`): `s3://skmaker/<key>` is `store://<key>` in every URI the API
# takes, so grpcurl callers and notebooks may use either. Another bucket is not this store.
# An S3 store (`--artifact-store s3://BUCKET/PREFIX`) names its own bucket and prefix instead
# (`use_s3_location`), so its `s3://` URIs are where the objects really are.
DEFAULT_BUCKET = "skmaker"
_s3_location_uri = f"s3://{DEFAULT_BUCKET}"
CHUNK_BYTES = 1024 * 1024
RESERVED_PREFIX = ".skmaker-"
# The one reserved folder name that may be written: work in progress is staged there (batch
# workers stage transform shard outputs until the control assembles them), and listings skip it.
STAGING_FOLDER = ".skmaker-shards"
UPLOAD_PREFIX = ".skmaker-upload-"
_HEX = frozenset("0123456789abcdef")
# S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
# A key's segment is a file or folder name in the local store: NAME_MAX of Linux file systems.
MAX_SEGMENT_BYTES = 255


@dataclass(frozen=True)
class ArtifactInfo:
    """Metadata of one stored object."""

    key: str
    size: int
    sha256: str

    @property
    def uri(self) -> str:
        """`store://<key>`."""
        return SCHEME + self.key


@dataclass(frozen=True)
class StoreLocation:
    """Where a store keeps its objects, as DescribeArtifactStore tells it."""

    kind: str  # "local" or "s3"
    bucket: str
    prefix: str  # "" or a key prefix inside the bucket, without leading or trailing "/"

    @property
    def s3_uri(self) -> str:
        """`s3://<bucket>` or `s3://<bucket>/<prefix>`: the URI of key "" in this store."""
        return f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


LOCAL_LOCATION = StoreLocation("local", DEFAULT_BUCKET, "")


def use_s3_location(location: StoreLocation) -> None:
    """Makes `s3://<location.bucket>/<location.prefix>/<key>` name `store://<key>` in every URI
    the API takes (instead of `s3://skmaker/<key>`). Called once, when the control is built."""
    global _s3_location_uri
    _s3_location_uri = location.s3_uri


# Where the control keeps each training job's source bundle under its sha256, immutable: the
# job runs that copy whatever happens at the key it was uploaded to. Only the control writes
# here (ArtifactService refuses uploads below it); anyone may read.
CODE_BUNDLES_PREFIX = "code-bundles"


def code_bundle_key(sha256: str) -> str:
    """The key a source bundle with this sha256 is kept under."""
    return f"{CODE_BUNDLES_PREFIX}/sha256/{sha256}/sourcedir.tar.gz"


def store_uri_of(uri: str) -> str:
    """`store://<key>` for `s3://<bucket>[/<prefix>]/<key>` of this store; any other URI as
    it is."""
    if uri == _s3_location_uri or uri.startswith(_s3_location_uri + "/"):
        return SCHEME + uri[len(_s3_location_uri) :].strip("/")
    return uri


def s3_bucket_uri() -> str:
    """`s3://<bucket>[/<prefix>]`: what `s3://` URIs of this store start with."""
    return _s3_location_uri


def key_of(uri: str) -> str:
    """The key of a `store://` (or `s3://<DEFAULT_BUCKET>/`) URI or a bare key, normalized (no
    leading/trailing or double '/').

    Raises:
        InvalidArgument: for another scheme, an empty key, `.`/`..` segments, a backslash,
            a NUL, a reserved `.skmaker-` segment, or a key or segment over its length limit.
    """
    uri = store_uri_of(uri)
    if "://" in uri and not uri.startswith(SCHEME):
        raise InvalidArgument(f"not an artifact-store URI: {uri!r} (expected store://...)")
    raw = uri[len(SCHEME) :] if uri.startswith(SCHEME) else uri
    parts = PurePosixPath(raw.strip("/")).parts if raw.strip("/") else ()
    if (
        not parts
        or any(part in {".", ".."} or _is_reserved(part) for part in parts)
        or "\\" in raw
        or "\0" in raw
    ):
        raise InvalidArgument(
            f"bad artifact key {raw!r}: use a relative path without '.' or '..' segments"
        )
    key = "/".join(parts)
    _check_key_lengths(key, parts)
    return key


def _check_key_lengths(key: str, parts: tuple[str, ...]) -> None:
    size = len(key.encode("utf-8", errors="surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(
            f"artifact key {key[:64]!r}... is {size} bytes long; the limit is {MAX_KEY_BYTES} "
            "bytes (UTF-8)"
        )
    for part in parts:
        part_size = len(part.encode("utf-8", errors="surrogatepass"))
        if part_size > MAX_SEGMENT_BYTES:
            raise InvalidArgument(
                f"artifact key {key[:64]!r}... has a {part_size}-byte segment between '/'; the "
                f"limit is {MAX_SEGMENT_BYTES} bytes (UTF-8)"
            )


def _is_reserved(segment: str) -> bool:
    return segment.startswith(RESERVED_PREFIX) and segment != STAGING_FOLDER


def check_upload_header(key: str, size: int, sha256: str, max_upload_bytes: int) -> str:
    """The upload's sha256, lower case, once its size is within the limit.

    Raises:
        ResourceExhausted: `size` is over `max_upload_bytes`.
        InvalidArgument: a negative size or a digest that is not 64 hex digits.
    """
    if size < 0:
        raise InvalidArgument(f"header size {size} is negative")
    if size > max_upload_bytes:
        raise ResourceExhausted(
            f"artifact {key!r} is {size} bytes; the limit is {max_upload_bytes} bytes"
        )
    return _validate_sha256(sha256)


def copy_checked_upload(
    key: str, chunks: Iterable[bytes], size: int, expected: str, out: IO[bytes]
) -> None:
    """Writes an upload's `chunks` to `out`, holding them to the header's `size` and sha256.

    Raises:
        InvalidArgument: more or fewer bytes than `size`; a sha256 other than `expected`.
    """
    digest = hashlib.sha256()
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > size:
            raise InvalidArgument(f"upload of {key!r} sent more than the announced {size} bytes")
        digest.update(chunk)
        out.write(chunk)
    if received != size:
        raise InvalidArgument(
            f"upload of {key!r} ended after {received} of the announced {size} bytes"
        )
    if digest.hexdigest() != expected:
        raise InvalidArgument(
            f"upload of {key!r} is corrupt: sha256 {digest.hexdigest()}, header said {expected}"
        )


def is_listed(key: str) -> bool:
    """False for a key the listings skip: staged work in progress, an upload in flight."""
    return not any(
        part == STAGING_FOLDER or part.startswith(RESERVED_PREFIX) for part in key.split("/")
    )


def _validate_sha256(sha256: str) -> str:
    digest = sha256.strip().lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise InvalidArgument(f"header sha256 {sha256!r} is not 64 hex digits")
    return digest


@dataclass(frozen=True)
class UploadPlan:
    """Where a caller PUTs an upload's bytes itself: one presigned URL, or one per part of a
    multipart upload (`upload_id`); empty when the store takes uploads through UploadArtifact."""

    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    upload_id: str = ""
    part_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class UploadRequest:
    """What StartUpload and CompleteUpload are told about an upload."""

    key: str
    size: int
    sha256: str
    content_md5: str = ""
    part_md5s: tuple[str, ...] = ()
    part_bytes: int = 0


class ArtifactStore(Protocol):
    """Where artifacts live: a local directory (`LocalArtifactStore`) or an S3-compatible
    object store (`s3_store.S3ArtifactStore`). Another backend is one more module."""

    @property
    def location(self) -> StoreLocation:
        """The kind of store, and the bucket and prefix its `s3://` URIs name."""
        ...

    def presign_get(self, key: str) -> tuple[ArtifactInfo, str]:
        """The object's info and a presigned GET URL ("" when the store has none)."""
        ...

    def start_upload(self, upload: UploadRequest) -> UploadPlan:
        """Checks an upload's key and size; where to PUT its bytes (empty: stream them)."""
        ...

    def complete_upload(
        self, upload: UploadRequest, upload_id: str, part_etags: Iterable[str]
    ) -> ArtifactInfo:
        """Ends a presigned upload and checks what was stored against `upload`."""
        ...

    def put(self, key: str, size: int, sha256: str, chunks: Iterable[bytes]) -> ArtifactInfo:
        """Stores an object atomically once its size and digest are verified."""
        ...

    def open(self, key: str) -> tuple[ArtifactInfo, IO[bytes]]:
        """Opens an object for reading (NotFound when absent)."""
        ...

    def stat(self, key: str) -> ArtifactInfo:
        """An object's info, without reading its bytes where the store can (NotFound when
        absent)."""
        ...

    def read_chunks(
        self, key: str, offset: int = 0, length: int = 0
    ) -> tuple[ArtifactInfo, Iterator[bytes]]:
        """An object's info and its bytes (or a byte range of them) in chunks."""
        ...

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes of an object from `offset` (fewer at its end)."""
        ...

    def local_path(self, key: str) -> str:
        """The object's file on this machine's disk, or "" when the store keeps no such file."""
        ...

    def write(self, key: str, produce: Callable[[BinaryIO], object]) -> ArtifactInfo:
        """Stores what `produce` writes to a file, atomically; the digest is computed."""
        ...

    def concatenate(self, key: str, part_keys: Sequence[str]) -> ArtifactInfo:
        """Stores the bytes of the objects `part_keys`, in order, as the object `key`
        (atomically); the parts stay."""
        ...

    def delete(self, key: str) -> bool:
        """Removes an object; False when there was none."""
        ...

    def delete_tree(self, prefix_key: str) -> int:
        """Removes every object at or below `prefix_key`, staged ones included."""
        ...

    def list(self, prefix_key: str) -> list[ArtifactInfo]:
        """Objects at or below `prefix_key`, sorted by key."""
        ...

    def exists_at_or_under(self, prefix_key: str) -> bool:
        """True when an object is at or below `prefix_key`."""
        ...
