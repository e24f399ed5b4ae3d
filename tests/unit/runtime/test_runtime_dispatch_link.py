"""DispatchLink's long poll: a worker has its next task as soon as the control answers, and a
drain ends the poll."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from services.runtime.dispatch_link import DispatchLink
from skmaker.v1 import dispatch_pb2, dispatch_pb2_grpc


class AnsweringDispatch(dispatch_pb2_grpc.DispatchServiceServicer):
    """Leases a task at once, or (with `hold`) keeps the poll open until released."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.release = threading.Event()
        self.polls = 0

    def AcquireTask(
        self, request: dispatch_pb2.AcquireTaskRequest, context: grpc.ServicerContext
    ) -> dispatch_pb2.AcquireTaskResponse:
        self.polls += 1
        if self.hold.is_set():
            self.release.wait(10.0)
            return dispatch_pb2.AcquireTaskResponse()
        return dispatch_pb2.AcquireTaskResponse(task=dispatch_pb2.Task(task_id=f"t{self.polls}"))


@pytest.fixture
def control() -> Iterator[tuple[AnsweringDispatch, str]]:
    servicer = AnsweringDispatch()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    servicer.release.set()
    server.stop(0).wait()


def test_leases_arrive_without_waiting_for_the_drain_check(
    control: tuple[AnsweringDispatch, str],
) -> None:
    _, address = control
    link = DispatchLink(address, "w/1", dispatch_pb2.TASK_KIND_TRANSFORM)
    try:
        cancel = threading.Event()
        link.acquire(1.0, cancel)  # connects
        started = time.monotonic()
        tasks = [link.acquire(1.0, cancel) for _ in range(40)]
        elapsed = time.monotonic() - started
    finally:
        link.close()
    assert [task.task_id for task in tasks if task is not None] == [f"t{n}" for n in range(2, 42)]
    # Polled for the answer every 50 ms, 40 leases took 2 s; answered at once, a few ms each.
    assert elapsed < 1.0


def test_a_drain_ends_the_long_poll(control: tuple[AnsweringDispatch, str]) -> None:
    servicer, address = control
    servicer.hold.set()
    link = DispatchLink(address, "w/1", dispatch_pb2.TASK_KIND_TRANSFORM)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    try:
        started = time.monotonic()
        assert link.acquire(5.0, cancel) is None
        assert time.monotonic() - started < 4.0
    finally:
        link.close()
