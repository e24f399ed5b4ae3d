"""`python -m services.batch.every_runtime`: one batch worker per built script runtime.

A batch worker runs handlers in-process, so it serves the transforms of models on its own
runtime only (see services.batch.app). A container that must serve every runtime the
installation offers (compose's `batch` service) runs this instead of one worker: it starts
`<runtime>/bin/python -m services.batch` for each runtime built in the runtimes folder
(`SKMAKER_RUNTIMES_DIR`), and looks again every `--poll-s` seconds, so a runtime built later
(by the control, for a transform that waits on it, or by a trainer, on the shared volume) gets
its worker then. The default runtime's worker (the newest) keeps the container's ports (its
health check and /metrics); the others bind free ones and get a work folder of their own. A
worker that exits is started again after a backoff (1 s, doubling to 60 s). SIGTERM and
SIGINT are passed to every worker, which drain as they do alone; this exits once they did.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.runtime import script_runtimes

log = logging.getLogger("services.batch.every_runtime")

_FIRST_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0
# A worker that ran this long before it exited is restarted at once (it was not crash-looping).
_STABLE_AFTER_S = 60.0


@dataclass
class _Worker:
    runtime: str
    process: subprocess.Popen[bytes]
    started: float
    backoff_s: float = _FIRST_BACKOFF_S


class EveryRuntimeWorkers:
    """Keeps one batch worker per built runtime; `step` is one look at the runtimes folder."""

    def __init__(
        self,
        runtimes_dir: str,
        environ: Mapping[str, str],
        extra_args: Sequence[str] = (),
    ) -> None:
        """Workers get `environ` (the container's `SKMAKER_BATCH_*` settings) and `extra_args`."""
        self._dir = runtimes_dir
        self._environ = dict(environ)
        self._extra_args = list(extra_args)
        self._workers: dict[str, _Worker] = {}
        # Runtime -> (backoff to use next, not before when).
        self._restart_at: dict[str, tuple[float, float]] = {}

    def step(self) -> list[str]:
        """Starts a worker for each built runtime without one (after its backoff); returns
        the runtimes it started workers for."""
        self._reap()
        default = script_runtimes.runtime("", self._dir).name
        started = []
        now = time.monotonic()
        for name in script_runtimes.names(self._dir):
            if name in self._workers:
                continue
            backoff, not_before = self._restart_at.get(name, (_FIRST_BACKOFF_S, 0.0))
            if now < not_before or not script_runtimes.runtime(name, self._dir).is_current():
                continue
            self._start(name, is_default=name == default, backoff_s=backoff)
            started.append(name)
        return started

    def pids(self) -> dict[str, int]:
        """The running workers' process ids, by runtime."""
        return {name: worker.process.pid for name, worker in self._workers.items()}

    def stop(self, grace_s: float) -> int:
        """SIGTERM to every worker, SIGKILL to those still running after `grace_s`; returns
        0 when every worker exited cleanly, else the first other exit code."""
        for worker in self._workers.values():
            worker.process.terminate()
        deadline = time.monotonic() + grace_s
        code = 0
        for name, worker in self._workers.items():
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("batch worker on %s did not drain in %.0fs; killing it", name, grace_s)
                worker.process.kill()
                worker.process.wait()
            returned = worker.process.returncode
            code = code or (returned if returned not in (0, -signal.SIGTERM) else 0)
        self._workers.clear()
        return code

    def _start(self, name: str, *, is_default: bool, backoff_s: float) -> None:
        rt = script_runtimes.runtime(name, self._dir)
        env = dict(self._environ)
        if not is_default:
            # The container's ports and work folder are the default worker's; requirements
            # installed for one runtime's python are no use to another's.
            work = Path(env.get("SKMAKER_BATCH_WORK_DIR", "./.skmaker/work/batch"))
            env.update(
                SKMAKER_BATCH_GRPC_PORT="0",
                SKMAKER_BATCH_METRICS_PORT="0",
                SKMAKER_BATCH_WORK_DIR=str(work.with_name(f"{work.name}-{name}")),
                SKMAKER_BATCH_DEPS_DIR=str(work.with_name(f"deps-{name}")),
            )
        process = subprocess.Popen(
            [str(rt.python), "-m", "services.batch", *self._extra_args], env=env
        )
        self._workers[name] = _Worker(name, process, time.monotonic(), backoff_s)
        self._restart_at.pop(name, None)
        log.info("started a batch worker on runtime %s (pid %d)", name, process.pid)

    def _reap(self) -> None:
        now = time.monotonic()
        for name, worker in list(self._workers.items()):
            code = worker.process.poll()
            if code is None:
                continue
            del self._workers[name]
            stable = now - worker.started >= _STABLE_AFTER_S
            backoff = _FIRST_BACKOFF_S if stable else min(worker.backoff_s * 2, _MAX_BACKOFF_S)
            wait = 0.0 if stable else worker.backoff_s
            self._restart_at[name] = (backoff, now + wait)
            log.warning(
                "batch worker on runtime %s exited with %s; starting it again in %.0fs",
                name,
                code,
                wait,
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the workers until SIGTERM or SIGINT; returns 0 when they all drained cleanly."""
    parser = argparse.ArgumentParser(
        prog="python -m services.batch.every_runtime",
        description="Run one batch worker per built script runtime (a compose batch container).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--runtimes-dir",
        default=os.environ.get("SKMAKER_RUNTIMES_DIR", ""),
        help="the runtimes folder (env SKMAKER_RUNTIMES_DIR)",
    )
    parser.add_argument("--poll-s", type=float, default=5.0, help="how often to look for runtimes")
    parser.add_argument(
        "--stop-grace-s",
        type=float,
        default=float(os.environ.get("SKMAKER_BATCH_SHUTDOWN_GRACE_S", "5")) + 5.0,
        help="how long workers may drain on SIGTERM before they are killed",
    )
    parser.add_argument("worker_args", nargs=argparse.REMAINDER, help="-- then worker flags")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    extra = args.worker_args[1:] if args.worker_args[:1] == ["--"] else args.worker_args
    workers = EveryRuntimeWorkers(args.runtimes_dir, os.environ, extra)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    while not stopping.is_set():
        try:
            workers.step()
        except (OSError, script_runtimes.UnknownRuntime) as err:
            log.error("cannot start batch workers: %s", err)
        stopping.wait(args.poll_s)
    log.info("stopping %d batch worker(s)", len(workers.pids()))
    return workers.stop(args.stop_grace_s)


if __name__ == "__main__":
    sys.exit(main())
