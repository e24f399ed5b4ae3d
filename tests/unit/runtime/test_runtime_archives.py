"""model.tar.gz packing and refusal of unsafe archive members."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from services.runtime.archives import (
    MODEL_ARCHIVE_LIMITS,
    ArchiveLimits,
    ArchiveTooLarge,
    list_tar_files,
    make_tar_gz,
    safe_extract_tar,
)
from tests.archive_bombs import write_zero_bomb


def test_members_are_relative_to_the_folder_and_sorted(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.joblib").write_bytes(b"model")
    (model / "b.txt").write_text("b")
    (model / "sub" / "a.json").write_text("{}")
    archive = tmp_path / "model.tar.gz"

    make_tar_gz(model, archive)

    with tarfile.open(archive, "r:gz") as tar:
        assert tar.getnames() == ["b.txt", "model.joblib", "sub", "sub/a.json"]
        assert all(member.uid == 0 and member.uname == "" for member in tar.getmembers())
    out = tmp_path / "out"
    safe_extract_tar(archive, out)
    assert (out / "model.joblib").read_bytes() == b"model"
    assert (out / "sub" / "a.json").read_text() == "{}"
    assert not list(tmp_path.glob(".*.tmp"))


def test_same_folder_packs_to_identical_bytes(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.joblib").write_bytes(b"model")

    make_tar_gz(model, tmp_path / "one.tar.gz")
    make_tar_gz(model, tmp_path / "two.tar.gz")

    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()


def test_empty_folder_makes_an_empty_archive(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()

    make_tar_gz(tmp_path / "model", tmp_path / "model.tar.gz")

    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        assert tar.getnames() == []


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return archive


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../evil.py"), "'..'"),
        (_member("code/../../evil.py"), "'..'"),
        (_member("/etc/evil"), "absolute"),
        (_member("link", tarfile.SYMTYPE, "../../etc/passwd"), "links outside"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "links outside"),
        (_member("a/link", tarfile.SYMTYPE, "../../x"), "links outside"),
        (_member("hard", tarfile.LNKTYPE, "../outside"), "links outside"),
        (_member("dev", tarfile.CHRTYPE), "device"),
        (_member("fifo", tarfile.FIFOTYPE), "device"),
    ],
    ids=["parent", "nested-parent", "absolute", "symlink-up", "symlink-abs", "symlink-nested",
         "hardlink", "chardev", "fifo"],
)  # fmt: skip
def test_unsafe_members_are_refused(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    archive = _tar_with(tmp_path, member, b"payload")
    dest = tmp_path / "dest"

    with pytest.raises(ValueError, match=message) as caught:
        safe_extract_tar(archive, dest)

    assert repr(member.name) in str(caught.value)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_links_inside_the_archive_are_allowed(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tar:
        data = _member("pkg/data.txt")
        data.size = 2
        tar.addfile(data, io.BytesIO(b"hi"))
        tar.addfile(_member("pkg/alias.txt", tarfile.SYMTYPE, "data.txt"))

    safe_extract_tar(archive, tmp_path / "dest")

    assert (tmp_path / "dest" / "pkg" / "alias.txt").read_text() == "hi"


def test_not_a_tar_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"not a tar")

    with pytest.raises(ValueError, match="not a readable tar archive"):
        safe_extract_tar(bogus, tmp_path / "dest")


def test_a_zip_bomb_is_refused_at_its_header_naming_the_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    write_zero_bomb(bomb, 2 * 1024**3)
    assert bomb.stat().st_size < 4 * 1024 * 1024

    started = time.monotonic()
    with pytest.raises(ArchiveTooLarge, match="archive size limit"):
        safe_extract_tar(bomb, tmp_path / "out")
    assert time.monotonic() - started < 2, "the bomb was unpacked before being refused"
    assert not list((tmp_path / "out").iterdir())
    # Within the byte limit (a model.tar.gz may unpack to 16 GiB), the ratio limit still tells
    # a bomb from data.
    with pytest.raises(ArchiveTooLarge, match="ratio limit"):
        safe_extract_tar(bomb, tmp_path / "out", MODEL_ARCHIVE_LIMITS)


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(11):
        (folder / f"f{index}").write_text("x")
    archive = tmp_path / "many.tar.gz"
    make_tar_gz(folder, archive)
    with pytest.raises(ArchiveTooLarge, match="more than 10 members"):
        safe_extract_tar(archive, tmp_path / "out", ArchiveLimits(max_members=10))
    with archive.open("rb") as source:
        assert len(list_tar_files(source, ArchiveLimits(max_members=11))) == 11


def test_bzip2_and_plain_tars_are_read_within_limits(tmp_path: Path) -> None:
    for mode, name in (("w:bz2", "a.tar.bz2"), ("w:xz", "a.tar.xz"), ("w", "a.tar")):
        payload = io.BytesIO(b"print('hi')\n")
        info = tarfile.TarInfo("train.py")
        info.size = len(payload.getvalue())
        with tarfile.open(tmp_path / name, mode) as tar:
            tar.addfile(info, payload)
        with (tmp_path / name).open("rb") as source:
            assert list_tar_files(source, ArchiveLimits()) == ["train.py"]
        with pytest.raises(ArchiveTooLarge, match="size limit"):
            safe_extract_tar(tmp_path / name, tmp_path / "out", ArchiveLimits(max_bytes=4))
