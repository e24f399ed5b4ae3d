"""Packing ``model.tar.gz`` / ``output.tar.gz`` and unpacking archives without trusting them.

`make_tar_gz` follows SageMaker's layout (contract §1.7): members are relative to the folder
root (``model.joblib``, not ``model/model.joblib``), in sorted order. `safe_extract_tar` opens
archives that came from users (``sourcedir.tar.gz``, channel data): it refuses any member that
could write outside the destination or create a device, naming the member in the error.

Archives are also bounded (`ArchiveLimits`): the bytes they unpack to, their member count, and
how many times larger than the archive they unpack (a 2 MB archive of 2 GiB of zeros). Member
sizes are read from the headers as the archive is walked, so a bomb is refused at the header
that crosses a limit, before its data is decompressed; the decompressed stream itself is
capped too (`_BoundedReader`), so nothing (not even an oversized pax header) reads past it.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import posixpath
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Bytes a member may cost in the tar stream beyond its data: its header, a pax header for a long
# name, and the padding of its data to 512 bytes.
_STREAM_BYTES_PER_MEMBER = 4096


@dataclass(frozen=True)
class ArchiveLimits:
    """How far an archive from a user may unpack.

    Attributes:
        max_bytes: total size of its members' data.
        max_members: how many members (files, folders, links) it may hold.
        max_ratio: unpacked bytes per byte of archive, checked once past `ratio_floor_bytes`.
        ratio_floor_bytes: archives unpacking to less than this are never refused for ratio.
    """

    max_bytes: int = 1024 * MIB
    max_members: int = 10_000
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 64 * MIB


# Source bundles and channel archives, unless a service's flags say otherwise.
DEFAULT_ARCHIVE_LIMITS = ArchiveLimits()
# model.tar.gz files are written by trainers but hold what a script put in model_dir: bounded
# too, with room for large models.
MODEL_ARCHIVE_LIMITS = ArchiveLimits(max_bytes=16 * 1024 * MIB, max_members=100_000)


class ArchiveTooLarge(ValueError):
    """An archive crosses one of its `ArchiveLimits`; the message names the limit."""


class _BoundedReader:
    """A read-and-seek view of a decompressed stream that refuses to go past `limit` bytes."""

    def __init__(self, stream: IO[bytes], limit: int, name: str) -> None:
        self._stream = stream
        self._limit = limit
        self._name = name

    def _refuse(self) -> ArchiveTooLarge:
        return ArchiveTooLarge(f"{self._name} unpacks to more than {self._limit} bytes")

    def read(self, size: int = -1) -> bytes:
        position = self._stream.tell()
        if size < 0:
            size = self._limit - position + 1
        if position + size > self._limit:
            data = self._stream.read(max(0, self._limit - position) + 1)
            if position + len(data) > self._limit:
                raise self._refuse()
            return data
        return self._stream.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._stream.tell() + offset
        if whence == os.SEEK_END or target > self._limit:
            raise self._refuse()
        return self._stream.seek(target)

    def tell(self) -> int:
        return self._stream.tell()


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """`raw` decompressed by what its first bytes say (gzip, bzip2, xz) or as it is."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


@contextmanager
def open_bounded_tar(
    source: IO[bytes], limits: ArchiveLimits, name: str = "the archive"
) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
    """Opens a tar from `source` (plain, gzip, bzip2 or xz) and walks its members in bounds.

    Yields the open archive and its members. Every header is checked as it is read, so an
    archive over a limit is refused without unpacking the data behind the offending header.

    Raises:
        ArchiveTooLarge: the archive crosses one of `limits` (the message names which).
        ValueError: `source` is not a readable tar archive.
    """
    source.seek(0, os.SEEK_END)
    packed = max(1, source.tell())
    source.seek(0)
    stream_limit = limits.max_bytes + _STREAM_BYTES_PER_MEMBER * (limits.max_members + 4)
    stream = _BoundedReader(_decompressed(source), stream_limit, name)
    try:
        tar = tarfile.open(fileobj=stream, mode="r:")  # type: ignore[call-overload]
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError) as exc:
        raise ValueError(f"{name} is not a readable tar archive: {exc}") from exc
    with tar:
        try:
            members = _bounded_members(tar, limits, packed, name)
        except (tarfile.TarError, EOFError, OSError, lzma.LZMAError) as exc:
            raise ValueError(f"{name} is not a readable tar archive: {exc}") from exc
        yield tar, members


def _bounded_members(
    tar: tarfile.TarFile, limits: ArchiveLimits, packed: int, name: str
) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    unpacked = 0
    while (member := tar.next()) is not None:
        members.append(member)
        if len(members) > limits.max_members:
            raise ArchiveTooLarge(
                f"{name} holds more than {limits.max_members} members (the archive member limit)"
            )
        unpacked += member.size if member.isreg() else 0
        if unpacked > limits.max_bytes:
            raise ArchiveTooLarge(
                f"{name} unpacks to more than {limits.max_bytes} bytes (the archive size limit; "
                f"member {member.name!r} alone is {member.size} bytes)"
            )
        if unpacked > limits.ratio_floor_bytes and unpacked > limits.max_ratio * packed:
            raise ArchiveTooLarge(
                f"{name} unpacks to over {limits.max_ratio:g} times its {packed} bytes (the "
                f"archive ratio limit; member {member.name!r} is {member.size} bytes)"
            )
    return members


def list_tar_files(
    source: IO[bytes], limits: ArchiveLimits, name: str = "the archive"
) -> list[str]:
    """Names of the regular files in the tar `source`, read within `limits`.

    Raises:
        ArchiveTooLarge: the archive crosses one of `limits`.
        ValueError: `source` is not a readable tar archive.
    """
    with open_bounded_tar(source, limits, name) as (_tar, members):
        return [posixpath.normpath(member.name) for member in members if not member.isdir()]


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Owner names and ids of the worker mean nothing where the archive is unpacked.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def make_tar_gz(src_dir: Path, dest_file: Path) -> None:
    """Pack ``src_dir`` into a gzip-compressed tar with members relative to ``src_dir``.

    Entries are added in sorted order, with owners cleared and a zero gzip timestamp, so the
    same folder packs to the same member list. Symbolic links are stored as links; sockets,
    FIFOs and devices are skipped. The archive is written under a temporary name and renamed
    into place, so a reader never sees a partial file.

    Args:
        src_dir: The folder to pack (e.g. the workspace's ``model_dir``).
        dest_file: The archive to write; its parent must exist.

    Raises:
        FileNotFoundError: ``src_dir`` is not a directory.
    """
    if not src_dir.is_dir():
        raise FileNotFoundError(f"not a directory: {src_dir}")
    tmp = dest_file.with_name(f".{dest_file.name}.tmp")
    try:
        with (
            tmp.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for path in _walk_sorted(src_dir):
                if not (path.is_symlink() or path.is_file() or path.is_dir()):
                    log.warning("skipping special file %s", path)
                    continue
                arcname = path.relative_to(src_dir).as_posix()
                tar.add(path, arcname=arcname, recursive=False, filter=_normalise)
        tmp.replace(dest_file)
    finally:
        tmp.unlink(missing_ok=True)


def _walk_sorted(root: Path) -> list[Path]:
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        # Symbolic links to folders come in dirnames; os.walk does not descend into them, so
        # they are stored as links, like any other symbolic link.
        paths.extend(base / name for name in dirnames)
        paths.extend(base / name for name in filenames)
    # A folder's name sorts before its contents ("a" < "a/b"), which is all tar needs.
    return sorted(paths, key=lambda path: path.relative_to(root).as_posix())


def _escapes(path: str) -> bool:
    normal = posixpath.normpath(path)
    return normal == ".." or normal.startswith("../")


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"archive member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise ValueError(f"archive member {name!r} contains '..'")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise ValueError(f"archive member {name!r} is a device or special file")
    if member.issym():
        target = member.linkname
        if posixpath.isabs(target) or _escapes(posixpath.join(posixpath.dirname(name), target)):
            raise ValueError(f"archive member {name!r} links outside the archive ({target!r})")
    if member.islnk():
        target = member.linkname
        if posixpath.isabs(target) or _escapes(target):
            raise ValueError(f"archive member {name!r} links outside the archive ({target!r})")


def safe_extract_tar(
    archive: Path, dest_dir: Path, limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS
) -> None:
    """Extract a tar (plain or compressed) into ``dest_dir``, refusing dangerous members.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symbolic or hard links whose target lies outside the archive, and device or FIFO entries
    are refused, and so is an archive over `limits`. Extraction then runs with ``tarfile``'s
    ``data`` filter, which re-checks the same things against the real file system and drops
    set-uid bits and foreign owners.

    Args:
        archive: The archive file.
        dest_dir: Where to extract; created if missing.
        limits: How far the archive may unpack.

    Raises:
        ArchiveTooLarge: The archive crosses a limit (the message names it).
        ValueError: A member is unsafe (the message names it) or the file is not a tar archive.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (
            archive.open("rb") as source,
            open_bounded_tar(source, limits, archive.name) as (tar, members),
        ):
            for member in members:
                _check_member(member)
            tar.extractall(dest_dir, members=members, filter="data")
    except tarfile.FilterError as exc:
        member_name = exc.tarinfo.name if exc.tarinfo is not None else "?"
        raise ValueError(f"archive member {member_name!r} refused: {exc}") from exc
