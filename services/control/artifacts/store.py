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

Keys and the interface every store implements are in `base` (re-exported here). A key cannot
be both an object and a folder of objects here (`a` and `a/x`): the second one stored is
refused with FAILED_PRECONDITION.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO

from services.control.artifacts.base import (
    CHUNK_BYTES,
    DEFAULT_BUCKET,
    LOCAL_LOCATION,
    RESERVED_PREFIX,
    SCHEME,
    STAGING_FOLDER,
    UPLOAD_PREFIX,
    ArtifactInfo,
    ArtifactStore,
    StoreLocation,
    UploadPlan,
    UploadRequest,
    check_upload_header,
    copy_checked_upload,
    key_of,
    store_uri_of,
)
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_BUCKET",
    "SCHEME",
    "STAGING_FOLDER",
    "ArtifactInfo",
    "ArtifactStore",
    "LocalArtifactStore",
    "key_of",
    "store_uri_of",
]

# Digests in the former layout (`digests/<key>.json`, where `a` and `a.json/x` collided).
_OLD_DIGESTS_FOLDER = "digests"


def _replace_object(tmp_name: str, target: Path, key: str) -> None:
    """Renames a finished upload over `target`; a folder there is the caller's collision."""
    try:
        os.replace(tmp_name, target)
    except IsADirectoryError:
        raise FailedPrecondition(
            f"cannot store {key!r}: objects exist below it (it is a folder)"
        ) from None


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

    @property
    def location(self) -> StoreLocation:
        """A local folder, named `s3://skmaker/` in URIs."""
        return LOCAL_LOCATION

    def presign_get(self, key: str) -> tuple[ArtifactInfo, str]:
        """The object's info and no URL: its bytes stream through DownloadArtifact.

        Raises:
            NotFound: when there is no object at `key`.
        """
        return self._info_of_key(key), ""

    def start_upload(self, upload: UploadRequest) -> UploadPlan:
        """Checks the upload's size and digest, and plans nothing: the bytes stream through
        UploadArtifact.

        Raises:
            ResourceExhausted: over the upload limit.
            InvalidArgument: a bad size or digest.
        """
        check_upload_header(upload.key, upload.size, upload.sha256, self._max_upload_bytes)
        return UploadPlan()

    def complete_upload(
        self, upload: UploadRequest, upload_id: str, part_etags: Iterable[str]
    ) -> ArtifactInfo:
        """Refused: nothing was presigned (StartUpload planned a streamed upload).

        Raises:
            InvalidArgument: always.
        """
        raise InvalidArgument(
            f"the local artifact store takes {upload.key!r} through UploadArtifact, "
            "not a presigned upload"
        )

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
        expected = check_upload_header(key, size, sha256, self._max_upload_bytes)
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
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=UPLOAD_PREFIX)
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

    def concatenate(self, key: str, part_keys: Sequence[str]) -> ArtifactInfo:
        """Stores the parts' bytes, in order, as the object `key`, atomically (see `write`).

        Raises:
            NotFound: a part is missing.
            InvalidArgument: `key` collides with a folder or an object.
        """
        with contextlib.ExitStack() as stack:
            handles = [stack.enter_context(self.open(part)[1]) for part in part_keys]

            def copy_parts(out: BinaryIO) -> None:
                for handle in handles:
                    shutil.copyfileobj(handle, out, CHUNK_BYTES)

            return self.write(key, copy_parts)

    def _store(
        self, key: str, chunks: Iterable[bytes], *, size: int, expected: str
    ) -> ArtifactInfo:
        """Writes a temporary file beside the target, checks it, fsyncs and renames it."""
        target = self._object_path(key)
        self._make_parent_folders(key, target)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=UPLOAD_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                copy_checked_upload(key, chunks, size, expected, handle)
                handle.flush()
                os.fsync(handle.fileno())
            _replace_object(tmp_name, target, key)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            self._remove_empty_parents(target)
            raise
        return self._record_digest(key, target, expected)

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
                if name.startswith(UPLOAD_PREFIX):
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
        fd, tmp_name = tempfile.mkstemp(dir=digest_path.parent, prefix=UPLOAD_PREFIX)
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

    def stat(self, key: str) -> ArtifactInfo:
        """The object's info (its digest recomputed when stale).

        Raises:
            NotFound: when there is no object at `key`.
        """
        return self._info_of_key(key)

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
                if name.startswith(RESERVED_PREFIX):
                    continue
                yield name if relative == "." else f"{relative}/{name}"
