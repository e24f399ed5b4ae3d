"""Builds `sourcedir.tar.gz` from an estimator's code arguments, as the SageMaker SDK does.

Rules (contract §1.6): an entry point alone becomes one file at the archive root; with a
`source_dir` the whole folder tree goes in (nothing excluded) and the entry point is a path
relative to it; each of `dependencies` is added at the root under its base name. Archives are
deterministic: members sorted, timestamps and owners zeroed, modes normalized, so the same code
always gives the same bytes (and the same sha256 in the store).
"""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ARCHIVE_NAME = "sourcedir.tar.gz"


@dataclass(frozen=True)
class SourceBundle:
    """What goes into `sourcedir.tar.gz`.

    Attributes:
        program: the entry point as the trainer runs it, relative to the archive root
            (`sagemaker_program`).
        members: archive path -> local file, in archive order.
    """

    program: str
    members: tuple[tuple[str, Path], ...]


def _files_under(folder: Path, prefix: PurePosixPath) -> Iterator[tuple[str, Path]]:
    # Symlinks are followed: the archive holds content, never links the trainer would resolve.
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        relative_root = Path(root).relative_to(folder)
        for name in sorted(files):
            local = Path(root) / name
            yield (prefix / PurePosixPath(*relative_root.parts, name)).as_posix(), local


def plan(
    entry_point: str,
    source_dir: str | os.PathLike[str] | None = None,
    dependencies: Sequence[str | os.PathLike[str]] = (),
) -> SourceBundle:
    """Decides the archive's contents without writing anything.

    Args:
        entry_point: the script; relative to `source_dir` when that is given.
        source_dir: a local folder whose whole tree is archived.
        dependencies: local files or folders added at the root under their base names.

    Raises:
        ValueError: when the entry point, `source_dir` or a dependency does not exist, the entry
            point leaves `source_dir`, or two members would have the same archive path.
    """
    members: dict[str, Path] = {}

    def add(archive_path: str, local: Path) -> None:
        if archive_path in members:
            raise ValueError(
                f"{local} and {members[archive_path]} would both be {archive_path!r} "
                f"in {ARCHIVE_NAME}"
            )
        members[archive_path] = local

    if source_dir is not None:
        folder = Path(source_dir)
        if not folder.is_dir():
            raise ValueError(f"source_dir {str(folder)!r} is not a folder")
        program = PurePosixPath(Path(entry_point).as_posix())
        if program.is_absolute() or ".." in program.parts:
            raise ValueError(f"entry_point {entry_point!r} must be a path inside source_dir")
        if not (folder / program).is_file():
            raise ValueError(f"entry_point {entry_point!r} not found in source_dir {str(folder)!r}")
        for archive_path, local in _files_under(folder, PurePosixPath()):
            add(archive_path, local)
        program_name = program.as_posix()
    else:
        script = Path(entry_point)
        if not script.is_file():
            raise ValueError(f"entry_point {entry_point!r} is not a file")
        program_name = script.name
        add(program_name, script)

    for dependency in dependencies:
        local = Path(dependency)
        if local.is_dir():
            for archive_path, file in _files_under(local, PurePosixPath(local.resolve().name)):
                add(archive_path, file)
        elif local.is_file():
            add(local.name, local)
        else:
            raise ValueError(f"dependency {str(local)!r} does not exist")

    return SourceBundle(program=program_name, members=tuple(sorted(members.items())))


def _tar_info(archive_path: str, local: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(archive_path)
    stat = local.stat()
    info.size = stat.st_size
    # Keep only "is it executable": `.sh` and binary entry points need it, nothing else does.
    info.mode = 0o755 if stat.st_mode & 0o111 else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write(bundle: SourceBundle, destination: Path) -> Path:
    """Writes `bundle` as a deterministic gzip'd tar at `destination`; returns `destination`."""
    with destination.open("wb") as raw:
        # GzipFile with mtime=0 and no file name: the gzip header would otherwise vary per run.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
            with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for archive_path, local in bundle.members:
                    with local.open("rb") as handle:
                        tar.addfile(_tar_info(archive_path, local), handle)
    return destination
