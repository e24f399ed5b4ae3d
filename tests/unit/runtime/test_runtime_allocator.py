"""retain_freed_memory: decoding one mini-batch after another stops faulting pages in."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Decodes a 6 MB CSV body as a batch worker does each mini-batch, ten times over; prints the
# page faults the last nine took.
_CHURN = """
import resource, sys
import numpy as np
from services.sagemaker.serving import codecs
from services.runtime import allocator
if sys.argv[1] == "retain":
    assert allocator.retain_freed_memory(512 * 1024 * 1024)
rows = np.random.default_rng(0).normal(size=(32_000, 20))
body = "\\n".join(",".join(f"{v:.6f}" for v in row) for row in rows).encode()
codecs.decode(body, "text/csv")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    codecs.decode(body, "text/csv")
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True, timeout=60
    )
    return int(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retained_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default, retained = _faults("default"), _faults("retain")
    # By default the parser's and the matrix's pages are faulted in again every time.
    assert default > 10_000
    assert retained < default / 5
