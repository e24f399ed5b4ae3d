"""The iris story against skmaker running under docker compose, driven from the host.

`make test-compose` runs it once `docker compose up --wait` returned: the control's API and
Prometheus' HTTP API are published on 127.0.0.1: train iris with SageMaker's SKLearn API, batch
transform the features with the trained model (the output must equal the model's own predictions
on the host), and check that Prometheus scrapes every skmaker container. Each step is one
function in `STEPS`, run in order with its time printed; deploy and predict through the gateway
come next, once inference replicas run in containers. Exit 0 when every step passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pandas as pd
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_iris

from skmaker import Session, SKLearn

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO_ROOT / "examples" / "iris"


@dataclass
class Context:
    """What the steps share: where the services are and what earlier steps produced."""

    control: str
    prometheus: str
    trainers: int
    batch_workers: int
    deadline_s: float
    train_deadline_s: float
    session: Session | None = None
    results: dict[str, Any] = field(default_factory=dict)


def _poll(what: str, deadline_s: float, probe: Callable[[], str | None]) -> None:
    """Calls `probe` until it returns None (done); raises with its last complaint when late."""
    end = time.monotonic() + deadline_s
    complaint: str | None = "not tried"
    while time.monotonic() < end:
        complaint = probe()
        if complaint is None:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} within {deadline_s:.0f}s: {complaint}")


def control_serving(ctx: Context) -> None:
    """The published control port answers grpc.health.v1 with SERVING."""

    def probe() -> str | None:
        with grpc.insecure_channel(ctx.control) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2.0
                )
            except grpc.RpcError as err:
                return f"{err.code().name}: {err.details()}"
        return None if answer.status == health_pb2.HealthCheckResponse.SERVING else "not SERVING"

    _poll(f"control at {ctx.control} SERVING", ctx.deadline_s, probe)
    ctx.session = Session(ctx.control)


def train_iris(ctx: Context) -> None:
    """Uploads iris as SageMaker's example stores it and trains the example script to Completed."""
    assert ctx.session is not None
    with tempfile.TemporaryDirectory(prefix="skmaker-compose-iris-") as scratch:
        folder = Path(scratch) / "data"
        folder.mkdir()
        iris = load_iris(as_frame=True)
        pd.concat([iris.target, iris.data], axis=1).to_csv(
            folder / "iris.csv", header=False, index=False
        )
        train_uri = ctx.session.upload_data(str(folder), key_prefix="scikit-iris/data")
    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"max_leaf_nodes": 30},
        session=ctx.session,
    )
    # fit() follows the job to its end with the log streaming here; it runs in a thread so a
    # job that never ends (e.g. no trainer takes it) fails this step at the deadline instead.
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            estimator.fit({"train": train_uri})
        except BaseException as err:
            failure.append(err)

    fitting = threading.Thread(target=fit, name="fit", daemon=True)
    fitting.start()
    fitting.join(ctx.train_deadline_s)
    job = estimator.latest_training_job
    if fitting.is_alive():
        state = job.describe() if job is not None else "not created"
        raise AssertionError(f"training did not end within {ctx.train_deadline_s:.0f}s: {state}")
    if failure:
        raise failure[0]
    assert job is not None
    status = job.describe()["TrainingJobStatus"]
    assert status == "Completed", f"training job {job.name} ended {status}"
    ctx.results["estimator"] = estimator
    print(f"  {job.name}: {status}, model {estimator.model_data}")


def batch_transform_iris(ctx: Context) -> None:
    """Batch-scores the iris features; the output equals the trained model's own predictions."""
    assert ctx.session is not None
    estimator = ctx.results["estimator"]
    features = load_iris().data
    with tempfile.TemporaryDirectory(prefix="skmaker-compose-batch-") as scratch:
        folder = Path(scratch)
        (folder / "input").mkdir()
        (folder / "input" / "iris.csv").write_text(
            "".join(",".join(f"{value:.1f}" for value in row) + "\n" for row in features)
        )
        input_uri = ctx.session.upload_data(str(folder / "input"), key_prefix="scikit-iris/batch")
        transformer = estimator.transformer(
            instance_count=ctx.batch_workers, assemble_with="Line", accept="text/csv"
        )
        transformer.transform(input_uri, content_type="text/csv", split_type="Line")
        ctx.session.download_data(folder / "output", transformer.output_path)
        scored = (folder / "output" / "iris.csv.out").read_text()
        ctx.session.download_data(folder / "model", estimator.model_data)
        with tarfile.open(next((folder / "model").rglob("model.tar.gz"))) as archive:
            archive.extractall(folder / "model", filter="data")
        model = joblib.load(folder / "model" / "model.joblib")
    expected = "".join(f"{label}\n" for label in model.predict(np.asarray(features)))
    assert scored == expected, f"batch output differs from the model's predictions:\n{scored}"
    print(f"  {len(features)} rows scored by {transformer.output_path} as the model predicts")


def _active_targets(prometheus: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/targets?" + urllib.parse.urlencode({"state": "active"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5.0) as answer:
        body = json.load(answer)
    return list(body["data"]["activeTargets"])


def prometheus_scraped(ctx: Context) -> None:
    """Prometheus has scraped the control and every trainer and batch worker successfully."""
    wanted = {"control": 1, "trainer": ctx.trainers, "batch": ctx.batch_workers}

    def probe() -> str | None:
        try:
            targets = _active_targets(ctx.prometheus)
        except OSError as err:
            return f"Prometheus API: {err}"
        up = {job: 0 for job in wanted}
        for target in targets:
            job = target["labels"].get("job", "")
            if job in up and target["health"] == "up":
                up[job] += 1
        missing = {job: f"{up[job]}/{n} up" for job, n in wanted.items() if up[job] < n}
        return f"targets {missing}" if missing else None

    _poll("Prometheus scraping every skmaker container", ctx.deadline_s, probe)
    print(f"  scraped: control, {ctx.trainers} trainers, {ctx.batch_workers} batch workers")


STEPS: list[Callable[[Context], None]] = [
    control_serving,
    train_iris,
    batch_transform_iris,
    prometheus_scraped,
]


def main(argv: list[str] | None = None) -> int:
    """Runs every step in order; returns 0 when all passed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--control", required=True, help="published control address host:port")
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--trainers", type=int, default=2, help="trainer replicas to find")
    parser.add_argument("--batch-workers", type=int, default=2, help="batch replicas to find")
    parser.add_argument("--deadline-s", type=float, default=90.0, help="deadline of each wait")
    parser.add_argument("--train-deadline-s", type=float, default=300.0, help="training's deadline")
    args = parser.parse_args(argv)
    ctx = Context(
        args.control,
        args.prometheus.rstrip("/"),
        args.trainers,
        args.batch_workers,
        args.deadline_s,
        args.train_deadline_s,
    )
    try:
        for step in STEPS:
            started = time.monotonic()
            print(f"smoke: {step.__name__} ...", flush=True)
            step(ctx)
            print(f"smoke: {step.__name__} ok ({time.monotonic() - started:.1f}s)", flush=True)
    finally:
        if ctx.session is not None:
            with contextlib.suppress(Exception):
                ctx.session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
