"""Archive bombs for tests: small files that unpack to gigabytes."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

_BLOCK = 64 * 1024 * 1024


def write_zero_bomb(path: Path, unpacked_bytes: int, member: str = "zeros.bin") -> None:
    """A tar.gz holding one member of `unpacked_bytes` zeros, a few MB on disk.

    gzip allows a file of several members, read as one stream: one 64 MiB block of zeros is
    compressed once and repeated, so a 2 GiB bomb is written in well under a second.
    """
    header = tarfile.TarInfo(member)
    header.size = unpacked_bytes
    with path.open("wb") as out:
        out.write(gzip.compress(header.tobuf(format=tarfile.PAX_FORMAT), mtime=0))
        zeros = gzip.compress(bytes(_BLOCK), mtime=0)
        for _ in range(unpacked_bytes // _BLOCK):
            out.write(zeros)
        # The rest of the data, its padding to 512 bytes, and the two zero blocks that end a tar.
        out.write(gzip.compress(bytes(unpacked_bytes % _BLOCK + 1024 + 512), mtime=0))
