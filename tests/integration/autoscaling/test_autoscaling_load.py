"""Autoscaling under a real step load: a real control (`--local`), real replicas, the real client.

The load generator and the test model are `benchmarks/autoscale.py`'s: threads calling
`Predictor.predict` back to back through one Session (so one EndpointRouter, round_robin per
request, UNAVAILABLE retried); the model sleeps 50 ms per call (requests really are in flight
on two cores) and answers code + the number of the replica that served it. Every call the
generator makes is counted; a call that raised is a failed request.

One step run checks issue 4's items 3 and 4: 1 -> 16 clients on an endpoint with min 1 and
max 2, the scale-out decision within 5 s of the step (the endpoint event's timestamp), the
new replica answering within 10 s, a kill -9 of a replica under the same load replaced, the
scale-in after the window once the load is back to 1 client, and no failed request at all.
A second test updates an endpoint to another model under load (item 5).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.autoscale import (
    Call,
    EventRecorder,
    LoadGenerator,
    create_model,
    reversals,
    wait_until,
)
from skmaker import Session
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

SCALE_IN_WINDOW_S = 6.0
DELAY_S = 0.05


def _replica_pid(data_dir: Path, endpoint: str, replica_id: str) -> int:
    """The pid of a live inference replica working under `data_dir`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        flags = dict(itertools.pairwise(args))
        if (
            "services.inference" in args
            and str(data_dir) in flags.get("--work-dir", "")
            and flags.get("--endpoint-name") == endpoint
            and flags.get("--replica-id") == replica_id
        ):
            return int(entry.name)
    raise AssertionError(f"no process for replica {replica_id} of endpoint {endpoint}")


def _timeline(failures: list[Call], recorder: EventRecorder, t0: float) -> str:
    """The failed calls among the endpoint's events, in seconds from `t0`, for a failure."""
    lines = [f"{at - t0:+8.2f}s {message}" for at, message in sorted(recorder.events)]
    lines += [
        f"{c.sent - t0:+8.2f}s FAILED CALL ({c.done - c.sent:.3f}s): {c.error}" for c in failures
    ]
    return "\n".join(sorted(lines))


def _serving(recorder: EventRecorder) -> list[str]:
    description = recorder.session.describe_endpoint(recorder.endpoint_name)
    return [r["Id"] for r in description["Replicas"] if r["State"] == "Serving"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("autoscaling-load") / "data"


@pytest.fixture(scope="module")
def control(data_dir: Path) -> Iterator[ServiceProcess]:
    process = run_service(
        "control",
        data_dir.parent,
        ["--local", "--local-trainers", "0", "--data-dir", str(data_dir)],
    )
    yield process
    process.stop(timeout_s=40.0)


@pytest.fixture
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address) as opened:
        yield opened


def test_a_load_step_scales_out_in_seconds_survives_kill_9_and_scales_in_after_the_window(
    control: ServiceProcess, session: Session, data_dir: Path, tmp_path: Path
) -> None:
    create_model(session, tmp_path, "step", code=0, delay_s=DELAY_S)
    session.create_endpoint(
        "step",
        model_name="step",
        initial_replicas=1,
        autoscaling={
            "min_replicas": 1,
            "max_replicas": 2,
            "target_value": 4.0,
            "scale_in_window_s": SCALE_IN_WINDOW_S,
        },
    )
    recorder = EventRecorder(session, "step").start()
    load = LoadGenerator(session, "step", 16)
    try:
        load.set_clients(1)
        wait_until(lambda: len(load.answers_since(0.0)) >= 10, 10.0, "answers from one client")
        before_step = {call.answer for call in load.answers_since(0.0)}
        assert before_step == {1}  # replica r-1

        # Item 3: 1 -> 16 clients.
        t_up = load.set_clients(16)
        t_new_answer = wait_until(
            lambda: any(c.answer not in before_step for c in load.answers_since(t_up)),
            10.0,
            "an answer from a new replica",
        )
        decided = recorder.first_event("autoscaling out", t_up)
        assert decided is not None, sorted(recorder.events)
        assert decided - t_up <= 5.0, f"scale-out decided {decided - t_up:.2f}s after the step"
        assert t_new_answer - t_up <= 10.0
        # The client re-reads the replica list every 2 s, every 0.5 s while one starts: the
        # new replica gets calls within a refresh of being listed Serving.
        [(new_replica, serving_at)] = [
            (rid, at) for rid, at in recorder.first_serving.items() if rid != "r-1"
        ]
        assert t_new_answer - serving_at <= 3.0, (new_replica, t_new_answer - serving_at)

        wait_until(lambda: len(_serving(recorder)) == 2, 10.0, "two serving replicas")
        # Item 4: kill -9 of the first replica under the same load.
        seen = {call.answer for call in load.answers_since(0.0)}
        t_kill = time.time()
        os.kill(_replica_pid(data_dir, "step", "r-1"), signal.SIGKILL)
        wait_until(
            lambda: any(c.answer not in seen for c in load.answers_since(t_kill)),
            20.0,
            "an answer from the replacement of the killed replica",
        )
        wait_until(lambda: recorder.status == "InService", 10.0, "InService after the kill")

        # Back to one client: scale-in waits for the window, then a replica drains.
        t_down = load.set_clients(1)
        t_in = wait_until(
            lambda: recorder.first_event("autoscaling in", t_down) is not None,
            SCALE_IN_WINDOW_S + 15.0,
            "the scale-in decision",
        )
        wait_until(lambda: len(_serving(recorder)) == 1, 10.0, "one serving replica")
        # Exit code 0: it finished its calls within its grace period (no SIGKILL).
        t_drained = wait_until(
            lambda: recorder.first_event("stopped (exit code 0)", t_in) is not None,
            20.0,
            "the drained replica's clean exit",
        )
        wait_until(lambda: len(load.answers_since(t_drained)) >= 10, 10.0, "answers after it")
    finally:
        load.set_clients(0)
        load.stop()
        recorder.stop()

    assert load.failures == [], _timeline(load.failures, recorder, t_up)
    scaled_in = recorder.first_event("autoscaling in", t_down)
    assert scaled_in is not None
    after_window = scaled_in - t_down
    # The last high recommendation is at most one 1 s pass before the step down.
    assert SCALE_IN_WINDOW_S - 1.5 <= after_window <= SCALE_IN_WINDOW_S + 5.0, after_window
    decisions = recorder.decisions()
    assert [message.split()[1] for _at, message in decisions] == ["out", "in"], decisions
    assert reversals(decisions) == 1
    assert "in flight per replica (scraped)" in decisions[0][1]
    session.delete_endpoint("step", wait=True)


def test_an_update_to_another_model_under_load_loses_nothing(
    control: ServiceProcess, session: Session, tmp_path: Path
) -> None:
    create_model(session, tmp_path, "answers-v1", code=0, delay_s=0.02)
    create_model(session, tmp_path, "answers-v2", code=1000, delay_s=0.02)
    # Target 8 in flight: four clients never move the replica count during the update.
    session.create_endpoint(
        "update",
        model_name="answers-v1",
        initial_replicas=1,
        autoscaling={"min_replicas": 1, "max_replicas": 2, "target_value": 8.0},
    )
    load = LoadGenerator(session, "update", 4)
    try:
        load.set_clients(4)
        wait_until(lambda: len(load.answers_since(0.0)) >= 20, 10.0, "answers from model v1")
        session.update_endpoint("update", model_name="answers-v2", wait=True)
        t_updated = time.time()
        wait_until(lambda: len(load.answers_since(t_updated)) >= 50, 10.0, "answers after it")
    finally:
        load.set_clients(0)
        load.stop()

    assert load.failures == [], load.failures[:5]
    answers = [call.answer for call in load.answers_since(0.0)]
    assert any(answer is not None and answer < 1000 for answer in answers)
    after = {call.answer for call in load.answers_since(t_updated)}
    assert after and all(answer is not None and answer >= 1000 for answer in after), after
    session.delete_endpoint("update", wait=True)
