"""The iris story against skmaker deployed as a stack on a two-node Docker Swarm.

`make test-swarm` runs it from the test's own network (where the nodes' host-mode ports are
reached) once `docker stack deploy` converged. Train iris and batch-transform it with `s3://`
URIs, deploy the model with 2 replicas and check through the manager's Engine API that the
swarm placed them on different nodes, check that Prometheus scrapes both, predict through the
gateway (equal to the batch transform's labels), then stop the worker node's engine (SIGTERM to
its dockerd) while a bounded load of Predict calls goes through the gateway and a training job
runs: the endpoint must be back at 2 serving replicas, all on the surviving node, and the
training job must complete. Prints one JSON line: per-node placement before and after, the
failover time and the failed requests.
Exit 0 when every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import grpc
import numpy as np
import pandas as pd
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_iris

from skmaker import Session, SKLearn, SKLearnModel

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO_ROOT / "examples" / "iris"
ENDPOINT = "iris-swarm"
# The swarm backend labels every replica service so (services/control/backends/swarm.py).
REPLICA_LABELS = ["skmaker.managed=true", f"skmaker.endpoint={ENDPOINT}"]
# The node label run.sh gives each node, naming it in the report.
NODE_NAME_LABEL = "skmaker-test.node"
LOAD_THREADS = 2


@dataclass
class Context:
    """What the steps share: where the services are and what earlier steps produced."""

    control: str
    docker_url: str
    stop_pidfile: Path
    deadline_s: float
    prometheus: str
    s3_bucket: str = ""
    session: Session | None = None
    results: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def _poll(what: str, deadline_s: float, probe: Callable[[], str | None]) -> None:
    """Calls `probe` until it returns None (done); raises with its last complaint when late."""
    end = time.monotonic() + deadline_s
    complaint: str | None = "not tried"
    while time.monotonic() < end:
        complaint = probe()
        if complaint is None:
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} within {deadline_s:.0f}s: {complaint}")


def _fit(estimator: SKLearn, inputs: dict[str, str], deadline_s: float) -> str:
    """Trains to the end in a thread (so a job nobody takes fails at the deadline)."""
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            estimator.fit(inputs, logs=False)
        except BaseException as err:
            failure.append(err)

    fitting = threading.Thread(target=fit, name="fit", daemon=True)
    fitting.start()
    fitting.join(deadline_s)
    job = estimator.latest_training_job
    if fitting.is_alive():
        state = job.describe() if job is not None else "not created"
        raise AssertionError(f"training did not end within {deadline_s:.0f}s: {state}")
    if failure:
        raise failure[0]
    assert job is not None
    status = str(job.describe()["TrainingJobStatus"])
    assert status == "Completed", f"training job {job.name} ended {status}"
    return str(job.name)


def control_serving(ctx: Context) -> None:
    """The control's published port answers grpc.health.v1 with SERVING."""

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
    ctx.session = Session(ctx.control)  # the gateway's address from $SKMAKER_GATEWAY_ADDRESS
    assert ctx.session.gateway_address, "SKMAKER_GATEWAY_ADDRESS is not set"


def _iris_uri(ctx: Context, key: str) -> str:
    assert ctx.session is not None
    return f"s3://{ctx.session.default_bucket()}/{key}"


def train_iris(ctx: Context) -> None:
    """Uploads iris under an s3:// URI and trains the example script on it to Completed."""
    assert ctx.session is not None
    with tempfile.TemporaryDirectory(prefix="skmaker-swarm-iris-") as scratch:
        folder = Path(scratch) / "data"
        folder.mkdir()
        iris = load_iris(as_frame=True)
        pd.concat([iris.target, iris.data], axis=1).to_csv(
            folder / "iris.csv", header=False, index=False
        )
        train_uri = _iris_uri(ctx, "scikit-iris/data")
        ctx.session.upload_data(
            str(folder), bucket=ctx.session.default_bucket(), key_prefix="scikit-iris/data"
        )
    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"max_leaf_nodes": 30},
        output_path=_iris_uri(ctx, "scikit-iris/models"),
        session=ctx.session,
    )
    name = _fit(estimator, {"train": train_uri}, ctx.deadline_s)
    ctx.results["estimator"] = estimator
    ctx.results["train_uri"] = train_uri
    # Read now: the estimator's session is closed when a later step restarts the control.
    ctx.results["model_data"] = estimator.model_data
    print(f"  {name}: Completed, model {estimator.model_data}")


def batch_transform_iris(ctx: Context) -> None:
    """Batch-scores iris from and to s3:// URIs; the output has one label per row."""
    assert ctx.session is not None
    estimator = ctx.results["estimator"]
    features = load_iris().data
    with tempfile.TemporaryDirectory(prefix="skmaker-swarm-batch-") as scratch:
        folder = Path(scratch)
        (folder / "input").mkdir()
        (folder / "input" / "iris.csv").write_text(
            "".join(",".join(f"{value:.1f}" for value in row) + "\n" for row in features)
        )
        input_uri = _iris_uri(ctx, "scikit-iris/batch-input")
        ctx.session.upload_data(
            str(folder / "input"),
            bucket=ctx.session.default_bucket(),
            key_prefix="scikit-iris/batch-input",
        )
        output_uri = _iris_uri(ctx, "scikit-iris/batch-output")
        transformer = estimator.transformer(
            instance_count=2, assemble_with="Line", accept="text/csv", output_path=output_uri
        )
        transformer.transform(input_uri, content_type="text/csv", split_type="Line")
        ctx.session.download_data(str(folder / "output"), output_uri)
        scored = (folder / "output" / "iris.csv.out").read_text().split()
    ctx.results["batch_labels"] = scored
    assert len(scored) == len(features), f"{len(scored)} labels for {len(features)} rows"
    print(f"  {len(features)} rows scored from {input_uri} to {output_uri}")


def _docker(ctx: Context) -> docker.DockerClient:
    client = ctx.results.get("docker")
    if client is None:
        client = docker.DockerClient(base_url=ctx.docker_url, timeout=10)
        ctx.results["docker"] = client
    return client


def _node_names(ctx: Context) -> dict[str, str]:
    return {
        str(node.id): str(node.attrs["Spec"].get("Labels", {}).get(NODE_NAME_LABEL, node.id))
        for node in _docker(ctx).nodes.list()
    }


def _placement(ctx: Context) -> dict[str, str]:
    """Replica id -> node name of its running task, for the endpoint's replica services."""
    names = _node_names(ctx)
    placed: dict[str, str] = {}
    for service in _docker(ctx).services.list(filters={"label": REPLICA_LABELS}):
        replica = service.attrs["Spec"]["Labels"].get("skmaker.replica", service.name)
        for task in service.tasks():
            if task["Status"]["State"] == "running" and task["DesiredState"] == "running":
                placed[replica] = names.get(task["NodeID"], task["NodeID"])
    return placed


def _describe(ctx: Context) -> dict[str, Any]:
    assert ctx.session is not None
    return ctx.session.describe_endpoint(ENDPOINT)


def _serving(description: dict[str, Any]) -> list[str]:
    return sorted(r["Id"] for r in description["Replicas"] if r["State"] == "Serving")


def deploy_two_replicas(ctx: Context) -> None:
    """Deploys with 2 replicas: both serve, from tasks on different nodes."""
    estimator = ctx.results["estimator"]
    predictor = estimator.deploy(initial_instance_count=2, endpoint_name=ENDPOINT, wait=False)

    def two_placed() -> str | None:
        description = _describe(ctx)
        if description["EndpointStatus"] == "Failed":
            raise AssertionError(f"endpoint failed: {description.get('FailureReason')}")
        serving, placed = _serving(description), _placement(ctx)
        if len(serving) == 2 and sorted(placed) == serving:
            return None
        return f"serving {serving}, tasks {placed}, events {description['Events'][-3:]}"

    _poll("2 replicas serving", ctx.deadline_s, two_placed)
    placed = _placement(ctx)
    assert len(set(placed.values())) == 2, f"both replicas on one node: {placed}"
    ctx.report["placement_before"] = placed
    ctx.results["predictor"] = predictor
    print(f"  replicas placed: {placed}")


def _inference_targets_up(prometheus: str) -> list[str]:
    url = f"{prometheus}/api/v1/targets?" + urllib.parse.urlencode({"state": "active"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5.0) as answer:
        targets = json.load(answer)["data"]["activeTargets"]
    return sorted(
        str(t["labels"]["instance"])
        for t in targets
        if t["labels"].get("job") == "inference" and t["health"] == "up"
    )


def prometheus_scrapes_both_replicas(ctx: Context) -> None:
    """Prometheus (on the manager) scrapes both replicas' /metrics, one of them on the other
    node, from the control's file_sd list of replica addresses on the overlay."""
    wanted = sorted(
        f"skmaker-{ENDPOINT}-{replica}:8000" for replica in ctx.report["placement_before"]
    )

    def probe() -> str | None:
        try:
            up = _inference_targets_up(ctx.prometheus)
        except OSError as err:
            return f"Prometheus API: {err}"
        return None if up == wanted else f"inference targets up: {up}, wanted {wanted}"

    _poll("Prometheus scraping both replicas", ctx.deadline_s, probe)
    print(f"  Prometheus scrapes {', '.join(wanted)}")


def predict_through_gateway(ctx: Context) -> None:
    """Predictions through the gateway equal the batch transform's labels for the same rows."""
    predicted = np.asarray(ctx.results["predictor"].predict(load_iris().data))
    expected = np.asarray([float(label) for label in ctx.results["batch_labels"]])
    assert np.array_equal(predicted.astype(float), expected), f"gateway answered {predicted}"
    print(f"  {len(predicted)} predictions through the gateway equal the batch output")


class _Load:
    """Sequential Predict calls through the gateway from a few threads, counted."""

    def __init__(self, predictor: Any, row: Any) -> None:
        self._predictor, self._row = predictor, row
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.ok = self.failed = 0
        self.errors: dict[str, int] = {}
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            for i in range(LOAD_THREADS)
        ]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._predictor.predict(self._row)
                outcome = None
            except Exception as err:
                outcome = type(err).__name__ + ": " + str(err).split("\n")[0][:80]
            with self._lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors[outcome] = self.errors.get(outcome, 0) + 1
            time.sleep(0.02)  # bounded: about 50 calls a second per thread at most

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def stop_a_node_under_load(ctx: Context) -> None:
    """Stops the worker node's engine while Predict load and a training job run: the endpoint
    is back at 2 serving replicas, all on the other node, and the training job completes."""
    assert ctx.session is not None
    before = ctx.report["placement_before"]
    stopped_node = ctx.stop_pidfile.parent.name  # run.sh keeps each node's files in a folder
    survivor = next(node for node in before.values() if node != stopped_node)
    load = _Load(ctx.results["predictor"], load_iris().data[:1])
    load.start()
    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"max_leaf_nodes": 10},
        session=ctx.session,
    )
    job_result: dict[str, Any] = {}

    def train() -> None:
        try:
            job_result["name"] = _fit(
                estimator, {"train": ctx.results["train_uri"]}, ctx.deadline_s * 2
            )
        except BaseException as err:
            job_result["error"] = err

    training = threading.Thread(target=train, name="train-during-failover", daemon=True)
    training.start()
    time.sleep(1.0)  # the load reaches both replicas before the node goes
    pid = int(ctx.stop_pidfile.read_text().strip())
    stopped_at = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    print(f"  stopped the engine of {stopped_node} (dockerd pid {pid}) under load")

    def replaced() -> str | None:
        description = _describe(ctx)
        serving, placed = _serving(description), _placement(ctx)
        if len(serving) == 2 and sorted(placed) == serving and set(placed.values()) == {survivor}:
            return None
        return f"serving {serving}, tasks {placed}, events {description['Events'][-3:]}"

    try:
        _poll(f"2 replicas serving on {survivor}", ctx.deadline_s, replaced)
        failover_s = time.monotonic() - stopped_at
        time.sleep(1.0)  # calls after the failover count too
    finally:
        load.stop()
    training.join(ctx.deadline_s * 2)
    ctx.report.update(
        stopped_node=stopped_node,
        placement_after=_placement(ctx),
        failover_s=round(failover_s, 2),
        requests={"ok": load.ok, "failed": load.failed, "errors": load.errors},
        training_job_during_failover=job_result.get("name", repr(job_result.get("error"))),
        events=[str(event["Message"]) for event in _describe(ctx)["Events"][-8:]],
    )
    if "error" in job_result:
        raise AssertionError(f"the training job during the failover failed: {job_result}")
    assert not training.is_alive(), "the training job during the failover did not end"
    assert load.ok > 0, "no Predict call succeeded during the failover"
    print(
        f"  replaced on {survivor} in {failover_s:.1f}s; {load.ok} calls ok, {load.failed} "
        f"failed; training job {job_result['name']} completed"
    )


def control_restart_replaces_leftovers(ctx: Context) -> None:
    """The control's container killed (SIGKILL): the swarm starts a new control task, which
    removes the replica services the killed one left and serves the endpoint with new ones."""
    old = set(_serving(_describe(ctx)))
    client = _docker(ctx)
    (control,) = client.containers.list(
        filters={"label": "com.docker.swarm.service.name=skmaker_control"}
    )
    control.kill("SIGKILL")
    assert ctx.session is not None
    ctx.session.close()
    control_serving(ctx)

    def replaced() -> str | None:
        try:
            serving = set(_serving(_describe(ctx)))
        except Exception as err:  # the endpoint is restored just after the control started
            return f"DescribeEndpoint: {err}"
        placed = _placement(ctx)
        services = [s.name for s in client.services.list(filters={"label": REPLICA_LABELS})]
        if len(serving) == 2 and not serving & old and sorted(placed) == sorted(serving):
            return None if len(services) == 2 else f"services {services}"
        return f"serving {sorted(serving)}, tasks {placed}, services {services}"

    _poll("new replicas replacing the leftovers", ctx.deadline_s, replaced)
    ctx.report["placement_after_control_restart"] = _placement(ctx)
    print(f"  replicas {sorted(old)} removed; now {_placement(ctx)}")


def _prometheus_query(prometheus: str, query: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5.0) as answer:
        return list(json.load(answer)["data"]["result"])


def artifacts_in_the_bucket(ctx: Context) -> None:
    """With the S3 store: the data, code, models and transform output are objects in the
    bucket, the control's artifacts folder is empty, and no artifact byte went through the
    control (its skmaker_control_artifact_rpc_bytes stayed 0, as Prometheus scraped it)."""
    if not ctx.s3_bucket:
        print("  skipped: the stack keeps artifacts on the control's volume (no --s3-bucket)")
        return
    import boto3

    keys = [
        str(item["Key"])
        for page in boto3.client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=ctx.s3_bucket)
        for item in page.get("Contents", [])
    ]
    wanted = {
        "training data": "scikit-iris/data/iris.csv",
        "batch input": "scikit-iris/batch-input/iris.csv",
        "batch output": "scikit-iris/batch-output/iris.csv.out",
    }
    missing = [what for what, key in wanted.items() if key not in keys]
    assert not missing, f"not in s3://{ctx.s3_bucket}: {missing}; keys {keys}"
    models = [key for key in keys if key.endswith("/model.tar.gz")]
    code = [key for key in keys if key.endswith("/sourcedir.tar.gz")]
    assert models and code, f"no model or code archive in s3://{ctx.s3_bucket}: {keys}"
    (control,) = _docker(ctx).containers.list(
        filters={"label": "com.docker.swarm.service.name=skmaker_control"}
    )
    found = control.exec_run(
        ["find", "/var/lib/skmaker/control/artifacts", "-type", "f"],
        demux=True,
    )
    local = (found.output[0] or b"").decode(errors="replace").split()
    assert not local, f"files in the control's artifacts folder: {local}"
    through_control = _prometheus_query(
        ctx.prometheus, "sum(max_over_time(skmaker_control_artifact_rpc_bytes_total[1h]))"
    )
    assert through_control, "Prometheus has no skmaker_control_artifact_rpc_bytes_total"
    carried = float(through_control[0]["value"][1])
    assert carried == 0, f"{carried:.0f} artifact bytes went through the control"
    ctx.report["s3_objects"] = len(keys)
    print(
        f"  {len(keys)} objects in s3://{ctx.s3_bucket} ({len(models)} models, {len(code)} code "
        "archives); none in the control's folder; 0 bytes through the control"
    )


def delete_endpoint(ctx: Context) -> None:
    """Deleting the endpoint removes its replica services."""
    assert ctx.session is not None
    ctx.session.delete_endpoint(ENDPOINT)

    def gone() -> str | None:
        left = _docker(ctx).services.list(filters={"label": REPLICA_LABELS})
        return f"services left: {[s.name for s in left]}" if left else None

    _poll("the endpoint's services removed", ctx.deadline_s, gone)


OLD_ENDPOINT = "iris-swarm-oldest"
# Reports the scikit-learn its replica runs (the model file is not read: a model pickled by
# one scikit-learn may not load in another, and the version is what this step checks).
VERSION_HANDLER = """
import sklearn


def model_fn(model_dir):
    return model_dir


def predict_fn(data, model):
    return [sklearn.__version__] * len(data)
"""


def endpoint_on_the_oldest_runtime(ctx: Context) -> None:
    """A model on framework_version 1.2-1: its replica task (on whichever node) gets runtime
    sklearn-1.2 in its node's runtimes volume, built there on first use from the image's
    wheelhouse, and answers from scikit-learn 1.2; or the endpoint fails saying why."""
    assert ctx.session is not None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="skmaker-swarm-oldest-") as scratch:
        (Path(scratch) / "version_handler.py").write_text(VERSION_HANDLER)
        model = SKLearnModel(
            ctx.results["model_data"],
            entry_point="version_handler.py",
            source_dir=scratch,
            framework_version="1.2-1",
            session=ctx.session,
        )
        model.deploy(initial_instance_count=1, endpoint_name=OLD_ENDPOINT, wait=False)

    def in_service() -> str | None:
        assert ctx.session is not None
        description = ctx.session.describe_endpoint(OLD_ENDPOINT)
        events = [str(event["Message"]) for event in description["Events"][-4:]]
        if description["EndpointStatus"] == "Failed":
            raise AssertionError(f"endpoint failed: {description.get('FailureReason')}; {events}")
        return None if description["EndpointStatus"] == "InService" else f"events {events}"

    # The first replica on a node builds the runtime (a few minutes at most, within the
    # replica start timeout); the endpoint is InService or Failed by then, never stuck.
    _poll(f"{OLD_ENDPOINT} InService", max(ctx.deadline_s, 300.0), in_service)
    answer, _ = ctx.session.invoke_endpoint(OLD_ENDPOINT, "5.1,3.5,1.4,0.2\n", "text/csv")
    (version,) = json.loads(answer)
    assert version.startswith("1.2."), f"served by scikit-learn {version}"
    ctx.session.delete_endpoint(OLD_ENDPOINT)
    ctx.report["oldest_runtime_endpoint_s"] = round(time.monotonic() - started, 1)
    print(f"  {OLD_ENDPOINT} served by scikit-learn {version} ({time.monotonic() - started:.0f}s)")


STEPS = [
    control_serving,
    train_iris,
    batch_transform_iris,
    deploy_two_replicas,
    prometheus_scrapes_both_replicas,
    predict_through_gateway,
    stop_a_node_under_load,
    control_restart_replaces_leftovers,
    artifacts_in_the_bucket,
    delete_endpoint,
    endpoint_on_the_oldest_runtime,
]


def main(argv: list[str] | None = None) -> int:
    """Runs every step in order; prints the report as one JSON line; 0 when all passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--control", required=True, help="the control's host:port")
    parser.add_argument("--docker-url", required=True, help="a manager's Engine API")
    parser.add_argument(
        "--stop-pidfile", required=True, type=Path, help="pid file of the dockerd to stop"
    )
    parser.add_argument(
        "--prometheus", help="Prometheus' URL; default http://<the control's host>:9090"
    )
    parser.add_argument(
        "--s3-bucket", default="", help="the S3 store's bucket (boto3 reads the AWS_* variables)"
    )
    parser.add_argument("--deadline-s", type=float, default=120.0, help="per wait")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    prometheus = args.prometheus or f"http://{args.control.rsplit(':', 1)[0]}:9090"
    ctx = Context(
        args.control,
        args.docker_url,
        args.stop_pidfile,
        args.deadline_s,
        prometheus,
        args.s3_bucket,
    )
    status = 0
    for step in STEPS:
        started = time.monotonic()
        print(f"- {step.__name__}: {(step.__doc__ or '').splitlines()[0]}", flush=True)
        try:
            step(ctx)
        except Exception as err:
            print(f"  FAILED after {time.monotonic() - started:.1f}s: {err!r}", flush=True)
            status = 1
            break
        print(f"  ok ({time.monotonic() - started:.1f}s)", flush=True)
    ctx.report["passed"] = status == 0
    line = json.dumps(ctx.report, sort_keys=True)
    print(line)
    if args.report:
        args.report.write_text(line + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
