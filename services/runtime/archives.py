"""Packing ``model.tar.gz`` / ``output.tar.gz`` and unpacking archives without trusting them.

`make_tar_gz` follows SageMaker's layout (contract §1.7): members are relative to the folder
root (``model.joblib``, not ``model/model.joblib``), in sorted order. `safe_extract_tar` opens
archives that came from users (``sourcedir.tar.gz``, channel data): it refuses any member that
could write outside the destination or create a device, naming the member in the error.
"""

from __future__ import annotations

import gzip
import logging
import os
import posixpath
import tarfile
from pathlib import Path

log = logging.getLogger(__name__)


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


def safe_extract_tar(archive: Path, dest_dir: Path) -> None:
    """Extract a tar (plain or compressed) into ``dest_dir``, refusing dangerous members.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symbolic or hard links whose target lies outside the archive, and device or FIFO entries
    are refused. Extraction then runs with ``tarfile``'s ``data`` filter, which re-checks the
    same things against the real file system and drops set-uid bits and foreign owners.

    Args:
        archive: The archive file.
        dest_dir: Where to extract; created if missing.

    Raises:
        ValueError: A member is unsafe (the message names it) or the file is not a tar archive.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            tar.extractall(dest_dir, members=members, filter="data")
    except tarfile.FilterError as exc:
        member_name = exc.tarinfo.name if exc.tarinfo is not None else "?"
        raise ValueError(f"archive member {member_name!r} refused: {exc}") from exc
    except tarfile.ReadError as exc:
        raise ValueError(f"{archive.name} is not a readable tar archive: {exc}") from exc
