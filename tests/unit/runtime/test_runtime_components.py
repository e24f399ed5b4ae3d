"""The component protocol: StepLoop runs one step at a time; Components keeps the order."""

from __future__ import annotations

import threading

import pytest

from services.runtime.components import Component, Components, Drainable, StepLoop


class Recorder:
    """A component that writes down what was done to it."""

    def __init__(self, name: str, log: list[str], *, drainable: bool = False) -> None:
        self.name = name
        self.log = log
        if drainable:
            self.drain = lambda: log.append(f"drain {name}")

    def start(self) -> None:
        self.log.append(f"start {self.name}")

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")


def test_components_start_in_order_and_drain_and_stop_in_reverse() -> None:
    log: list[str] = []
    parts = [
        Recorder("a", log, drainable=True),
        Recorder("b", log),
        Recorder("c", log, drainable=True),
    ]
    group = Components(parts)
    group.start()
    group.drain()
    group.stop()
    assert log == [
        "start a",
        "start b",
        "start c",
        "drain c",
        "drain a",
        "stop c",
        "stop b",
        "stop a",
    ]
    assert isinstance(parts[0], Drainable) and not isinstance(parts[1], Drainable)


def test_a_failed_start_stops_the_started_ones_and_raises() -> None:
    log: list[str] = []

    class Broken(Recorder):
        def start(self) -> None:
            raise RuntimeError("no port")

    group = Components([Recorder("a", log), Broken("b", log), Recorder("c", log)])
    with pytest.raises(RuntimeError, match="no port"):
        group.start()
    assert log == ["start a", "stop a"]
    group.stop()  # nothing left to stop
    assert log == ["start a", "stop a"]


def test_step_loop_steps_at_once_on_wake_and_survives_a_failing_step() -> None:
    calls: list[int] = []
    stepped = threading.Condition()

    def step() -> None:
        with stepped:
            calls.append(len(calls))
            stepped.notify_all()
        if len(calls) == 2:
            raise RuntimeError("a bad pass")

    loop = StepLoop("test-loop", step, interval_s=3600.0)
    assert isinstance(loop, Component)
    loop.start()
    try:
        with stepped:
            assert stepped.wait_for(lambda: len(calls) == 1, timeout=5), "first step at once"
        loop.wake()
        with stepped:
            assert stepped.wait_for(lambda: len(calls) == 2, timeout=5), "a wake runs a step"
        loop.wake()
        with stepped:
            assert stepped.wait_for(lambda: len(calls) == 3, timeout=5), "the loop survived"
    finally:
        loop.stop(timeout_s=5)
    assert loop.is_stopping
    count = len(calls)
    loop.wake()
    assert len(calls) == count, "no step after stop"


def test_step_loop_runs_before_start_first() -> None:
    order: list[str] = []
    done = threading.Event()

    def step() -> None:
        order.append("step")
        done.set()

    loop = StepLoop("test-loop", step, 3600.0, before_start=lambda: order.append("resume"))
    loop.start()
    try:
        assert done.wait(5)
    finally:
        loop.stop()
    assert order[:2] == ["resume", "step"]


def test_the_lifecycle_runs_a_services_components_around_its_hooks() -> None:
    from services.runtime import lifecycle
    from services.runtime.settings import ServiceSettings

    log: list[str] = []
    service = lifecycle.Service(
        name="parts",
        servicers=[],
        on_start=lambda: log.append("on_start"),
        on_drain=lambda: log.append("on_drain"),
        on_stop=lambda: log.append("on_stop"),
        components=[Recorder("store", log), Recorder("loop", log, drainable=True)],
    )
    running = lifecycle.start(service, ServiceSettings(host="127.0.0.1", shutdown_grace_s=0.1))
    assert log == ["on_start", "start store", "start loop"]
    running.stop()
    assert log[3:] == ["drain loop", "on_drain", "stop loop", "stop store", "on_stop"]
