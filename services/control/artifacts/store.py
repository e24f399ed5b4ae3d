"""The local-directory artifact store behind ArtifactService: atomic, sha256-checked objects by key.

Layout under the root (`<data_dir>/artifacts`):
  objects/<key>             the object's bytes
  objects/<dir>/.skmaker-upload-*   an upload in flight (same folder, so the rename is atomic)
  object-digests/<key>      {"sha256", "size", "mtime_ns", "inode"} of the object: the same
                            path as the object's, so two keys collide here only where their
                            objects would (`a` beside `a/x`, refused); the former `digests/`
                            layout (`<key>.json`) made `a` and `a.json/x` collide

An upload is written to a temporary file next to its destination, fsynced, checked against the
announced size and sha256, then renamed over the key; on any error the temporary file is
removed, so an object is either absent or complete. A digest file that does not match its
object's stat (a crash between the two renames) is recomputed on the next read.

Keys are relative POSIX paths (`store://` URIs or bare keys) without `.`/`..` segments, as in
`skmaker.v1.transfer.key_of`, of at most `MAX_KEY_BYTES` (S3's limit) with segments of at most
`MAX_SEGMENT_BYTES` (a file name's) in UTF-8; segments starting with `.skmaker-` are reserved.
A key cannot be both an object and a folder of objects (`a` and `a/x`): the second one stored
is refused with FAILED_PRECONDITION. One reserved folder
name is writable, `STAGING_FOLDER` (`.skmaker-shards`), for work in progress: batch workers stage
the outputs of transform shards there until the control assembles them into `.out` files.
Listings skip it, so whoever lists an output path sees only whole `.out` files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Protocol

from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

SCHEME = "store://"
# The bucket that stands for this store in `s3://` URIs (the client's
# `Session.default_bucket()`): `s3://skmaker/<key>` is `store://<key>` in every URI the API
# takes, so grpcurl callers and notebooks may use either. Another bucket is not this store.
DEFAULT_BUCKET = "skmaker"
_DEFAULT_BUCKET_URI = f"s3://{DEFAULT_BUCKET}"
CHUNK_BYTES = 1024 * 1024
_RESERVED_PREFIX = ".skmaker-"
# The one reserved folder name that may be written: work in progress is staged there (batch
# workers stage transform shard outputs until the control assembles them), and listings skip it.
STAGING_FOLDER = ".skmaker-shards"
_UPLOAD_PREFIX = ".skmaker-upload-"
_HEX = frozenset("0123456789abcdef")
# S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
# A key's segment is a file or folder name on disk: NAME_MAX of Linux file systems.
MAX_SEGMENT_BYTES = 255
_OLD_DIGESTS_FOLDER = "digests"


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


def store_uri_of(uri: str) -> str:
    """`store://<key>` for `s3://<DEFAULT_BUCKET>/<key>`; any other URI as it is."""
    if uri == _DEFAULT_BUCKET_URI or uri.startswith(_DEFAULT_BUCKET_URI + "/"):
        return SCHEME + uri[len(_DEFAULT_BUCKET_URI) :].strip("/")
    return uri


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
    return segment.startswith(_RESERVED_PREFIX) and segment != STAGING_FOLDER


def _replace_object(tmp_name: str, target: Path, key: str) -> None:
    """Renames a finished upload over `target`; a folder there is the caller's collision."""
    try:
        os.replace(tmp_name, target)
    except IsADirectoryError:
        raise FailedPrecondition(
            f"cannot store {key!r}: objects exist below it (it is a folder)"
        ) from None


def _validate_sha256(sha256: str) -> str:
    digest = sha256.strip().lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise InvalidArgument(f"header sha256 {sha256!r} is not 64 hex digits")
    return digest


class ArtifactStore(Protocol):
    """Where artifacts live: this local directory store today, an object store later."""

    def put(self, key: str, size: int, sha256: str, chunks: Iterable[bytes]) -> ArtifactInfo:
        """Stores an object atomically once its size and digest are verified."""
        ...

    def open(self, key: str) -> tuple[ArtifactInfo, IO[bytes]]:
        """Opens an object for reading (NotFound when absent)."""
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


class LocalArtifactStore:
    """Objects in a local directory. Thread-safe: every write is a rename."""

    def __init__(self, root: Path, max_upload_bytes: int) -> None:
        """Creates the folders under `root`; uploads over `max_upload_bytes` are refused."""
        self._objects = root / "objects"
        self._digests = root / "object-digests"
        self._max_upload_bytes = max_upload_bytes
        self._objects.mkdir(parents=True, exist_ok=True)
        self._digests.mkdir(parents=True, exist_ok=True)
        # Digests in the former layout are recomputed on demand: dropping them loses nothing.
        shutil.rmtree(root / _OLD_DIGESTS_FOLDER, ignore_errors=True)

    def _object_path(self, key: str) -> Path:
        return self._objects.joinpath(*key.split("/"))

    def local_path(self, key: str) -> str:
        """The object's file, absolute. Every write replaces it by a rename, so a reader that
        opened it keeps reading one whole version."""
        return str(self._object_path(key).absolute())

    def _digest_path(self, key: str) -> Path:
        return self._digests.joinpath(*key.split("/"))

    # ----------------------------------------------------------------- writing

    def put(self, key: str, size: int, sha256: str, chunks: Iterable[bytes]) -> ArtifactInfo:
        """Stores `chunks` under `key` once exactly `size` bytes with digest `sha256` arrived.

        The limit is checked before any chunk is read. Replaces an existing object atomically.

        Raises:
            ResourceExhausted: `size` is over the upload limit.
            InvalidArgument: bad size or digest in the header; more or fewer bytes than
                announced; a digest mismatch.
            FailedPrecondition: `key` collides with a folder or an object.
        """
        if size < 0:
            raise InvalidArgument(f"header size {size} is negative")
        if size > self._max_upload_bytes:
            raise ResourceExhausted(
                f"artifact {key!r} is {size} bytes; the limit is {self._max_upload_bytes} bytes"
            )
        expected = _validate_sha256(sha256)
        return self._store(key, chunks, size=size, expected=expected)

    def write(self, key: str, produce: Callable[[BinaryIO], object]) -> ArtifactInfo:
        """Stores bytes the control produces itself (an assembled `.out`) under `key`, atomically.

        `produce` writes the content into a temporary file beside the target; the object
        appears (replacing an existing one) only once it returned. Unlike `put` there is no
        announced size or digest to check: the digest is computed from the written file, and
        the upload limit does not apply.

        Raises:
            FailedPrecondition: `key` collides with a folder or an object.
        """
        target = self._object_path(key)
        self._make_parent_folders(key, target)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=_UPLOAD_PREFIX)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "w+b") as handle:
                produce(handle)
                handle.flush()
                os.fsync(handle.fileno())
                handle.seek(0)
                for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
                    digest.update(block)
            _replace_object(tmp_name, target, key)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            self._remove_empty_parents(target)
            raise
        return self._record_digest(key, target, digest.hexdigest())

    def _store(
        self, key: str, chunks: Iterable[bytes], *, size: int, expected: str
    ) -> ArtifactInfo:
        """Writes a temporary file beside the target, checks it, fsyncs and renames it."""
        target = self._object_path(key)
        self._make_parent_folders(key, target)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=_UPLOAD_PREFIX)
        try:
            digest = hashlib.sha256()
            received = 0
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    received += len(chunk)
                    if received > size:
                        raise InvalidArgument(
                            f"upload of {key!r} sent more than the announced {size} bytes"
                        )
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if received != size:
                raise InvalidArgument(
                    f"upload of {key!r} ended after {received} of the announced {size} bytes"
                )
            if digest.hexdigest() != expected:
                raise InvalidArgument(
                    f"upload of {key!r} is corrupt: sha256 {digest.hexdigest()}, "
                    f"header said {expected}"
                )
            _replace_object(tmp_name, target, key)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            self._remove_empty_parents(target)
            raise
        return self._record_digest(key, target, digest.hexdigest())

    def delete(self, key: str) -> bool:
        """Removes the object at `key` and its digest; returns False when there was none."""
        target = self._object_path(key)
        try:
            target.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        self._digest_path(key).unlink(missing_ok=True)
        self._remove_empty_parents(target)
        self._remove_empty_parents(self._digest_path(key), root=self._digests)
        return True

    def delete_tree(self, prefix_key: str) -> int:
        """Removes every object at or below `prefix_key`, staged shard outputs included.

        Returns:
            How many objects were removed.
        """
        if not prefix_key:
            raise InvalidArgument("refusing to delete the whole artifact store")
        removed = 0
        start = self._object_path(prefix_key)
        if start.is_file():
            return int(self.delete(prefix_key))
        if not start.is_dir():
            return 0
        for folder, _subfolders, files in os.walk(start, topdown=False):
            relative = Path(folder).relative_to(self._objects).as_posix()
            for name in files:
                if name.startswith(_UPLOAD_PREFIX):
                    continue  # an upload in flight cleans up after itself
                removed += int(self.delete(f"{relative}/{name}"))
        return removed

    def _make_parent_folders(self, key: str, target: Path) -> None:
        folder = self._objects
        for part in key.split("/")[:-1]:
            folder = folder / part
            if folder.is_file():
                blocking = folder.relative_to(self._objects).as_posix()
                raise FailedPrecondition(
                    f"cannot store {key!r}: {blocking!r} is an object, not a folder"
                )
        if target.is_dir():
            raise FailedPrecondition(
                f"cannot store {key!r}: objects exist below it (it is a folder)"
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            # An object appeared on the path since the check above (a concurrent upload).
            raise FailedPrecondition(
                f"cannot store {key!r}: an object is stored on its path"
            ) from None

    def _remove_empty_parents(self, target: Path, root: Path | None = None) -> None:
        root = self._objects if root is None else root
        folder = target.parent
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): stop climbing
                return
            folder = folder.parent

    def _record_digest(self, key: str, path: Path, sha256: str) -> ArtifactInfo:
        stat = path.stat()
        record = {
            "sha256": sha256,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "inode": stat.st_ino,
        }
        digest_path = self._digest_path(key)
        digest_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=digest_path.parent, prefix=_UPLOAD_PREFIX)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            os.replace(tmp_name, digest_path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return ArtifactInfo(key=key, size=stat.st_size, sha256=sha256)

    # ----------------------------------------------------------------- reading

    def _info_of_open(self, key: str, handle: IO[bytes]) -> ArtifactInfo:
        """Info of the object open as `handle`, from its digest file when that is current."""
        stat = os.fstat(handle.fileno())
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(self._digest_path(key).read_text())
            if (record["size"], record["mtime_ns"], record["inode"]) == (
                stat.st_size,
                stat.st_mtime_ns,
                stat.st_ino,
            ):
                return ArtifactInfo(key=key, size=stat.st_size, sha256=str(record["sha256"]))
        # No current digest (written outside the API, or a crash before the digest landed).
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
        handle.seek(0)
        return self._record_digest(key, self._object_path(key), digest.hexdigest())

    def open(self, key: str) -> tuple[ArtifactInfo, IO[bytes]]:
        """Opens the object for reading; the info describes exactly the bytes of the handle.

        Raises:
            NotFound: when there is no object at `key`.
        """
        path = self._object_path(key)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"artifact {SCHEME}{key} not found") from None
        try:
            return self._info_of_open(key, handle), handle
        except BaseException:
            handle.close()
            raise

    def read_chunks(
        self, key: str, offset: int = 0, length: int = 0
    ) -> tuple[ArtifactInfo, Iterator[bytes]]:
        """The object's info and an iterator over its bytes in 1 MiB chunks.

        Args:
            key: The object.
            offset: First byte to read; the object's size reads nothing.
            length: Bytes to read from `offset`; 0 reads to the end. A range past the end is
                cut at the end. The info always describes the whole object.

        Raises:
            NotFound: when there is no object at `key`.
            InvalidArgument: a negative offset or length, or an offset beyond the object.
        """
        if offset < 0 or length < 0:
            raise InvalidArgument(f"offset {offset} and length {length} must not be negative")
        info, handle = self.open(key)
        if offset > info.size:
            handle.close()
            raise InvalidArgument(
                f"offset {offset} lies beyond the end of {info.uri} ({info.size} bytes)"
            )
        remaining = info.size - offset if length == 0 else min(length, info.size - offset)

        def chunks() -> Iterator[bytes]:
            left = remaining
            with handle:
                if offset:
                    handle.seek(offset)
                while left > 0:
                    chunk = handle.read(min(CHUNK_BYTES, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk

        return info, chunks()

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes of the object at `key` from `offset`; fewer at its end.

        Raises:
            NotFound: when there is no object at `key`.
        """
        path = self._object_path(key)
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"artifact {SCHEME}{key} not found") from None

    def list(self, prefix_key: str) -> list[ArtifactInfo]:
        """Objects whose key is `prefix_key` or starts with `prefix_key + "/"`, sorted by key.

        An empty prefix lists every object.
        """
        return [self._info_of_key(key) for key in sorted(self._keys_under(prefix_key))]

    def exists_at_or_under(self, prefix_key: str) -> bool:
        """True when an object is at `prefix_key` or below it as a folder."""
        return next(iter(self._keys_under(prefix_key)), None) is not None

    def _info_of_key(self, key: str) -> ArtifactInfo:
        info, handle = self.open(key)
        handle.close()
        return info

    def _keys_under(self, prefix_key: str) -> Iterator[str]:
        start = self._object_path(prefix_key) if prefix_key else self._objects
        if start.is_file():
            yield prefix_key
            return
        if not start.is_dir():
            return
        for folder, subfolders, files in os.walk(start):
            # Staged shard outputs are not objects of the listing's reader (see the docstring).
            subfolders[:] = sorted(name for name in subfolders if name != STAGING_FOLDER)
            relative = Path(folder).relative_to(self._objects).as_posix()
            for name in sorted(files):
                if name.startswith(_RESERVED_PREFIX):
                    continue
                yield name if relative == "." else f"{relative}/{name}"
