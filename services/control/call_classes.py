"""Which control calls are long, and the capacity each kind gets (services.runtime.call_limits).

Users' streams (log follows, uploads, downloads), workers' transfers (code, data and models of
the tasks they run) and long polls (workers waiting for a task) each get threads of their own,
so that however many of them are open, Describe, health checks and the workers' heartbeats
(which keep leases alive) still find a thread, and users' streams cannot hold up a running
job's downloads and uploads. Workers are told apart by the token the control issued them, or
by the marker their calls carry (`WORKER_MARKER`): remote workers hold the people's token, and
the people holding it are trusted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from services.control.config import ControlSettings
from services.control.metrics import ControlMetrics
from services.runtime.auth import ScopedTokens
from services.runtime.call_limits import (
    CallClass,
    CallLimiter,
    IdleCallWatchdog,
    has_worker_marker,
)
from skmaker.v1 import artifacts_pb2, dispatch_pb2, training_pb2

_BEARER = "Bearer "


def _method(pb_module: Any, service_name: str, name: str) -> str:
    service = pb_module.DESCRIPTOR.services_by_name[service_name]
    return f"/{service.full_name}/{name}"


TRANSFER_METHODS = frozenset(
    {
        _method(artifacts_pb2, "ArtifactService", "UploadArtifact"),
        _method(artifacts_pb2, "ArtifactService", "DownloadArtifact"),
    }
)
STREAM_METHODS = TRANSFER_METHODS | {_method(training_pb2, "TrainingService", "GetTrainingJobLogs")}
LONG_POLL_METHODS = frozenset({_method(dispatch_pb2, "DispatchService", "AcquireTask")})


def worker_callers(
    scoped_tokens: ScopedTokens | None,
) -> Callable[[Sequence[tuple[str, Any]]], bool]:
    """Tells a worker's call by its issued token (tokens on) or its marker (tokens off)."""
    if scoped_tokens is None:
        return has_worker_marker

    def holds_issued_token(metadata: Sequence[tuple[str, Any]]) -> bool:
        header = str(dict(metadata).get("authorization", ""))
        if not header.startswith(_BEARER):
            return False
        digest = hashlib.sha256(header[len(_BEARER) :].encode()).digest()
        return scoped_tokens.scope_of(digest) is not None

    return holds_issued_token


def worker_or_marked(
    scoped_tokens: ScopedTokens | None,
) -> Callable[[Sequence[tuple[str, Any]]], bool]:
    """Tells a worker's call (a transfer it makes, a write to a training job's output) by its
    issued token or its marker (a remote trainer holds the people's token; they are trusted)."""
    issued = worker_callers(scoped_tokens)
    return lambda metadata: has_worker_marker(metadata) or issued(metadata)


def control_call_limiter(
    settings: ControlSettings, scoped_tokens: ScopedTokens | None, metrics: ControlMetrics
) -> CallLimiter:
    """The limiter for the control's streams and long polls, as `settings` size them."""
    worker_transfers = CallClass(
        name="worker transfer",
        methods=TRANSFER_METHODS,
        capacity=settings.max_worker_transfers,
        per_caller=settings.max_worker_transfers,
        idle_timeout_s=settings.stream_idle_timeout_s,
        flags=("--max-worker-transfers", "--max-worker-transfers"),
        callers=worker_or_marked(scoped_tokens),
    )
    streams = CallClass(
        name="stream",
        methods=STREAM_METHODS,
        capacity=settings.max_streams,
        per_caller=settings.max_streams_per_caller,
        idle_timeout_s=settings.stream_idle_timeout_s,
        flags=("--max-streams", "--max-streams-per-caller"),
    )
    long_polls = CallClass(
        name="long poll",
        methods=LONG_POLL_METHODS,
        capacity=settings.max_long_polls,
        per_caller=settings.max_long_polls_per_caller,
        flags=("--max-long-polls", "--max-long-polls-per-caller"),
    )
    interval_s = min(1.0, max(0.05, settings.stream_idle_timeout_s / 4))
    classes = [worker_transfers, streams, long_polls]
    limiter = CallLimiter(classes, IdleCallWatchdog(interval_s), metrics.refused_long_call)
    metrics.track_long_calls(limiter.in_flight, [c.name for c in classes])
    return limiter
