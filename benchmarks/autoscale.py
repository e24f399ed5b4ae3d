"""Autoscaling step response: a load step from 1 to 16 clients and back, on an embedded control.

One invocation (`python benchmarks/autoscale.py`) starts `python -m services.control --local`
on port 0 (or uses `--address`), deploys an endpoint with min 1 and max 2 replicas (target 4
requests in flight per replica, the scale-in window of `--scale-in-window-s`), then drives it
with a closed-loop load generator: `--clients` threads, each calling `Predictor.predict` back
to back through the real client (one `Session`, so one `EndpointRouter`: per-request
round_robin over the serving replicas, refreshed in the background and on UNAVAILABLE,
UNAVAILABLE retried). The load is 1 client for `--low-s`, 16 for `--high-s`, then 1 again
until the endpoint scaled in and `--tail-s` more.

The model answers each row with the number of the replica that served it (read from the
replica's own `--replica-id r-N`), after sleeping `--delay-ms`: the sleep stands for a model
that takes time without holding a core, so 16 clients really are ~16 requests in flight on
two cores, and the answer tells which replica served each request (Predictor returns only the
payload, not PredictResponse.replica_id).

Figures (times from the step, on this machine's clock; the control's event timestamps and the
load generator's clock are the same clock):
  decision_latency_s   step up -> the endpoint's "autoscaling out" event
  serving_s            step up -> DescribeEndpoint lists the new replica Serving
  first_answer_s       step up -> first answer from a replica that did not serve before
  scale_in_after_s     step down -> the "autoscaling in" event (the window is the floor)
  failed_requests      requests that raised, over the whole run
  reversals            changes of direction among the endpoint's scaling decisions
The last line is one JSON object with those figures and the run's settings.

`LoadGenerator`, `EventRecorder` and `model_archive` are also used by
`tests/integration/autoscaling`, which asserts on the same step load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skmaker import Session, SKLearnPredictor

try:
    from harness import embedded_control
except ModuleNotFoundError:  # imported by the tests as benchmarks.<name>
    from benchmarks.harness import embedded_control

ROW = np.array([[5.1, 3.5, 1.4, 0.2]])

# Answers code + N, where N is the serving replica's number (`--replica-id r-N` on its own
# command line); a second model with another code tells models apart.
MODEL_SCRIPT = """
import json
import os
import sys
import time

import numpy as np


def _replica_number():
    args = sys.argv
    for flag, value in zip(args, args[1:]):
        if flag == "--replica-id":
            return int(value.rsplit("-", 1)[-1])
    return 0


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as handle:
        model = json.load(handle)
    model["replica"] = _replica_number()
    return model


def predict_fn(data, model):
    time.sleep(model["delay_s"])
    return np.full(len(data), model["code"] + model["replica"], dtype=np.int64)
"""


def model_archive(path: Path, code: int, delay_s: float) -> Path:
    """model.tar.gz whose model answers `code` + the serving replica's number per row."""
    members = {
        "model.json": json.dumps({"code": code, "delay_s": delay_s}).encode(),
        "code/inference.py": MODEL_SCRIPT.encode(),
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def create_model(session: Session, folder: Path, name: str, code: int, delay_s: float) -> None:
    """Uploads a `model_archive` and creates the model `name` from it."""
    archive = model_archive(folder / f"{name}.tar.gz", code, delay_s)
    uri = session.upload_data(archive, key_prefix=f"models/{name}")
    session.create_model(name, model_data_uri=uri, entry_point="inference.py")


# --- the load generator -------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One predict call: when it was sent and answered (time.time), the answer or the error."""

    sent: float
    done: float
    answer: int | None
    error: str = ""


class LoadGenerator:
    """`max_clients` threads calling predict back to back; `set_clients(n)` makes n of them work.

    Every call is recorded (`calls`); a call that raises is a failed request. The threads share
    one Session, hence one EndpointRouter, as the threads of one client process would.
    """

    def __init__(self, session: Session, endpoint_name: str, max_clients: int) -> None:
        self.calls: list[Call] = []
        self._session = session
        self._endpoint_name = endpoint_name
        self._active = 0
        self._changed = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._client, args=(index,), name=f"load-{index}", daemon=True)
            for index in range(max_clients)
        ]
        for thread in self._threads:
            thread.start()

    def set_clients(self, count: int) -> float:
        """Makes `count` clients work from now on; returns the time of the step."""
        with self._changed:
            self._active = count
            self._changed.notify_all()
        return time.time()

    def stop(self) -> None:
        """Stops every client after its call under way."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=90.0)

    @property
    def failures(self) -> list[Call]:
        """The calls that raised."""
        return [call for call in list(self.calls) if call.error]

    def answers_since(self, since: float) -> list[Call]:
        """Answered calls sent at or after `since`."""
        return [c for c in list(self.calls) if c.sent >= since and c.answer is not None]

    def _client(self, index: int) -> None:
        predictor = SKLearnPredictor(self._endpoint_name, session=self._session)
        while True:
            with self._changed:
                while not self._stopped and index >= self._active:
                    self._changed.wait()
                if self._stopped:
                    return
            sent = time.time()
            try:
                answer = int(np.asarray(predictor.predict(ROW)).ravel()[0])
            except Exception as err:  # every failure counts, whatever its type
                self.calls.append(Call(sent, time.time(), None, f"{type(err).__name__}: {err}"))
            else:
                self.calls.append(Call(sent, time.time(), answer))


# --- what the control says ----------------------------------------------------------------------


@dataclass
class EventRecorder:
    """Polls DescribeEndpoint: keeps every event (describe shows only the recent ones) and
    when each replica was first seen Serving."""

    session: Session
    endpoint_name: str
    interval_s: float = 0.25
    events: dict[tuple[float, str], None] = field(default_factory=dict)
    first_serving: dict[str, float] = field(default_factory=dict)
    status: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> EventRecorder:
        """Starts polling in a thread."""
        self._thread = threading.Thread(target=self._run, name="event-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops polling (after one last describe)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)

    def poll(self) -> None:
        """One describe."""
        description = self.session.describe_endpoint(self.endpoint_name)
        now = time.time()
        self.status = description["EndpointStatus"]
        for event in description.get("Events", []):
            self.events[(event["Timestamp"].timestamp(), event["Message"])] = None
        for replica in description.get("Replicas", []):
            if replica.get("State") == "Serving":
                self.first_serving.setdefault(replica["Id"], now)

    def decisions(self) -> list[tuple[float, str]]:
        """(time, message) of the scaling decisions, oldest first."""
        return sorted(
            (at, message)
            for at, message in list(self.events)  # a copy: the poller adds to it
            if message.startswith(("autoscaling out", "autoscaling in"))
        )

    def first_event(self, text: str, since: float) -> float | None:
        """Time of the first event containing `text` at or after `since`."""
        times = [at for at, message in list(self.events) if text in message and at >= since]
        return min(times) if times else None

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a slow describe only delays the next one
                self.poll()
            self._stop.wait(self.interval_s)
        with contextlib.suppress(Exception):
            self.poll()


def reversals(decisions: list[tuple[float, str]]) -> int:
    """Changes of direction (out <-> in) along a sequence of scaling decision events."""
    directions = [message.split()[1] for _at, message in decisions]
    return sum(1 for before, after in itertools.pairwise(directions) if before != after)


def wait_until(condition: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> float:
    """Polls `condition()` until true; returns time.time() then. Raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)
    return time.time()


# --- the benchmark ------------------------------------------------------------------------------


def _latency_ms(calls: list[Call], start: float, end: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of the answered calls sent in [start, end)."""
    window = sorted(c.done - c.sent for c in calls if start <= c.sent < end and not c.error)
    if not window:
        return 0.0, 0.0, 0.0
    p99 = window[min(len(window) - 1, int(len(window) * 0.99))]
    return len(window) / max(end - start, 1e-9), statistics.median(window) * 1e3, p99 * 1e3


def run_step(session: Session, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Deploys the endpoint, runs the step load, deletes the endpoint; returns the figures."""
    name = "autoscale-bench"
    create_model(session, folder, name, code=0, delay_s=args.delay_ms / 1000.0)
    session.create_endpoint(
        name,
        model_name=name,
        initial_replicas=1,
        autoscaling={
            "min_replicas": 1,
            "max_replicas": 2,
            "target_value": 4.0,
            "scale_in_window_s": args.scale_in_window_s,
        },
    )
    recorder = EventRecorder(session, name).start()
    load = LoadGenerator(session, name, args.clients)
    try:
        t_low = load.set_clients(1)
        time.sleep(args.low_s)
        before = {c.answer for c in load.answers_since(0.0)}
        t_up = load.set_clients(args.clients)
        time.sleep(args.high_s)
        t_down = load.set_clients(1)
        wait_until(
            lambda: recorder.first_event("autoscaling in", t_down) is not None,
            args.scale_in_window_s + 30.0,
            "scale-in",
        )
        time.sleep(args.tail_s)
        t_end = load.set_clients(0)
    finally:
        load.stop()
        recorder.stop()
    session.delete_endpoint(name, wait=True)
    session.delete_model(name)

    decided = recorder.first_event("autoscaling out", t_up)
    scaled_in = recorder.first_event("autoscaling in", t_down)
    new_answers = [c.done for c in load.answers_since(t_up) if c.answer not in before]
    new_serving = [at for at in recorder.first_serving.values() if at >= t_up]
    phases = {
        "low": _latency_ms(load.calls, t_low, t_up),
        "high": _latency_ms(load.calls, t_up, t_down),
        "after": _latency_ms(load.calls, t_down, t_end),
    }
    return {
        "decision_latency_s": round(decided - t_up, 3) if decided else None,
        "serving_s": round(min(new_serving) - t_up, 3) if new_serving else None,
        "first_answer_s": round(min(new_answers) - t_up, 3) if new_answers else None,
        "scale_in_after_s": round(scaled_in - t_down, 3) if scaled_in else None,
        "failed_requests": len(load.failures),
        "reversals": reversals(recorder.decisions()),
        "requests": len(load.calls),
        "decisions": [f"{at - t_up:+.2f}s {message}" for at, message in recorder.decisions()],
        "failures": [call.error for call in load.failures[:5]],
        "phases": {
            phase: {"rps": round(rps, 1), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1)}
            for phase, (rps, p50, p99) in phases.items()
        },
        "settings": {
            "clients": args.clients,
            "delay_ms": args.delay_ms,
            "low_s": args.low_s,
            "high_s": args.high_s,
            "scale_in_window_s": args.scale_in_window_s,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints the figures and, last, one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--address", default="", help="use this control instead of starting one")
    parser.add_argument("--clients", type=int, default=16, help="clients during the step")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the model's time per call")
    parser.add_argument("--low-s", type=float, default=5.0, help="1 client before the step")
    parser.add_argument("--high-s", type=float, default=20.0, help="length of the step")
    parser.add_argument("--scale-in-window-s", type=float, default=15.0)
    parser.add_argument("--tail-s", type=float, default=3.0, help="1 client after scale-in")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skmaker-autoscale-") as scratch:
        folder = Path(scratch)
        with contextlib.ExitStack() as stack:
            address = args.address or stack.enter_context(
                embedded_control(folder, "--local-trainers", "0")
            )
            with Session(address) as session:
                figures = run_step(session, folder, args)
    print(f"step 1 -> {args.clients} clients, endpoint min 1 max 2, target 4 in flight")
    for key in ("decision_latency_s", "serving_s", "first_answer_s", "scale_in_after_s"):
        print(f"  {key:<20} {figures[key]}")
    print(f"  failed_requests      {figures['failed_requests']} of {figures['requests']}")
    print(f"  reversals            {figures['reversals']}")
    for phase, values in figures["phases"].items():
        print(f"  {phase:<6} {values['rps']:>7} req/s  p50 {values['p50_ms']} ms  "
              f"p99 {values['p99_ms']} ms")  # fmt: skip
    for line in figures["decisions"]:
        print(f"  {line}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
