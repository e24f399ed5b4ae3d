"""`python -m services.batch.every_runtime`: one real batch worker per built script runtime.

The runtimes are small stand-ins for real builds: a virtual environment whose interpreter and
libraries are this test's `.venv`'s, with the stamp a finished build writes, so each worker
really starts on its runtime's python and says which runtime it runs (as in a compose batch
container). The workers have no control to reach; they run until told to stop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.runtime import script_runtimes
from tests.harness import is_running

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = (sys.executable, "-m", "services.batch.every_runtime")


def _fake_runtime(runtimes: Path, name: str, lock: Path) -> None:
    """A runtime as a build leaves it: a venv (this one's python and libraries), its stamp."""
    root = runtimes / name
    (root / "bin").mkdir(parents=True)
    venv = Path(sys.prefix)
    shutil.copyfile(venv / "pyvenv.cfg", root / "pyvenv.cfg")
    (root / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    (root / "lib").symlink_to(venv / "lib")
    stamp = {"name": name, "lock_sha256": script_runtimes._sha256(lock)}
    (root / script_runtimes.STAMP_FILE).write_text(json.dumps(stamp))


def _wait_for(log: Path, pattern: str, deadline_s: float = 60.0) -> re.Match[str]:
    ends = time.monotonic() + deadline_s
    while time.monotonic() < ends:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in the log:\n{log.read_text(errors='replace')[-3000:]}")


def test_a_worker_per_built_runtime_also_one_built_later(tmp_path: Path) -> None:
    locks = tmp_path / "src" / "runtimes"
    locks.mkdir(parents=True)
    for name in ("sklearn-1.2", "sklearn-1.9"):
        (locks / f"{name}.lock").write_text(f"# {name}\nnumpy==2.4.6\n")
    runtimes = tmp_path / "runtimes"
    _fake_runtime(runtimes, "sklearn-1.9", locks / "sklearn-1.9.lock")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SKMAKER_SOURCE_DIR": str(tmp_path / "src"),
        "SKMAKER_BATCH_CONTROL": "127.0.0.1:9",  # nothing listens: the workers just wait
        "SKMAKER_BATCH_HOST": "127.0.0.1",
        "SKMAKER_BATCH_GRPC_PORT": "0",
        "SKMAKER_BATCH_METRICS_PORT": "0",
        "SKMAKER_BATCH_WORK_DIR": str(tmp_path / "work" / "batch"),
    }
    log = tmp_path / "every_runtime.log"
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [*LAUNCHER, "--runtimes-dir", str(runtimes), "--poll-s", "0.2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        newest = _wait_for(log, r"started a batch worker on runtime sklearn-1\.9 \(pid (\d+)\)")
        _wait_for(log, r"user code runs on script runtime sklearn-1\.9 ")
        assert "on runtime sklearn-1.2" not in log.read_text()  # not built: no worker
        # Built later (by the control or a trainer, on the shared volume): its worker starts.
        _fake_runtime(runtimes, "sklearn-1.2", locks / "sklearn-1.2.lock")
        oldest = _wait_for(log, r"started a batch worker on runtime sklearn-1\.2 \(pid (\d+)\)")
        _wait_for(log, r"user code runs on script runtime sklearn-1\.2 ")
        assert (tmp_path / "work" / "batch-sklearn-1.2").is_dir()  # a work folder of its own
        pids = [int(newest.group(1)), int(oldest.group(1))]
        assert all(is_running(pid) for pid in pids)
        # A worker that dies is started again (after a second's backoff).
        os.kill(pids[1], signal.SIGKILL)
        _wait_for(log, r"batch worker on runtime sklearn-1\.2 exited with -9; starting it again")
        again = _wait_for(log, rf"on runtime sklearn-1\.2 \(pid (?!{pids[1]}\))(\d+)\)")
        pids[1] = int(again.group(1))
        assert is_running(pids[1])
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert not any(is_running(pid) for pid in pids)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
