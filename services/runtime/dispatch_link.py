"""A worker's gRPC link to the control's DispatchService and ArtifactService.

Trainers and batch workers talk to the control the same way; `DispatchLink` is that common
part, and each worker's `ControlLink` adds the requests of its own task kind. Every call carries
a deadline. A control that restarts (even after kill -9) must not cost a task: AcquireTask,
CompleteTask, downloads and uploads are retried on UNAVAILABLE (and DEADLINE_EXCEEDED) until
`control_timeout_s`. FAILED_PRECONDITION or NOT_FOUND on a report means this attempt was
superseded (the task was given to another attempt): `AttemptSuperseded`, and the worker
abandons it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc

from services.runtime.auth import token_metadata
from services.runtime.call_limits import WORKER_MARKER
from services.runtime.tls import ClientTls, open_channel
from skmaker.v1 import artifacts_pb2_grpc, dispatch_pb2, dispatch_pb2_grpc, transfer

log = logging.getLogger(__name__)

T = TypeVar("T")

RPC_TIMEOUT_S = 30.0
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_SUPERSEDED = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# How often a long poll checks whether the worker started draining.
_CANCEL_CHECK_S = 0.05


class AttemptSuperseded(Exception):
    """The control no longer recognises this attempt (its lease expired and it was re-queued)."""


class DispatchLink:
    """Leases, heartbeats, completions and artifact transfers of one worker.

    Args:
        address: The control's gRPC address.
        worker_id: This worker's stable id (host/pid).
        task_kind: The `dispatch_pb2.TaskKind` this worker leases.
        token: Bearer token, empty when the control has none.
        control_timeout_s: How long to keep retrying while the control is unreachable.
        tls: TLS towards the control; None for plaintext.
    """

    def __init__(
        self,
        address: str,
        worker_id: str,
        task_kind: dispatch_pb2.TaskKind.ValueType,
        *,
        token: str = "",
        control_timeout_s: float = 120.0,
        tls: ClientTls | None = None,
        script_runtime: str = "",
    ) -> None:
        # The runtime this worker runs user code on in-process; it is given only its tasks.
        self._script_runtime = script_runtime
        self._channel = open_channel(
            address,
            tls=tls,
            options=[
                # Reconnect quickly after a control restart: a task is waiting on us.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ],
        )
        self._dispatch = dispatch_pb2_grpc.DispatchServiceStub(self._channel)
        self._artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self._channel)
        # The marker puts a worker's transfers in the control's worker capacity, apart from
        # users' streams (with tokens, the control tells workers by their issued token).
        self._metadata = (*token_metadata(token), WORKER_MARKER)
        self._task_kind = task_kind
        self.worker_id = worker_id
        self._control_timeout_s = control_timeout_s
        self._interrupted = threading.Event()

    def interrupt(self) -> None:
        """Ends every retry loop at once (they raise TimeoutError): the worker is shutting down."""
        self._interrupted.set()

    def close(self) -> None:
        """Ends retry loops and closes the channel."""
        self._interrupted.set()
        self._channel.close()

    def _retrying(self, call: Callable[[], T], what: str, cancel: threading.Event | None) -> T:
        """`call()`, again with backoff while the control is unreachable, up to the timeout.

        Raises:
            grpc.RpcError: another error, or the control stayed unreachable.
            TimeoutError: `cancel` (or `interrupt()`) ended the wait between two tries.
        """
        deadline = time.monotonic() + self._control_timeout_s
        delay = 0.1
        while True:
            try:
                return call()
            except grpc.RpcError as err:
                if err.code() not in _RETRYABLE or time.monotonic() + delay > deadline:
                    raise
                log.warning("%s: control unreachable (%s); retrying", what, err.code().name)
            if (cancel is not None and cancel.wait(delay)) or self._interrupted.wait(
                0 if cancel is not None else delay
            ):
                raise TimeoutError(f"{what}: cancelled while the control was unreachable")
            delay = min(delay * 2, 2.0)

    def acquire(self, wait_s: float, cancel: threading.Event) -> dispatch_pb2.Task | None:
        """Long-polls for a task; None when there was none, or once `cancel` is set.

        Setting `cancel` (a drain) ends the long poll at once instead of after `wait_s`.
        """
        request = dispatch_pb2.AcquireTaskRequest(
            worker_id=self.worker_id,
            kinds=[self._task_kind],
            wait_seconds=wait_s,
            script_runtime=self._script_runtime,
        )

        def long_poll() -> dispatch_pb2.AcquireTaskResponse | None:
            call = self._dispatch.AcquireTask.future(
                request, timeout=wait_s + RPC_TIMEOUT_S, metadata=self._metadata
            )
            # Woken by the answer itself, not the next drain check: a worker asking for its
            # next shard would otherwise idle up to _CANCEL_CHECK_S after each lease.
            answered = threading.Event()
            call.add_done_callback(lambda _call: answered.set())
            while not answered.wait(_CANCEL_CHECK_S):
                if cancel.is_set():
                    call.cancel()
                    return None
            return call.result()

        try:
            response = self._retrying(long_poll, "AcquireTask", cancel)
        except TimeoutError:
            return None
        if response is None or not response.HasField("task"):
            return None
        return response.task

    def _send_heartbeat(self, request: dispatch_pb2.HeartbeatRequest) -> bool:
        """Sends one heartbeat (not retried: the next one is); returns whether to stop.

        Raises:
            AttemptSuperseded: the control gave the task to another attempt.
            grpc.RpcError: the control is unreachable.
        """
        try:
            response = self._dispatch.Heartbeat(
                request, timeout=RPC_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.RpcError as err:
            if err.code() in _SUPERSEDED:
                raise AttemptSuperseded(err.details()) from err
            raise
        return bool(response.stop_requested)

    def _send_completion(self, request: dispatch_pb2.CompleteTaskRequest) -> None:
        """Reports how the attempt ended, retrying while the control is unreachable.

        Raises:
            AttemptSuperseded: the control gave the task to another attempt meanwhile.
        """
        try:
            self._retrying(
                lambda: self._dispatch.CompleteTask(
                    request, timeout=RPC_TIMEOUT_S, metadata=self._metadata
                ),
                "CompleteTask",
                None,
            )
        except grpc.RpcError as err:
            if err.code() in _SUPERSEDED:
                raise AttemptSuperseded(err.details()) from err
            raise

    def download_file(self, uri: str, dest: Path) -> None:
        """Writes the whole object `uri` to `dest`, its size and sha256 checked."""
        self._retrying(
            lambda: transfer.download_file(self._artifacts, uri, dest, metadata=self._metadata),
            f"download {uri}",
            None,
        )

    def upload_file(self, path: Path, uri: str) -> str:
        """Uploads `path` to `uri` (the object appears atomically on the control); its URI."""
        info = self._retrying(
            lambda: transfer.upload_file(self._artifacts, path, uri, metadata=self._metadata),
            f"upload {uri}",
            None,
        )
        return info.uri
