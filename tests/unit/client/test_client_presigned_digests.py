"""What a presigned upload announces: the file's sha256 and the MD5s the object store checks,
of the whole file or of each part (`skmaker.v1.presigned.digests_of`)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from skmaker.v1.presigned import digests_of


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


@pytest.mark.parametrize("size", [0, 1, 10, 29, 30, 31, 95])
def test_part_md5s_cover_the_file_in_parts_of_the_given_size(tmp_path: Path, size: int) -> None:
    data = (bytes(range(97)) * 2)[:size]
    path = tmp_path / "f.bin"
    path.write_bytes(data)

    digests = digests_of(path, part_bytes=10, multipart=True)

    parts = [data[start : start + 10] for start in range(0, len(data), 10)] or [b""]
    assert digests.size == size
    assert digests.sha256 == hashlib.sha256(data).hexdigest()
    assert digests.content_md5 == _md5(data)
    assert digests.part_md5s == tuple(_md5(part) for part in parts)


def test_a_single_put_announces_no_parts(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 25)
    digests = digests_of(path, part_bytes=10, multipart=False)
    assert (digests.part_md5s, digests.content_md5) == ((), _md5(b"x" * 25))
