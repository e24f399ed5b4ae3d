"""Batch transform end to end: the real control (`--local`) with real batch workers.

One control (small shards, a 2 s lease) serves most scenarios, driving TransformService, the
artifact API and ModelService through their generated stubs. Every output is compared with the
model's own `predict` on the same rows, in the same order (issue 5, acceptance 1-4). The chaos
scenarios kill -9 a batch worker, and the control itself, in the middle of a job.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker.v1 import (
    artifacts_pb2_grpc,
    model_pb2,
    serving_pb2,
    serving_pb2_grpc,
    transfer,
    transform_job_pb2,
    transform_pb2,
    transform_pb2_grpc,
)
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

COMPLETED = transform_job_pb2.TRANSFORM_JOB_STATUS_COMPLETED
FAILED = transform_job_pb2.TRANSFORM_JOB_STATUS_FAILED
STOPPED = transform_job_pb2.TRANSFORM_JOB_STATUS_STOPPED
TERMINAL = {COMPLETED, FAILED, STOPPED}

SCRIPT = """
import json
import os
import time

import joblib
import numpy as np


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""
# JSON Lines in (one array of features a line), JSON Lines out (one number a line).
JSON_LINES_SCRIPT = (
    SCRIPT
    + """

def input_fn(body, content_type):
    text = body.decode() if isinstance(body, bytes) else body
    return np.array([json.loads(line) for line in text.split("\\n")], dtype=np.float64)


def output_fn(prediction, accept):
    return "".join(json.dumps(v) + "\\n" for v in prediction.tolist()), "application/jsonlines"
"""
)
# Slow enough that a job is still running when a process is killed (SLOW_S a mini-batch).
SLOW_SCRIPT = (
    SCRIPT
    + """

def predict_fn(data, model):
    time.sleep(float(os.environ.get("SLOW_S", "0")))
    return model.predict(data)
"""
)
CONTROL_FLAGS = (
    "--local",
    "--local-trainers",
    "0",
    "--local-batch-workers-max",
    "2",
    "--local-batch-idle-s",
    "60",
    "--lease-s",
    "2",
    "--heartbeat-interval-s",
    "0.5",
    "--retry-backoff-s",
    "0.2",
    "--max-attempts",
    "5",
    "--transform-shard-bytes",
    "4096",
)


# ----------------------------------------------------------------- data and model


@pytest.fixture(scope="module")
def model() -> DecisionTreeClassifier:
    iris = load_iris()
    return DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)


def _rows(count: int, seed: int) -> np.ndarray[Any, Any]:
    """Iris-like rows, rounded to one decimal as the CSV files hold them."""
    iris = load_iris().data
    rng = np.random.default_rng(seed)
    rows = iris[rng.integers(0, len(iris), count)] + rng.normal(0, 0.3, (count, 4))
    return np.round(rows, 1)


def _csv(rows: np.ndarray[Any, Any], ids: bool = False) -> bytes:
    lines = [
        (f"{index}," if ids else "") + ",".join(f"{value:.1f}" for value in row)
        for index, row in enumerate(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def _labels(model: DecisionTreeClassifier, rows: np.ndarray[Any, Any]) -> list[int]:
    return [int(label) for label in model.predict(rows)]


def _lines(labels: list[int]) -> bytes:
    return "".join(f"{label}\n" for label in labels).encode()


# ----------------------------------------------------------------- control helpers


class Control:
    """Stubs of one running control, and the helpers the scenarios share."""

    def __init__(self, process: ServiceProcess, data_dir: Path, tmp: Path) -> None:
        self.process = process
        self.data_dir = data_dir
        self.tmp = tmp
        channel = process.channel()
        self.artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        self.models = serving_pb2_grpc.ModelServiceStub(channel)
        self.transforms = transform_pb2_grpc.TransformServiceStub(channel)

    def put(self, key: str, data: bytes) -> str:
        path = self.tmp / "uploads" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        uri = f"store://{key}"
        transfer.upload_file(self.artifacts, path, uri)
        return uri

    def get(self, uri: str) -> bytes | None:
        try:
            return b"".join(transfer.iter_range(self.artifacts, uri, 0, 0))
        except grpc.RpcError as err:
            if err.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def create_model(self, name: str, model: Any, script: str, **env: str) -> None:
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            for member, data in (("model.joblib", buffer.getvalue()), ("code/serve.py", script)):
                payload = data.encode() if isinstance(data, str) else data
                info = tarfile.TarInfo(member)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        uri = self.put(f"models/{name}/model.tar.gz", archive.getvalue())
        self.models.CreateModel(
            serving_pb2.CreateModelRequest(
                model=model_pb2.Model(
                    name=name, model_data_uri=uri, entry_point="serve.py", environment=env
                )
            ),
            timeout=10,
        )

    def create(self, name: str, **spec: Any) -> transform_job_pb2.TransformJob:
        values: dict[str, Any] = {
            "model_name": "iris",
            "content_type": "text/csv",
            "accept": "text/csv",
            "split_type": "Line",
            "assemble_with": "Line",
            "instance_count": 2,
        }
        values.update(spec)
        request = transform_pb2.CreateTransformJobRequest(
            name=name, spec=transform_job_pb2.TransformJobSpec(**values)
        )
        return self.transforms.CreateTransformJob(request, timeout=30).transform_job

    def describe(self, name: str) -> transform_job_pb2.TransformJob:
        request = transform_pb2.DescribeTransformJobRequest(name=name)
        return self.transforms.DescribeTransformJob(request, timeout=10).transform_job

    def wait(self, name: str, timeout_s: float = 90.0) -> transform_job_pb2.TransformJob:
        job = _wait_for(
            lambda: self.describe(name), lambda job: job.status in TERMINAL, timeout_s, name
        )
        return job

    def worker_logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')}"
            for path in sorted((self.data_dir / "logs").glob("batch-*.log"))
        )


def _wait_for(
    read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float, what: str
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = read()
        except grpc.RpcError as err:
            if err.code() is not grpc.StatusCode.UNAVAILABLE:
                raise
        else:
            if done(value):
                return value
        assert time.monotonic() < deadline, f"{what} not done within {timeout_s}s"
        time.sleep(0.1)


def _start(tmp: Path, data_dir: Path) -> ServiceProcess:
    return run_service("control", tmp, [*CONTROL_FLAGS, "--data-dir", str(data_dir)])


def _batch_pids(control_pid: int) -> list[int]:
    """Live batch workers that are children of the control."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if stat[0] != "Z" and int(stat[1]) == control_pid and b"services.batch" in args:
            found.append(int(entry.name))
    return sorted(found)


@pytest.fixture(scope="module")
def control(
    tmp_path_factory: pytest.TempPathFactory, model: DecisionTreeClassifier
) -> Iterator[Control]:
    tmp = tmp_path_factory.mktemp("batch-control")
    process = _start(tmp, tmp / "data")
    handle = Control(process, tmp / "data", tmp)
    try:
        handle.create_model("iris", model, SCRIPT)
        handle.create_model("iris-jsonl", model, JSON_LINES_SCRIPT)
        handle.create_model("iris-slow", model, SLOW_SCRIPT, SLOW_S="0.05")
        handle.create_model("iris-slower", model, SLOW_SCRIPT, SLOW_S="0.3")
        yield handle
    except BaseException:
        print(handle.worker_logs())
        raise
    finally:
        process.stop(timeout_s=40)


# ----------------------------------------------------------------- scenarios


def test_many_small_files(control: Control, model: DecisionTreeClassifier) -> None:
    inputs = {f"small/{name}": _rows(30, seed) for seed, name in enumerate(["a.csv", "b.csv"])}
    inputs["small/sub/c.csv"] = _rows(45, 7)
    inputs["small/sub/d.csv"] = _rows(1, 8)
    for key, rows in inputs.items():
        control.put(f"in/{key}", _csv(rows))
    created = control.create("small", input_uri="store://in/small")
    assert created.status == transform_job_pb2.TRANSFORM_JOB_STATUS_IN_PROGRESS
    job = control.wait("small")
    assert job.status == COMPLETED, (job, control.worker_logs())
    assert job.spec.output_uri == "store://transform-jobs/small"
    assert [f.status for f in job.files] == ["Completed"] * 4
    for file, (key, rows) in zip(job.files, sorted(inputs.items()), strict=True):
        relative = key.removeprefix("small/")
        assert file.output_uri == f"store://transform-jobs/small/{relative}.out"
        assert control.get(file.output_uri) == _lines(_labels(model, rows))
        assert (file.records_done, file.bytes_done) == (len(rows), file.bytes_total)
    assert job.shards_done == job.shards_total == 4
    listed = transfer.list_artifacts(control.artifacts, "store://transform-jobs/small")
    assert len(listed) == 4, "staged shard outputs are gone or hidden"


def test_one_large_file_split_across_two_workers(
    control: Control, model: DecisionTreeClassifier
) -> None:
    rows = _rows(4000, 11)
    control.put("in/large/big.csv", _csv(rows))
    control.create("large", input_uri="store://in/large/big.csv", model_name="iris-slow")
    job = control.wait("large")
    assert job.status == COMPLETED, (job, control.worker_logs())
    assert job.shards_total >= 4  # up to 4 per instance asked for
    assert control.get("store://transform-jobs/large/big.csv.out") == _lines(_labels(model, rows))
    # Both workers scored shards of the one file.
    workers_used = [
        path.name
        for path in (control.data_dir / "logs").glob("batch-*.log")
        if "scoring store://in/large/big.csv" in path.read_text()
    ]
    assert len(workers_used) == 2, control.worker_logs()


@pytest.mark.parametrize(
    ("strategy", "assemble_with"),
    [("SingleRecord", "None"), ("SingleRecord", "Line"), ("MultiRecord", "None")],
)
def test_strategies_and_assembly(
    control: Control, model: DecisionTreeClassifier, strategy: str, assemble_with: str
) -> None:
    rows = _rows(300, 21)
    name = f"{strategy}-{assemble_with}".lower()
    control.put(f"in/{name}/x.csv", _csv(rows))
    control.create(
        name,
        input_uri=f"store://in/{name}",
        batch_strategy=strategy,
        assemble_with=assemble_with,
        max_payload_mb=1,
    )
    job = control.wait(name)
    assert job.status == COMPLETED, (job, control.worker_logs())
    # A CSV answer ends each body with a line end, so raw concatenation is one label a line.
    assert control.get(f"store://transform-jobs/{name}/x.csv.out") == _lines(_labels(model, rows))


def test_json_answers_with_assemble_with_none_are_concatenated_arrays(
    control: Control, model: DecisionTreeClassifier
) -> None:
    rows = _rows(200, 23)
    control.put("in/json-none/x.csv", _csv(rows))
    control.create(
        "json-none",
        input_uri="store://in/json-none",
        accept="application/json",
        assemble_with="None",
    )
    job = control.wait("json-none")
    assert job.status == COMPLETED, (job, control.worker_logs())
    text = (control.get("store://transform-jobs/json-none/x.csv.out") or b"").decode()
    labels: list[int] = []
    decoder = json.JSONDecoder()
    position = 0
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        labels += value
    assert labels == _labels(model, rows)


def test_gzip_input(control: Control, model: DecisionTreeClassifier) -> None:
    rows = _rows(3000, 31)
    control.put("in/gz/data.csv.gz", gzip.compress(_csv(rows)))
    control.create("gz", input_uri="store://in/gz", compression_type="Gzip")
    job = control.wait("gz")
    assert job.status == COMPLETED, (job, control.worker_logs())
    assert job.shards_total == 1, "a gzip object cannot be split"
    assert control.get("store://transform-jobs/gz/data.csv.gz.out") == _lines(_labels(model, rows))


def test_csv_join_and_filters(control: Control, model: DecisionTreeClassifier) -> None:
    rows = _rows(500, 41)
    control.put("in/join/x.csv", _csv(rows, ids=True))
    control.create(
        "csv-join",
        input_uri="store://in/join",
        data_processing=transform_job_pb2.DataProcessing(
            input_filter="$[1:]", join_source="Input", output_filter="$[0,-1]"
        ),
    )
    job = control.wait("csv-join")
    assert job.status == COMPLETED, (job, control.worker_logs())
    expected = "".join(
        f"{index},{label}\n" for index, label in enumerate(_labels(model, rows))
    ).encode()
    assert control.get("store://transform-jobs/csv-join/x.csv.out") == expected


def test_json_lines_join_and_filters(control: Control, model: DecisionTreeClassifier) -> None:
    rows = _rows(400, 43)
    records = "".join(
        json.dumps({"id": f"r{index}", "features": row.tolist(), "note": "x"}) + "\n"
        for index, row in enumerate(rows)
    )
    control.put("in/jsonl/x.jsonl", records.encode())
    control.create(
        "jsonl-join",
        model_name="iris-jsonl",
        input_uri="store://in/jsonl",
        content_type="application/jsonlines",
        accept="application/jsonlines",
        data_processing=transform_job_pb2.DataProcessing(
            input_filter="$.features",
            join_source="Input",
            output_filter="$['id','SageMakerOutput']",
        ),
    )
    job = control.wait("jsonl-join")
    assert job.status == COMPLETED, (job, control.worker_logs())
    text = (control.get("store://transform-jobs/jsonl-join/x.jsonl.out") or b"").decode()
    assert [json.loads(line) for line in text.splitlines()] == [
        {"id": f"r{index}", "SageMakerOutput": label}
        for index, label in enumerate(_labels(model, rows))
    ]


def _with_bad_line(data: bytes, line: int, text: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[line - 1] = text
    return b"\n".join(lines)


def test_a_bad_record_fails_its_file_only(control: Control, model: DecisionTreeClassifier) -> None:
    good = _rows(100, 51)
    # Line 777 lies in a later shard of the file: its number is counted in the whole file.
    bad = _with_bad_line(_csv(_rows(1000, 52)), 777, b"5.1,oops,1.4,0.2")
    control.put("in/bad/good.csv", _csv(good))
    control.put("in/bad/bad.csv", bad)
    control.create("bad", input_uri="store://in/bad")
    job = control.wait("bad")
    assert job.status == FAILED
    assert "store://in/bad/bad.csv: line 777:" in job.failure_reason, job.failure_reason
    assert "oops" in job.failure_reason
    assert len(job.failure_reason) <= 1024
    by_uri = {file.input_uri: file for file in job.files}
    assert by_uri["store://in/bad/bad.csv"].status == "Failed"
    assert by_uri["store://in/bad/good.csv"].status == "Completed"
    assert control.get("store://transform-jobs/bad/bad.csv.out") is None
    assert control.get("store://transform-jobs/bad/good.csv.out") == _lines(_labels(model, good))


def test_record_errors_score_every_good_row(
    control: Control, model: DecisionTreeClassifier
) -> None:
    rows = _rows(1000, 53)
    data = _with_bad_line(_csv(rows), 777, b"5.1,oops,1.4,0.2")
    data = _with_bad_line(data, 3, b"a,b,c,d")
    control.put("in/errors/x.csv", data)
    control.create("errors", input_uri="store://in/errors", record_errors=True)
    job = control.wait("errors")
    assert job.status == COMPLETED, (job, control.worker_logs())
    file = job.files[0]
    assert (file.records_failed, file.records_done) == (2, 998)
    good = np.delete(rows, [2, 776], axis=0)
    assert control.get(file.output_uri) == _lines(_labels(model, good))
    assert file.errors_uri == "store://transform-jobs/errors/x.csv.out.errors"
    errors = [json.loads(line) for line in (control.get(file.errors_uri) or b"").splitlines()]
    assert [error["line"] for error in errors] == [3, 777]


@pytest.mark.timeout(120)
def test_many_bad_records_are_all_listed(control: Control, model: DecisionTreeClassifier) -> None:
    # 20,000 bad lines among 30,000, over several shards of one file: each shard uploads its
    # bad records beside its output and reports their number only.
    rows = _rows(30_000, 57)
    lines = _csv(rows).split(b"\n")
    bad_lines = [number for number in range(1, len(rows) + 1) if number % 3]
    for number in bad_lines:
        lines[number - 1] = b"5.1,oops,1.4,0.2"
    control.put("in/many-errors/x.csv", b"\n".join(lines))
    control.create("many-errors", input_uri="store://in/many-errors", record_errors=True)
    job = control.wait("many-errors", timeout_s=100)
    assert job.status == COMPLETED, (job, control.worker_logs())
    assert job.shards_total > 1
    file = job.files[0]
    assert (file.records_failed, file.records_done) == (20_000, 10_000)
    good = rows[2::3]
    assert control.get(file.output_uri) == _lines(_labels(model, good))
    errors = [json.loads(line) for line in (control.get(file.errors_uri) or b"").splitlines()]
    assert [error["line"] for error in errors] == bad_lines
    assert all("oops" in error["error"] for error in errors)
    listed = transfer.list_artifacts(control.artifacts, "store://transform-jobs/many-errors")
    assert sorted(info.uri for info in listed) == [file.output_uri, file.errors_uri]


# Each record's output names the size of the mini-batch it came in and the batch strategy the
# request set (SAGEMAKER_BATCH_STRATEGY, "-" when unset); the model asks for SINGLE_RECORD
# through a Flask-like response object.
EXECUTION_PARAMETERS_SCRIPT = (
    SCRIPT
    + """

class Response:
    def __init__(self, body):
        self.status_code = 200
        self._body = body

    def get_data(self):
        return self._body.encode()


def execution_parameters_fn():
    return Response(json.dumps({"BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 1}))


def predict_fn(data, model):
    return np.full(len(data), len(data))


def output_fn(prediction, accept):
    strategy = os.environ.get("SAGEMAKER_BATCH_STRATEGY", "-")
    return "".join(f"{size},{strategy}\\n" for size in prediction.tolist()), "text/csv"
"""
)


def _batch_sizes(control: Control, uri: str) -> list[tuple[int, str]]:
    text = (control.get(uri) or b"").decode()
    return [(int(size), strategy) for size, strategy in (line.split(",") for line in text.split())]


def test_execution_parameters_fn_sets_what_the_request_leaves_unset(
    control: Control, model: DecisionTreeClassifier
) -> None:
    control.create_model("iris-params", model, EXECUTION_PARAMETERS_SCRIPT)
    control.create_model(
        "iris-bad-params",
        model,
        SCRIPT + "\n\ndef execution_parameters_fn():\n    return {'BatchStrategy': 'BATCHED'}\n",
    )
    control.put("in/params/x.csv", _csv(_rows(200, 81)))
    control.create("params-model", input_uri="store://in/params", model_name="iris-params")
    control.create(
        "params-request",
        input_uri="store://in/params",
        model_name="iris-params",
        batch_strategy="MultiRecord",
    )
    control.create("params-bad", input_uri="store://in/params", model_name="iris-bad-params")

    job = control.wait("params-model")
    assert job.status == COMPLETED, (job, control.worker_logs())
    # Described as asked: nothing set.
    assert (job.spec.batch_strategy, job.spec.max_payload_mb) == ("", 0)
    # The model's SINGLE_RECORD: one record a request; the variable stays unset.
    assert _batch_sizes(control, job.files[0].output_uri) == [(1, "-")] * 200

    job = control.wait("params-request")
    assert job.status == COMPLETED, (job, control.worker_logs())
    # The request's MultiRecord wins: records travel together, and the model is told.
    sizes = _batch_sizes(control, job.files[0].output_uri)
    assert len(sizes) == 200
    assert {strategy for _size, strategy in sizes} == {"MULTI_RECORD"}
    assert max(size for size, _strategy in sizes) > 1

    job = control.wait("params-bad")
    assert job.status == FAILED
    assert "execution_parameters_fn gave BatchStrategy 'BATCHED'" in job.failure_reason


def _worker_mid_shard(control: Control, job_name: str) -> int | None:
    """The pid of a batch worker now scoring a shard of `job_name`, from its log, or None.

    A worker logs "scoring ..." when it starts a shard and "shard <id> of <job>: ..." when
    it ends one; its log names its pid in the control's supervisor line.
    """
    pids = _batch_pids(control.process.process.pid)
    for pid in pids:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        work_dir = Path(args[args.index(b"--work-dir") + 1].decode())
        log_text = (control.data_dir / "logs" / f"{work_dir.name}.log").read_text()
        started = log_text.rfind(f"of {job_name}, attempt")
        ended = log_text.rfind(f" of {job_name}: ")
        if started > ended:
            return pid
    return None


def _lease_expirations(control: Control) -> float:
    url = f"http://127.0.0.1:{control.process.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith("skmaker_control_lease_expirations_total "):
            return float(line.split()[1])
    return 0.0


def test_kill_of_a_batch_worker_reruns_its_shards(
    control: Control, model: DecisionTreeClassifier
) -> None:
    rows = _rows(3000, 61)
    control.put("in/chaos/big.csv", _csv(rows))
    expired_before = _lease_expirations(control)
    control.create("worker-chaos", input_uri="store://in/chaos", model_name="iris-slower")
    _wait_for(
        lambda: control.describe("worker-chaos"),
        lambda job: job.shards_done >= 1,
        60,
        "a shard done",
    )
    # Kill a worker in the middle of a shard (a shard takes 0.3 s here), so its lease is lost.
    victim = _wait_for(
        lambda: _worker_mid_shard(control, "worker-chaos"),
        lambda pid: pid is not None,
        30,
        "a worker in the middle of a shard",
    )
    os.kill(victim, signal.SIGKILL)
    job = control.wait("worker-chaos")
    assert job.status == COMPLETED, (job, control.worker_logs())
    assert _lease_expirations(control) > expired_before
    # Every row exactly once, in order.
    assert control.get("store://transform-jobs/worker-chaos/big.csv.out") == _lines(
        _labels(model, rows)
    )


def test_kill_of_the_control_mid_job(tmp_path: Path, model: DecisionTreeClassifier) -> None:
    data_dir = tmp_path / "data"
    process = _start(tmp_path, data_dir)
    control = Control(process, data_dir, tmp_path)
    rows = _rows(6000, 71)
    try:
        control.create_model("iris-slow", model, SLOW_SCRIPT, SLOW_S="0.05")
        control.put("in/big.csv", _csv(rows))
        control.create("control-chaos", input_uri="store://in", model_name="iris-slow")
        _wait_for(
            lambda: control.describe("control-chaos"),
            lambda job: job.shards_done >= 2,
            60,
            "two shards done",
        )
    except BaseException:
        process.kill()
        raise
    process.kill()  # kill -9 of the control and its workers
    process = _start(tmp_path, data_dir)
    control = Control(process, data_dir, tmp_path)
    try:
        job = control.wait("control-chaos")
        assert job.status == COMPLETED, (job, control.worker_logs())
        assert control.get("store://transform-jobs/control-chaos/big.csv.out") == _lines(
            _labels(model, rows)
        )
    finally:
        process.stop(timeout_s=40)


def test_stop_a_running_job(control: Control) -> None:
    control.put("in/stop/big.csv", _csv(_rows(6000, 81)))
    control.create("stop-me", input_uri="store://in/stop", model_name="iris-slow")
    _wait_for(
        lambda: control.describe("stop-me"),
        lambda job: job.shards_done >= 1,
        60,
        "a shard done",
    )
    request = transform_pb2.StopTransformJobRequest(name="stop-me")
    stopping = control.transforms.StopTransformJob(request, timeout=10).transform_job
    assert stopping.status in {transform_job_pb2.TRANSFORM_JOB_STATUS_STOPPING, STOPPED}
    job = control.wait("stop-me")
    assert job.status == STOPPED
    assert job.shards_done < job.shards_total
    with pytest.raises(grpc.RpcError) as caught:
        control.transforms.StopTransformJob(request, timeout=10)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_create_errors(control: Control) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        control.create("no-model", model_name="nope", input_uri="store://in/small")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        control.create("no-input", input_uri="store://in/nothing-here")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        control.create("bad-payload", input_uri="store://in/small", max_payload_mb=101)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "MaxPayloadInMB" in (caught.value.details() or "")
    # A refused create stores no job (checked by name: other tests share this control).
    for refused in ("no-model", "no-input", "bad-payload"):
        listed = control.transforms.ListTransformJobs(
            transform_pb2.ListTransformJobsRequest(name_prefix=refused), timeout=10
        )
        assert list(listed.transform_jobs) == []


def test_a_standalone_worker_drains_on_sigterm(control: Control, tmp_path: Path) -> None:
    worker = run_service(
        "batch",
        tmp_path,
        ["--control", control.process.address, "--work-dir", str(tmp_path / "work")],
    )
    started = time.monotonic()
    worker.stop(timeout_s=20)  # asserts exit code 0
    # The long poll for a shard ends at once; nothing waits for its 10 s timeout.
    assert time.monotonic() - started < 5
