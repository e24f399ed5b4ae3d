"""A job's output reaches the control in heartbeats that stay small, and its log has a cap."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from services.trainer.worker import HeartbeatReporter
from skmaker.v1 import dispatch_pb2


class RecordingLink:
    """Takes heartbeats as a control would and remembers each one's lines."""

    def __init__(self) -> None:
        self.beats: list[list[tuple[str, str, float]]] = []
        self.lock = threading.Lock()

    def heartbeat(
        self,
        task: dispatch_pb2.Task,
        log_lines: Sequence[tuple[str, str, float]],
        metrics: Sequence[tuple[str, float, float]],
        secondary_status: str,
        log_offset: int,
    ) -> bool:
        with self.lock:
            self.beats.append(list(log_lines))
        return False


def _reporter(link: RecordingLink, beat_bytes: int, job_bytes: int) -> HeartbeatReporter:
    task = dispatch_pb2.Task(task_id="t", attempt=1, heartbeat_interval_seconds=1)
    return HeartbeatReporter(
        link,  # type: ignore[arg-type]
        task,
        max_beat_log_bytes=beat_bytes,
        max_job_log_bytes=job_bytes,
    )


def test_no_heartbeat_carries_more_than_its_budget_and_no_line_is_lost() -> None:
    link = RecordingLink()
    reporter = _reporter(link, beat_bytes=10_000, job_bytes=10**9)
    reporter.start()
    sent = [f"{index:06d}" + "x" * 993 for index in range(2_000)]  # 2 MB, 1,000 bytes a line
    for text in sent:
        reporter.log_line("stdout", text, 0.0)
    rest, _ = reporter.finish()

    assert all(sum(len(t) + 1 for _, t, _ in beat) <= 10_000 for beat in link.beats)
    assert sum(len(t) + 1 for _, t, _ in rest) <= 10_000
    delivered = [t for beat in link.beats for _, t, _ in beat] + [t for _, t, _ in rest]
    assert delivered == sent


def test_a_job_log_stops_at_its_cap_behind_one_marker() -> None:
    link = RecordingLink()
    reporter = _reporter(link, beat_bytes=10_000, job_bytes=50_000)
    reporter.start()
    for index in range(1_000):
        reporter.log_line("stdout", f"{index:04d}" + "y" * 95, 0.0)  # 100 kB in all
    rest, _ = reporter.finish()

    delivered = [t for beat in link.beats for _, t, _ in beat] + [t for _, t, _ in rest]
    kept = [t for t in delivered if not t.startswith("[skmaker]")]
    markers = [t for t in delivered if t.startswith("[skmaker]")]
    assert kept == [f"{index:04d}" + "y" * 95 for index in range(500)]
    assert "log truncated" in markers[0] and markers[-1] == "[skmaker] 500 lines not kept"
    assert delivered.index(markers[0]) == 500  # where the cut is
