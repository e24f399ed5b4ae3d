"""A stopped service leaves at once, even when a thread it cannot stop is still running.

Found under compose: replicas and batch workers logged "stopped" and were SIGKILLed by Docker ten
seconds later, because the interpreter's exit joined threads and unloaded modules first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import REPO_ROOT, wait_for_serving

SERVICE = """
import sys, threading
from services.runtime import lifecycle
from services.runtime.settings import ServiceSettings

def block_forever():
    threading.Event().wait()  # a thread nothing can stop: no timeout, no stop event

def on_start():
    threading.Thread(target=block_forever, name="stuck-worker", daemon=False).start()

lifecycle.configure_logging("INFO")
lifecycle.serve(
    lifecycle.Service(name="probe", servicers=(), on_start=on_start),
    ServiceSettings(port_file=sys.argv[1], shutdown_grace_s=0.5),
)
"""

# Generous: a hang detector, not a speed check (without the fix the process never exits).
EXIT_DEADLINE_S = 20.0


def test_sigterm_exits_zero_and_names_the_thread_it_left(tmp_path: Path) -> None:
    script = tmp_path / "probe_service.py"
    script.write_text(SERVICE)
    port_file = tmp_path / "probe.port.json"
    stderr_path = tmp_path / "probe.stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script), str(port_file)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30.0
        while not port_file.exists():
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "no port file"
            time.sleep(0.05)
        port = json.loads(port_file.read_text())["grpc"]
        wait_for_serving(f"127.0.0.1:{port}", deadline_s=30.0)

        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=EXIT_DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    log = stderr_path.read_text()
    assert code == 0, log
    assert "probe stopped" in log
    assert "thread stuck-worker still runs" in log
    assert "block_forever" in log  # its stack says where it was stuck
