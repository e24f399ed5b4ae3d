"""The trainer's work loop: lease a training task, run it, heartbeat while it runs, report.

One task at a time per worker process (scale by running more workers). While a job runs, a
heartbeat thread renews the lease and ships log lines, metrics and secondary statuses — every
0.5 s when there is output, else every `heartbeat_interval_seconds` the control asked for. A
stop request in a heartbeat answer stops the script and still uploads what it saved; a
superseded attempt (the control re-leased the task) is abandoned without a report.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.trainer.control_link import AttemptSuperseded, ControlLink, assignment_from_task
from services.trainer.job import JobEnvironment, TrainingJobRun
from services.trainer.metrics import TrainerMetrics
from skmaker.v1 import dispatch_pb2

log = logging.getLogger(__name__)

_BUSY_FLUSH_S = 0.5


DEFAULT_HEARTBEAT_LOG_BYTES = 1024 * 1024
DEFAULT_JOB_LOG_BYTES = 64 * 1024 * 1024
_MAX_PENDING_BATCHES = 4  # output waiting for heartbeats, in batches, before the script waits
_BACKPRESSURE_MAX_S = 30.0  # then lines are dropped (counted): the control is not taking them
_MAX_METRICS_PER_BEAT = 10_000
_MAX_PENDING_METRICS = 100_000


@dataclass
class HeartbeatReporter:
    """Buffers a job's progress and delivers it with heartbeats from its own thread.

    Output is bounded twice, so neither a heartbeat nor a job's log can outgrow what the
    control takes: a heartbeat carries at most `max_beat_log_bytes` of lines (more waits for
    the next beat, sent at once), and a job keeps at most `max_job_log_bytes`; what comes after
    is dropped behind one truncation marker (the script runs on, and metrics are still parsed).
    While heartbeats fall behind, the output reader waits for room (up to 30 s, then drops
    lines with a marker saying how many), which slows the script's writes instead of losing them.
    """

    link: ControlLink
    task: dispatch_pb2.Task
    run: TrainingJobRun | None = None
    max_beat_log_bytes: int = DEFAULT_HEARTBEAT_LOG_BYTES
    max_job_log_bytes: int = DEFAULT_JOB_LOG_BYTES
    _lines: list[tuple[str, str, float]] = field(default_factory=list)
    _metrics: list[tuple[str, float, float]] = field(default_factory=list)
    _status: str = ""
    # Lines the control confirmed; sent as log_offset so a re-sent batch is not stored twice.
    delivered_lines: int = 0
    _pending_bytes: int = 0
    _kept_bytes: int = 0  # of the job's log, markers excluded
    _truncated_lines: int = 0  # after the job's cap
    _dropped_lines: int = 0  # while heartbeats could not keep up
    _dropped_metrics: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _room: threading.Condition | None = None
    _wake: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._room = threading.Condition(self._lock)

    @property
    def truncated_lines(self) -> int:
        """Lines dropped because the job's log reached its cap."""
        return self._truncated_lines

    # JobReporter
    def log_line(self, stream: str, text: str, timestamp: float) -> None:
        """Queues one output line, within the job's cap (may wait while heartbeats catch up)."""
        size = len(text) + 1
        assert self._room is not None
        with self._room:
            if self._kept_bytes + size > self.max_job_log_bytes:
                if self._truncated_lines == 0:
                    self._lines.append(("platform", self._truncation_marker(), timestamp))
                self._truncated_lines += 1
                return
            limit = self.max_beat_log_bytes * _MAX_PENDING_BATCHES
            if self._pending_bytes + size > limit:
                self._wake.set()
                deadline = time.monotonic() + _BACKPRESSURE_MAX_S
                while self._pending_bytes + size > limit and not self._done.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._dropped_lines:
                        self._dropped_lines += 1
                        return
                    self._room.wait(min(remaining, 0.5))
            if self._dropped_lines:
                self._lines.append(
                    (
                        "platform",
                        f"[skmaker] {self._dropped_lines} lines of output were dropped: the "
                        "control did not take the log for 30 s",
                        timestamp,
                    )
                )
                self._dropped_lines = 0
            self._lines.append((stream, text, timestamp))
            self._pending_bytes += size
            self._kept_bytes += size
            if self._pending_bytes >= self.max_beat_log_bytes:
                self._wake.set()

    def _truncation_marker(self) -> str:
        return (
            f"[skmaker] log truncated: the job wrote more than "
            f"{self.max_job_log_bytes // 1024**2} MiB of output; what follows is not kept "
            "(the script runs on and its metrics are still read; trainer --max-job-log-bytes)"
        )

    def metric(self, name: str, value: float, timestamp: float) -> None:
        """Queues one metric sample (at most 100,000 wait at a time; more are dropped)."""
        with self._lock:
            if len(self._metrics) >= _MAX_PENDING_METRICS:
                self._dropped_metrics += 1
                return
            self._metrics.append((name, value, timestamp))

    def secondary_status(self, status: str) -> None:
        """Queues a secondary status and sends it at once."""
        with self._lock:
            self._status = status
        self._wake.set()

    def start(self) -> None:
        """Starts the heartbeat thread."""
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{self.task.task_id}", daemon=True
        )
        self._thread.start()

    def finish(self) -> tuple[list[tuple[str, str, float]], list[tuple[str, float, float]]]:
        """Stops heartbeating; returns what was not delivered yet (it goes with CompleteTask).

        What is left is at most one heartbeat's worth: the rest is sent by heartbeats first.
        """
        self._flush_backlog()
        self._done.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._truncated_lines:
                self._lines.append(
                    ("platform", f"[skmaker] {self._truncated_lines} lines not kept", time.time())
                )
            if self._dropped_lines:
                self._lines.append(
                    ("platform", f"[skmaker] {self._dropped_lines} lines dropped", time.time())
                )
            lines, metrics = self._lines, self._metrics
            self._lines, self._metrics = [], []
            self._pending_bytes = 0
        return lines, metrics

    def _flush_backlog(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._thread is not None and self._thread.is_alive():
            with self._lock:
                backlog = (
                    self._pending_bytes > self.max_beat_log_bytes
                    or len(self._metrics) > _MAX_METRICS_PER_BEAT
                )
            if not backlog or time.monotonic() > deadline:
                return
            self._wake.set()
            time.sleep(0.05)

    def _take(self) -> tuple[list[tuple[str, str, float]], list[tuple[str, float, float]], str]:
        """One heartbeat's worth: lines up to the byte budget (at least one), some metrics."""
        assert self._room is not None
        with self._room:
            taken_bytes = 0
            count = 0
            for _, text, _ in self._lines:
                if count and taken_bytes + len(text) + 1 > self.max_beat_log_bytes:
                    break
                taken_bytes += len(text) + 1
                count += 1
            lines, self._lines = self._lines[:count], self._lines[count:]
            metrics = self._metrics[:_MAX_METRICS_PER_BEAT]
            self._metrics = self._metrics[_MAX_METRICS_PER_BEAT:]
            status, self._status = self._status, ""
            self._pending_bytes = max(0, self._pending_bytes - taken_bytes)
            self._room.notify_all()
            if self._lines or self._metrics:
                self._wake.set()  # more waiting: the next beat goes at once
        return lines, metrics, status

    def _give_back(
        self,
        lines: list[tuple[str, str, float]],
        metrics: list[tuple[str, float, float]],
        status: str,
    ) -> None:
        with self._lock:
            self._lines[:0] = lines
            self._metrics[:0] = metrics
            self._status = self._status or status
            self._pending_bytes += sum(len(text) + 1 for _, text, _ in lines)

    def _beat(self) -> None:
        interval = self.task.heartbeat_interval_seconds or 2.0
        last_sent = 0.0
        while not self._done.is_set():
            self._wake.wait(_BUSY_FLUSH_S)
            self._wake.clear()
            if self._done.is_set():
                return
            with self._lock:
                has_news = bool(self._lines or self._metrics or self._status)
            if not has_news and time.monotonic() - last_sent < interval:
                continue
            lines, metrics, status = self._take()
            try:
                stop = self.link.heartbeat(
                    self.task, lines, metrics, status, log_offset=self.delivered_lines
                )
            except AttemptSuperseded as err:
                log.warning(
                    "task %s attempt %s superseded: %s", self.task.task_id, self.task.attempt, err
                )
                if self.run is not None:
                    self.run.abandoned.set()
                return
            except grpc.RpcError as err:
                # The control is down or restarting: keep the progress for the next beat.
                log.warning("heartbeat failed (%s); will retry", err.code().name)
                self._give_back(lines, metrics, status)
                self._done.wait(_BUSY_FLUSH_S)
                continue
            self.delivered_lines += len(lines)
            last_sent = time.monotonic()
            if stop and self.run is not None and not self.run.stop_requested.is_set():
                log.info("stop requested for %s", self.task.training.job_name)
                self.run.stop_requested.set()


class TrainerWorker:
    """Pulls training tasks from the control until drained; runs one at a time."""

    def __init__(
        self,
        link: ControlLink,
        work_dir: Path,
        job_env: JobEnvironment,
        metrics: TrainerMetrics,
        *,
        acquire_wait_s: float = 10.0,
        keep_workspaces: bool = False,
        max_beat_log_bytes: int = DEFAULT_HEARTBEAT_LOG_BYTES,
        max_job_log_bytes: int = DEFAULT_JOB_LOG_BYTES,
    ) -> None:
        self._link = link
        self._work_dir = work_dir
        self._job_env = job_env
        self._metrics = metrics
        self._acquire_wait_s = acquire_wait_s
        self._keep_workspaces = keep_workspaces
        self._max_beat_log_bytes = max_beat_log_bytes
        self._max_job_log_bytes = max_job_log_bytes
        self._draining = threading.Event()
        self._current: TrainingJobRun | None = None
        self._thread = threading.Thread(target=self._loop, name="trainer-loop", daemon=True)

    def start(self) -> None:
        """Starts the work loop."""
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def drain(self) -> None:
        """Stops taking tasks; abandons the running one (its lease expires and it is retried)."""
        self._draining.set()
        current = self._current
        if current is not None:
            current.abandoned.set()

    def join(self, timeout_s: float) -> None:
        """Waits for the loop to end."""
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._draining.is_set():
            try:
                task = self._link.acquire(self._acquire_wait_s, self._draining)
            except grpc.RpcError as err:
                log.warning("AcquireTask failed (%s: %s)", err.code().name, err.details())
                self._draining.wait(1.0)
                continue
            if task is None or self._draining.is_set():
                continue
            try:
                self._run_task(task)
            except Exception:
                # A bug in one task must not leave a worker that is SERVING but takes no work;
                # its lease expires and the control retries the job elsewhere.
                log.exception("task %s crashed the trainer loop; carrying on", task.task_id)
                self._metrics.jobs.labels(outcome="crashed").inc()

    def _run_task(self, task: dispatch_pb2.Task) -> None:
        assignment = assignment_from_task(task)
        log.info("running %s attempt %d", assignment.job_name, assignment.attempt)
        reporter = HeartbeatReporter(
            self._link,
            task,
            max_beat_log_bytes=self._max_beat_log_bytes,
            max_job_log_bytes=self._max_job_log_bytes,
        )
        root = self._work_dir / assignment.job_name
        run = TrainingJobRun(assignment, root, reporter, self._link, self._job_env)
        reporter.run = run
        self._current = run
        if self._draining.is_set():
            run.abandoned.set()
        reporter.start()
        started = time.monotonic()
        try:
            outcome = run.run()
        finally:
            lines, metrics = reporter.finish()
            self._current = None
        self._metrics.job_seconds.observe(time.monotonic() - started)
        if run.abandoned.is_set():
            log.info("abandoned %s attempt %d", assignment.job_name, assignment.attempt)
            self._metrics.jobs.labels(outcome="abandoned").inc()
        else:
            try:
                self._link.complete(
                    task, outcome, lines, metrics, log_offset=reporter.delivered_lines
                )
                self._metrics.jobs.labels(outcome=outcome.outcome).inc()
                log.info("%s ended: %s", assignment.job_name, outcome.outcome)
            except (AttemptSuperseded, grpc.RpcError) as err:
                log.warning("could not report %s: %s", assignment.job_name, err)
                self._metrics.jobs.labels(outcome="unreported").inc()
        if not self._keep_workspaces:
            shutil.rmtree(root, ignore_errors=True)
