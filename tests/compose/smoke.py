"""The iris story against skmaker running under docker compose, driven from the host.

`make test-compose` runs it once `docker compose up --wait` returned: the control's API, the
gateway and Prometheus' HTTP API are published on 127.0.0.1, and the gateway's address is in
$SKMAKER_GATEWAY_ADDRESS, so the client sends every Predict there. Train iris with SageMaker's
SKLearn API, batch transform the features with the trained model (the output must equal the
model's own predictions on the host), check that Prometheus scrapes every skmaker container,
deploy the model with an autoscaling policy and predict through the gateway (equal to the
model's own predictions again), then load the endpoint through the gateway until its policy
scales it to 2 replicas: 2 replica containers run (Docker API, by label), Prometheus scrapes
both, and the gateway spreads calls over both (each one's request counter grows). The gateway
runs its HAProxy data plane: its log says HAProxy started, an haproxy process runs in its
container, and calls through it reach the replicas without the Python forwarder. Last, the
control is killed (SIGKILL) and started again: the new control stops and removes the replica
containers its predecessor left and serves the endpoint with new ones. Last, iris is trained with
framework_version="1.2-1": its runtime is built on first use into the shared volume and the
model's replica container runs on it. The endpoint is left
running, so `docker compose down` must remove its containers. Each step is one
function in `STEPS`, run in order with its time printed. Exit 0 when every step passed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
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

import docker
import grpc
import joblib
import numpy as np
import pandas as pd
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_iris

from skmaker import AutoScalingPolicy, Session, SKLearn, SKLearnModel, SkmakerClientError
from skmaker.v1 import training_pb2, training_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO_ROOT / "examples" / "iris"
ENDPOINT = "iris-compose"
# The control's docker backend labels every replica container so (services/control/backends).
REPLICA_LABELS = ["skmaker.managed=true", f"skmaker.endpoint={ENDPOINT}"]
# Scale-out by load, bounded: at most this many Predict calls to reach 2 desired replicas.
MAX_LOAD_CALLS = 20_000
SPREAD_CALLS = 200
# What services.gateway.haproxy logs once its HAProxy child answers its runtime API.
HAPROXY_STARTED = re.compile(r"haproxy started: \S+ \(pid \d+\)")
# The gateway's log lines worth showing when HAProxy exited.
_NOTABLE = re.compile(r"haproxy|Error|RAW:|fork|listening|stopped", re.IGNORECASE)
DATA_PLANE_CALLS = 100
# Reads the Python gateway's own /metrics from inside its container (port 8000 is not published),
# over HTTPS with the metrics token when the container has them (docker-compose.tls.yml); with
# argument "no-token", without the token: prints the HTTP status.
_READ_GATEWAY_METRICS = """
import os, ssl, sys, urllib.error, urllib.request
ca = os.environ.get("SKMAKER_GATEWAY_TLS_CA_FILE")
token_file = os.environ.get("SKMAKER_GATEWAY_METRICS_TOKEN_FILE")
context = None
if ca:
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
headers = {}
if token_file and sys.argv[1:] != ["no-token"]:
    headers["Authorization"] = "Bearer " + open(token_file).read().strip()
url = ("https" if ca else "http") + "://127.0.0.1:8000/metrics"
try:
    answer = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5,
                                    context=context)
except urllib.error.HTTPError as err:
    print(err.code)
else:
    print(answer.read().decode() if sys.argv[1:] != ["no-token"] else answer.status)
"""


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


def _channel(address: str) -> grpc.Channel:
    """TLS, checked with $SKMAKER_TLS_CA, when it is set (as the client session does)."""
    ca = os.environ.get("SKMAKER_TLS_CA", "")
    if not ca:
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
    return grpc.secure_channel(address, credentials)


def control_serving(ctx: Context) -> None:
    """The published control port answers grpc.health.v1 with SERVING."""

    def probe() -> str | None:
        with _channel(ctx.control) as channel:
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
    ctx.results["train_uri"] = train_uri
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
        ctx.results["batch_input_uri"] = input_uri
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
    ctx.results["model"] = model
    expected = "".join(f"{label}\n" for label in model.predict(np.asarray(features)))
    assert scored == expected, f"batch output differs from the model's predictions:\n{scored}"
    print(f"  {len(features)} rows scored by {transformer.output_path} as the model predicts")
    # The batch containers mount the control's artifact volume: inputs are read, not downloaded.
    logs = "".join(
        container.logs().decode(errors="replace")
        for container in docker.from_env().containers.list(
            filters={"label": "com.docker.compose.service=batch"}
        )
    )
    assert "input read in place" in logs and "input downloaded" not in logs, logs[-2000:]
    print("  batch workers read the input from the shared artifact volume")


def tokens_and_tls_hold(ctx: Context) -> None:
    """With docker-compose.tls.yml: the control's audit log names the smoke test's person for
    the training job it created; a wrong token is UNAUTHENTICATED, a plaintext client gets no
    answer, and the gateway's /metrics answers 401 without the metrics token."""
    assert os.environ.get("SKMAKER_TLS_CA") and os.environ.get("SKMAKER_TOKEN"), (
        "the compose test runs with tokens and TLS: SKMAKER_TLS_CA and SKMAKER_TOKEN"
    )
    job = ctx.results["estimator"].latest_training_job
    with _channel(ctx.control) as channel:
        try:
            training_pb2_grpc.TrainingServiceStub(channel).ListTrainingJobs(
                training_pb2.ListTrainingJobsRequest(),
                timeout=5,
                metadata=(("authorization", "Bearer not-a-token"),),
            )
            raise AssertionError("a wrong token was accepted")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    with grpc.insecure_channel(ctx.control) as plain:
        try:
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
            raise AssertionError("a plaintext client got an answer")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    client = docker.from_env()
    try:
        (control,) = client.containers.list(filters={"label": "com.docker.compose.service=control"})
        (gateway,) = client.containers.list(filters={"label": "com.docker.compose.service=gateway"})
        logs = control.logs().decode(errors="replace")
        code, output = gateway.exec_run(["python", "-c", _READ_GATEWAY_METRICS, "no-token"])
    finally:
        client.close()
    audit = f"who=smoke method=CreateTrainingJob resource={job.name} outcome=OK"
    assert audit in logs, f"no {audit!r} in the control's log"
    assert (code, output.decode().strip()) == (0, "401"), output.decode(errors="replace")
    print(f"  audit: {audit}; wrong token UNAUTHENTICATED; plaintext refused; /metrics 401")


def _active_targets(prometheus: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/targets?" + urllib.parse.urlencode({"state": "active"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5.0) as answer:
        body = json.load(answer)
    return list(body["data"]["activeTargets"])


def prometheus_scraped(ctx: Context) -> None:
    """Prometheus has scraped the control and every trainer and batch worker successfully."""
    wanted = {"control": 1, "gateway": 1, "trainer": ctx.trainers, "batch": ctx.batch_workers}

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
    print(
        f"  scraped: control, gateway, {ctx.trainers} trainers, {ctx.batch_workers} batch workers"
    )


def _describe(ctx: Context) -> dict[str, Any]:
    assert ctx.session is not None
    return ctx.session.describe_endpoint(ENDPOINT)


def _serving(description: dict[str, Any]) -> list[str]:
    return [r["Id"] for r in description["Replicas"] if r["State"] == "Serving"]


def deploy_and_predict(ctx: Context) -> None:
    """Deploys the model (one replica container, scaled by load) and predicts through the
    gateway from the host: the answers equal the model's own predictions."""
    estimator = ctx.results["estimator"]
    policy = AutoScalingPolicy(
        max_replicas=2,
        target_value=60,  # invocations per replica per minute: a few calls a second exceed it
        metric="invocations_per_replica_per_minute",
        scale_out_window_s=0,
        scale_in_window_s=3600,  # stays at 2 for the rest of the run
    )
    predictor = estimator.deploy(
        initial_instance_count=1, endpoint_name=ENDPOINT, autoscaling=policy, wait=False
    )

    def in_service() -> str | None:
        description = _describe(ctx)
        status = description["EndpointStatus"]
        if status == "Failed":
            raise AssertionError(f"endpoint failed: {description.get('FailureReason')}")
        return None if status == "InService" else f"{status}, events {description['Events'][-3:]}"

    _poll(f"endpoint {ENDPOINT} InService", ctx.deadline_s, in_service)
    features = load_iris().data
    predicted = np.asarray(predictor.predict(features))
    expected = ctx.results["model"].predict(features)
    assert np.array_equal(predicted, expected), f"gateway answered {predicted}, not {expected}"
    ctx.results["predictor"] = predictor
    print(f"  {len(features)} predictions through the gateway equal the model's own")


def scale_out_by_load(ctx: Context) -> None:
    """Calls through the gateway until the policy asks for 2 replicas; both then serve."""
    predictor = ctx.results["predictor"]
    row = load_iris().data[:1]
    end = time.monotonic() + ctx.deadline_s
    calls = 0
    while _describe(ctx)["DesiredReplicas"] < 2:
        assert calls < MAX_LOAD_CALLS and time.monotonic() < end, (
            f"no scale-out after {calls} calls: {_describe(ctx)['Events'][-5:]}"
        )
        for _ in range(50):
            predictor.predict(row)
        calls += 50
    print(f"  the policy asked for 2 replicas after {calls} calls")

    def two_serving() -> str | None:
        description = _describe(ctx)
        serving = _serving(description)
        return None if len(serving) == 2 else f"serving {serving}: {description['Events'][-3:]}"

    _poll("2 replicas serving", ctx.deadline_s, two_serving)


def two_replica_containers(ctx: Context) -> None:
    """Docker runs exactly 2 containers labelled as the endpoint's replicas."""
    names = _replica_containers()
    assert len(names) == 2, f"replica containers running: {names}"
    ctx.results["replica_containers"] = names
    print(f"  replica containers: {', '.join(names)}")


def _requests_by_replica(prometheus: str) -> dict[str, float]:
    query = f'sum by (replica) (skmaker_inference_requests_total{{endpoint="{ENDPOINT}"}})'
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5.0) as answer:
        body = json.load(answer)
    return {
        sample["metric"].get("replica", ""): float(sample["value"][1])
        for sample in body["data"]["result"]
    }


def _seconds(timestamp: str) -> float:
    """Prometheus' RFC 3339 time (nanoseconds, Z) as a Unix time."""
    whole, _, fraction = timestamp.rstrip("Z").partition(".")
    fraction = (fraction.partition("+")[0] + "000000")[:6]
    parsed = datetime.datetime.fromisoformat(f"{whole}.{fraction}+00:00")
    return parsed.timestamp()


def replicas_scraped_and_balanced(ctx: Context) -> None:
    """Prometheus scrapes both replicas, and calls through the gateway reach both of them."""
    replicas = set(_serving(_describe(ctx)))
    since = time.time()

    def both_up() -> str | None:
        try:
            targets = _active_targets(ctx.prometheus)
        except OSError as err:
            return f"Prometheus API: {err}"
        up = {
            target["labels"].get("replica")
            for target in targets
            if target["labels"].get("job") == "inference"
            and target["labels"].get("endpoint") == ENDPOINT
            and target["health"] == "up"
            and _seconds(target["lastScrape"]) > since
        }
        return None if replicas <= up else f"inference targets up: {sorted(map(str, up))}"

    # Both scraped since the load stopped, so the counters read now stay put without calls (a
    # counter a replica never incremented reads as 0).
    _poll(f"Prometheus scraping replicas {sorted(replicas)}", ctx.deadline_s, both_up)
    before = _requests_by_replica(ctx.prometheus)
    predictor = ctx.results["predictor"]
    row = load_iris().data[:1]
    for _ in range(SPREAD_CALLS):
        predictor.predict(row)

    def both_grew() -> str | None:
        now = _requests_by_replica(ctx.prometheus)
        grown = {r: now.get(r, 0.0) - before.get(r, 0.0) for r in replicas}
        return None if all(delta > 0 for delta in grown.values()) else f"growth {grown}"

    _poll("every replica's request counter growing", ctx.deadline_s, both_grew)
    after = _requests_by_replica(ctx.prometheus)
    spread = {r: int(after.get(r, 0.0) - before.get(r, 0.0)) for r in sorted(replicas)}
    print(f"  {SPREAD_CALLS} calls through the gateway, per replica: {spread}")


def _python_forwarded(gateway: Any) -> float:
    """Calls to ENDPOINT the Python gateway answered itself (skmaker_gateway_requests_total):
    with HAProxy in front, only what HAProxy did not route."""
    code, output = gateway.exec_run(["python", "-c", _READ_GATEWAY_METRICS, "with-token"])
    text = output.decode(errors="replace")
    assert code == 0, f"reading the gateway's /metrics in its container: {text[-1000:]}"
    total = 0.0
    for line in text.splitlines():
        if line.startswith("skmaker_gateway_requests_total{") and f'endpoint="{ENDPOINT}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def gateway_runs_haproxy(ctx: Context) -> None:
    """The gateway container runs the HAProxy data plane (the image has haproxy, so
    `--data-plane auto` picks it): its log says HAProxy started and never exited, an haproxy
    process runs beside the gateway, and calls through the gateway reach the replicas without
    the Python forwarder answering them."""
    client = docker.from_env()
    try:
        (gateway,) = client.containers.list(filters={"label": "com.docker.compose.service=gateway"})
        logs = gateway.logs().decode(errors="replace")
        started = [line for line in logs.splitlines() if HAPROXY_STARTED.search(line)]
        assert started, f"no 'haproxy ... started' in the gateway's log:\n{logs[-2000:]}"
        # The log keeps earlier runs of the container: a gateway restarted because HAProxy
        # exited (at start or later) fails here even if its latest run started HAProxy.
        restarts = gateway.attrs.get("RestartCount", 0)
        if "haproxy exited" in logs or restarts:
            notable = [line for line in logs.splitlines() if _NOTABLE.search(line)]
            raise AssertionError(
                f"HAProxy exited in the gateway container, or it restarted ({restarts} times):\n"
                + "\n".join(notable[-20:])
            )
        commands = [process[-1] for process in gateway.top()["Processes"]]  # ps -ef's CMD
        assert any(command.split()[0].endswith("haproxy") for command in commands), commands
        before = _python_forwarded(gateway)
        predictor = ctx.results["predictor"]
        row = load_iris().data[:1]
        for _ in range(DATA_PLANE_CALLS):
            predictor.predict(row)
        by_python = int(_python_forwarded(gateway) - before)
    finally:
        client.close()
    # A call HAProxy does not route (say, during a route change) is answered by the Python
    # gateway; nearly all of them must not be.
    assert by_python <= DATA_PLANE_CALLS // 10, (
        f"the Python gateway answered {by_python} of {DATA_PLANE_CALLS} calls: HAProxy does not "
        "route them"
    )
    print(f"  {started[-1].strip()}")
    print(
        f"  {DATA_PLANE_CALLS} calls through the gateway: {DATA_PLANE_CALLS - by_python} "
        f"forwarded by HAProxy, {by_python} by the Python gateway"
    )


def _replica_containers() -> list[str]:
    client = docker.from_env()  # $DOCKER_HOST: the test's private dockerd
    try:
        running = client.containers.list(filters={"label": REPLICA_LABELS, "status": "running"})
    finally:
        client.close()
    return sorted(str(container.name) for container in running)


def control_restart_replaces_leftovers(ctx: Context) -> None:
    """A control killed with SIGKILL and started again removes the replica containers the
    killed one left and serves the endpoint with new ones."""
    old = set(_serving(_describe(ctx)))
    client = docker.from_env()
    try:
        (control,) = client.containers.list(filters={"label": "com.docker.compose.service=control"})
        control.kill("SIGKILL")
        control.wait(timeout=30)
        control.start()
        control.reload()
        # A port Docker picked is picked again at each start.
        binding = control.attrs["NetworkSettings"]["Ports"]["50051/tcp"][0]
    finally:
        client.close()
    assert ctx.session is not None
    ctx.session.close()
    ctx.control = f"{binding['HostIp']}:{binding['HostPort']}"
    control_serving(ctx)

    def replaced() -> str | None:
        try:
            serving = set(_serving(_describe(ctx)))
        except SkmakerClientError as err:  # restored just after the control started
            return f"DescribeEndpoint: {err}"
        names = _replica_containers()
        left = [name for name in names if any(name.endswith(f"-{r}") for r in old)]
        if len(serving) == 2 and not serving & old and len(names) == 2 and not left:
            return None
        return f"serving {sorted(serving)}, containers {names}"

    _poll("new replicas replacing the leftovers", ctx.deadline_s, replaced)
    print(f"  replicas {sorted(old)} removed; now {_replica_containers()}")


OLD_ENDPOINT = "iris-compose-oldest"
OLD_PYTHON = "/opt/skmaker-runtimes/sklearn-1.2/bin/python"


def oldest_runtime_built_on_first_use(ctx: Context) -> None:
    """framework_version="1.2-1": a trainer builds runtime sklearn-1.2 into the runtimes volume
    on its first use (from the image's wheelhouse: the build has no network), the job's log
    says so and the script runs on scikit-learn 1.2; the model deployed from it is served by a
    replica container started on that runtime's python, from the volume."""
    assert ctx.session is not None
    session = ctx.session
    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"max_leaf_nodes": 30},
        session=session,
        framework_version="1.2-1",
    )
    estimator.fit({"train": ctx.results["train_uri"]}, wait=False)
    job = estimator.latest_training_job
    assert job is not None
    described = session.wait_for_job(job.name)
    log = "\n".join(line.text for line in session.training_job_log_lines(job.name))
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason", log)
    version = described["RuntimeVersions"]["ScikitLearn"]
    assert version.startswith("1.2."), f"trained on scikit-learn {version}"
    built_here = "building runtime sklearn-1.2" in log
    estimator.deploy(initial_instance_count=1, endpoint_name=OLD_ENDPOINT, wait=True)
    client = docker.from_env()
    try:
        (replica,) = client.containers.list(
            filters={"label": ["skmaker.managed=true", f"skmaker.endpoint={OLD_ENDPOINT}"]}
        )
        command = replica.attrs["Config"]["Cmd"]
    finally:
        client.close()
    assert command[0] == OLD_PYTHON, command
    answer, _ = session.invoke_endpoint(OLD_ENDPOINT, "5.1,3.5,1.4,0.2\n", "text/csv")
    assert json.loads(answer) == [0], answer
    session.delete_endpoint(OLD_ENDPOINT)
    print(
        f"  {job.name} on scikit-learn {version}"
        f"{' (runtime built on first use)' if built_here else ''}; replica ran {command[0]}"
    )
    _transform_on_the_oldest_runtime(ctx, estimator.model_data)


VERSION_HANDLER = """
import os

import joblib
import sklearn


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def output_fn(prediction, accept):
    return "".join(f"{int(label)},{sklearn.__version__}\\n" for label in prediction)
"""


def _transform_on_the_oldest_runtime(ctx: Context, model_data: str) -> None:
    """A batch transform of the 1.2 model is scored on scikit-learn 1.2: a batch container
    starts a worker on that runtime once it is in the volume (the handler writes the version
    it runs on beside each label)."""
    assert ctx.session is not None
    session = ctx.session
    features = load_iris().data
    with tempfile.TemporaryDirectory(prefix="skmaker-compose-oldest-") as scratch:
        folder = Path(scratch)
        (folder / "code").mkdir()
        (folder / "code" / "version_handler.py").write_text(VERSION_HANDLER)
        model = SKLearnModel(
            model_data,
            entry_point="version_handler.py",
            source_dir=str(folder / "code"),
            framework_version="1.2-1",
            session=session,
        )
        transformer = model.transformer(instance_count=1, assemble_with="Line", accept="text/csv")
        input_uri = ctx.results["batch_input_uri"]
        transformer.transform(input_uri, content_type="text/csv", split_type="Line", wait=False)
        name = transformer.latest_transform_job.job_name
        said: list[str] = []

        def ended() -> str | None:
            described = session.describe_transform_job(name)
            waiting = described.get("StatusMessage", "")
            if waiting and waiting not in said:
                said.append(waiting)
            status = described["TransformJobStatus"]
            if status == "InProgress":
                return f"InProgress, {described['ShardsDone']} shards done; said: {said}"
            assert status == "Completed", described.get("FailureReason", described)
            return None

        _poll(f"transform {name} on runtime sklearn-1.2", ctx.deadline_s, ended)
        session.download_data(folder / "output", transformer.output_path)
        scored = (folder / "output" / "iris.csv.out").read_text().splitlines()
    versions = {line.split(",")[1] for line in scored}
    assert len(scored) == len(features), scored[:5]
    assert len(versions) == 1 and versions.pop().startswith("1.2."), scored[:5]
    print(
        f"  transform {name}: {len(scored)} rows scored on scikit-learn {scored[0].split(',')[1]}"
    )
    if said:
        print(f"  while it waited: {'; '.join(said)}")


STEPS: list[Callable[[Context], None]] = [
    control_serving,
    train_iris,
    tokens_and_tls_hold,
    batch_transform_iris,
    prometheus_scraped,
    deploy_and_predict,
    scale_out_by_load,
    two_replica_containers,
    replicas_scraped_and_balanced,
    gateway_runs_haproxy,
    control_restart_replaces_leftovers,
    oldest_runtime_built_on_first_use,
]


def main(argv: list[str] | None = None) -> int:
    """Runs every step in order; returns 0 when all passed."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
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
