"""model.tar.gz packing and refusal of unsafe archive members."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from services.runtime.archives import make_tar_gz, safe_extract_tar


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
