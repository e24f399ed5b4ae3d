"""sourcedir.tar.gz contents per the SageMaker SDK's rules (contract §1.6), and determinism."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from skmaker import packaging


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src" / "lib").mkdir(parents=True)
    (root / "src" / "train.py").write_text("print('train')\n")
    (root / "src" / "lib" / "helpers.py").write_text("X = 1\n")
    (root / "src" / "requirements.txt").write_text("")
    (root / "scripts").mkdir()
    (root / "scripts" / "solo.py").write_text("print('solo')\n")
    (root / "shared").mkdir()
    (root / "shared" / "feature.py").write_text("Y = 2\n")
    (root / "extra.cfg").write_text("k=v\n")
    return root


def test_entry_point_alone_is_one_file_at_the_root(project: Path, tmp_path: Path) -> None:
    bundle = packaging.plan(str(project / "scripts" / "solo.py"))
    archive = packaging.write(bundle, tmp_path / packaging.ARCHIVE_NAME)

    assert bundle.program == "solo.py"
    assert _members(archive) == {"solo.py": b"print('solo')\n"}


def test_source_dir_archives_the_whole_tree(project: Path, tmp_path: Path) -> None:
    bundle = packaging.plan("train.py", project / "src")
    archive = packaging.write(bundle, tmp_path / packaging.ARCHIVE_NAME)

    assert bundle.program == "train.py"
    assert sorted(_members(archive)) == ["lib/helpers.py", "requirements.txt", "train.py"]


def test_entry_point_may_be_a_sub_path_of_source_dir(project: Path) -> None:
    bundle = packaging.plan("lib/helpers.py", project / "src")

    assert bundle.program == "lib/helpers.py"


def test_missing_entry_point_in_source_dir_is_refused(project: Path) -> None:
    with pytest.raises(ValueError, match="not found in source_dir"):
        packaging.plan("nope.py", project / "src")


@pytest.mark.parametrize("entry_point", ["../extra.cfg", "/etc/passwd"])
def test_entry_point_outside_source_dir_is_refused(project: Path, entry_point: str) -> None:
    with pytest.raises(ValueError, match="inside source_dir"):
        packaging.plan(entry_point, project / "src")


def test_missing_entry_point_or_source_dir_is_refused(project: Path) -> None:
    with pytest.raises(ValueError, match="is not a file"):
        packaging.plan(str(project / "absent.py"))
    with pytest.raises(ValueError, match="is not a folder"):
        packaging.plan("train.py", project / "absent")


def test_dependencies_land_at_the_root_under_their_base_name(project: Path, tmp_path: Path) -> None:
    bundle = packaging.plan(
        "train.py", project / "src", [project / "shared", str(project / "extra.cfg")]
    )
    archive = packaging.write(bundle, tmp_path / packaging.ARCHIVE_NAME)

    assert sorted(_members(archive)) == [
        "extra.cfg",
        "lib/helpers.py",
        "requirements.txt",
        "shared/feature.py",
        "train.py",
    ]


def test_missing_dependency_is_refused(project: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        packaging.plan("train.py", project / "src", [project / "absent"])


def test_colliding_member_names_are_refused(project: Path) -> None:
    (project / "lib").mkdir()
    (project / "lib" / "helpers.py").write_text("other\n")
    with pytest.raises(ValueError, match=r"would both be 'lib/helpers\.py'"):
        packaging.plan("train.py", project / "src", [project / "lib"])


def test_archive_bytes_are_deterministic(project: Path, tmp_path: Path) -> None:
    first = packaging.write(packaging.plan("train.py", project / "src"), tmp_path / "a.tar.gz")
    for file in (project / "src").rglob("*"):
        os.utime(file, (1_000_000, 1_000_000))
    second = packaging.write(packaging.plan("train.py", project / "src"), tmp_path / "b.tar.gz")

    assert first.read_bytes() == second.read_bytes()


def test_members_have_no_owner_or_time_and_keep_only_the_executable_bit(
    project: Path, tmp_path: Path
) -> None:
    (project / "src" / "run.sh").write_text("#!/bin/sh\n")
    (project / "src" / "run.sh").chmod(0o775)
    archive = packaging.write(
        packaging.plan("train.py", project / "src"), tmp_path / packaging.ARCHIVE_NAME
    )

    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {
        (0, 0, 0, "", "")
    }
    assert members["run.sh"].mode == 0o755
    assert members["train.py"].mode == 0o644
