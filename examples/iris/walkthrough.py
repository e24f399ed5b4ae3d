"""The SageMaker scikit-learn iris walkthrough, run on skmaker (`make demo`).

Starts the embedded control service (`python -m services.control --local`, state under
`.skmaker/demo/`) unless $SKMAKER_ADDRESS points at a running one, then: writes the iris data
set as CSV (holding out ten rows of each species), uploads it, trains `scikit_learn_iris.py`
with SageMaker's SKLearn API while its log streams here, deploys the model to an endpoint,
predicts the held-out rows through it and prints the predictions and their accuracy, and
deletes the endpoint and the model. It scores the same rows offline with a batch transform on
two batch workers (one headerless CSV file per species, one prediction a line in each `.out`)
and prints those predictions and their accuracy too. Then it tunes the tree (`max_leaf_nodes`
and `criterion`, six trials, two at a time, scored on a validation split the script holds
out), prints the best trial and its objective, deploys the best model, predicts the held-out
rows with it and deletes it too. Each step is one function.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pandas as pd
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_iris

from skmaker import (
    CategoricalParameter,
    HyperparameterTuner,
    IntegerParameter,
    Predictor,
    Session,
    SKLearn,
)

EXAMPLE_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLE_DIR.parent.parent
DATA_DIR = REPO_ROOT / ".skmaker" / "demo"
READY_DEADLINE_S = 60.0
# Two trainers, so the tuning step runs two trials at a time.
LOCAL_TRAINERS = 2
# Two batch workers, so the batch transform step shares its files between them.
LOCAL_BATCH_WORKERS = 2
OBJECTIVE_METRIC = "validation:accuracy"
STOP_DEADLINE_S = 30.0


def _wait_for_port_file(process: subprocess.Popen[bytes], port_file: Path, log: Path) -> int:
    end = time.monotonic() + READY_DEADLINE_S
    while not port_file.exists():
        if process.poll() is not None:
            raise SystemExit(f"control exited with {process.returncode}; see {log}")
        if time.monotonic() > end:
            raise SystemExit(f"control wrote no port file in {READY_DEADLINE_S:.0f}s; see {log}")
        time.sleep(0.05)
    return int(json.loads(port_file.read_text())["grpc"])


def wait_until_serving(address: str, deadline_s: float = READY_DEADLINE_S) -> None:
    """Polls grpc.health.v1 until the server reports SERVING, or exits after the deadline."""
    end = time.monotonic() + deadline_s
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            with contextlib.suppress(grpc.RpcError):
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.05)
    raise SystemExit(f"{address} was not SERVING within {deadline_s:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code; the whole group is killed if it hangs past the deadline."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


@contextlib.contextmanager
def embedded_control(data_dir: Path = DATA_DIR) -> Iterator[str]:
    """Runs `python -m services.control --local` on a free port; yields its address.

    On exit the control gets SIGTERM and must exit 0 (it stops its trainers itself).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "control.log"
    with tempfile.TemporaryDirectory(prefix="skmaker-demo-") as scratch:
        port_file = Path(scratch) / "ports.json"
        command = [
            sys.executable, "-m", "services.control", "--local", "--port", "0",
            "--port-file", str(port_file), "--data-dir", str(data_dir),
            "--local-trainers", str(LOCAL_TRAINERS),
            "--local-batch-workers-max", str(LOCAL_BATCH_WORKERS),
        ]  # fmt: skip
        with log.open("ab") as log_handle:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=log_handle, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            address = f"127.0.0.1:{_wait_for_port_file(process, port_file, log)}"
            wait_until_serving(address)
            yield address
        except BaseException:
            _stop(process)
            raise
        code = _stop(process)
        if code != 0:
            raise SystemExit(f"control exited with {code} after SIGTERM; see {log}")
    print(f"control stopped cleanly (log: {log.relative_to(REPO_ROOT)})")


# -- the walkthrough's steps ---------------------------------------------------------------------


def iris_frame() -> pd.DataFrame:
    """The iris data set as SageMaker's example stores it: the label first, then 4 features."""
    iris = load_iris(as_frame=True)
    return pd.concat([iris.target, iris.data], axis=1)


def held_out_rows(frame: pd.DataFrame) -> pd.Index:
    """The rows SageMaker's example predicts on: the last ten of each species (40-49)."""
    return frame.index[[species * 50 + row for species in range(3) for row in range(40, 50)]]


def write_iris_csv(folder: Path) -> tuple[Path, pd.DataFrame]:
    """Step 1: the training CSV (label first, no header) without the held-out rows.

    Returns the CSV's path and the held-out rows, kept to test the endpoint with.
    """
    frame = iris_frame()
    test_rows = held_out_rows(frame)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "iris.csv"
    frame.drop(index=test_rows).to_csv(path, header=False, index=False)
    return path, frame.loc[test_rows]


def upload_training_data(session: Session, folder: Path) -> str:
    """Step 2: upload the data; the store:// URI returned is the training channel."""
    uri = session.upload_data(str(folder), key_prefix="scikit-iris/data")
    print(f"training data: {uri}")
    return uri


def train(session: Session, train_uri: str) -> SKLearn:
    """Step 3: train the script with SageMaker's SKLearn API; its log streams here."""
    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"max_leaf_nodes": 30},
        session=session,
    )
    estimator.fit({"train": train_uri})
    print(f"model artifact: {estimator.model_data}")
    return estimator


def deploy(estimator: SKLearn) -> Predictor:
    """Step 4: serve the model on an endpoint; returns once it is InService."""
    predictor = estimator.deploy(initial_instance_count=1)
    description = predictor.describe_endpoint()
    replicas = ", ".join(replica["Address"] for replica in description["Replicas"])
    status = description["EndpointStatus"]
    print(f"endpoint {predictor.endpoint_name} is {status} (replicas: {replicas})")
    return predictor


def predict(predictor: Predictor, test_data: pd.DataFrame) -> float:
    """Step 5: predict the held-out rows (numpy in, numpy out) and print the accuracy."""
    test_X = test_data.iloc[:, 1:]  # SageMaker's example's names
    test_y = test_data.iloc[:, 0]
    predictions = predictor.predict(test_X.values)
    accuracy = float((predictions == test_y.values).mean())
    print(f"predictions: {predictions.tolist()}")
    print(f"labels:      {test_y.values.tolist()}")
    print(f"accuracy on {len(test_y)} held-out rows: {accuracy:.3f}")
    return accuracy


def clean_up(predictor: Predictor) -> None:
    """Step 6: delete the endpoint (its replicas drain and stop), then its model."""
    predictor.delete_endpoint()
    predictor.delete_model()
    print(f"deleted endpoint and model {predictor.endpoint_name}")


def batch_transform(session: Session, estimator: SKLearn, test_data: pd.DataFrame) -> float:
    """Step 7: score the held-out rows offline on two batch workers and print the accuracy.

    The features go to one headerless CSV per species (a file is a shard, so the two workers
    share them); the transformer asks for CSV answers, one prediction a line, so each
    `<file>.out` lines up with its input rows.
    """
    species = load_iris().target_names
    with tempfile.TemporaryDirectory(prefix="skmaker-iris-batch-") as scratch:
        inputs = Path(scratch) / "batch"
        inputs.mkdir()
        for label, rows in test_data.groupby(test_data.columns[0]):
            rows.iloc[:, 1:].to_csv(inputs / f"{species[label]}.csv", header=False, index=False)
        data_uri = session.upload_data(str(inputs), key_prefix="scikit-iris/batch")
        transformer = estimator.transformer(
            instance_count=LOCAL_BATCH_WORKERS, assemble_with="Line", accept="text/csv"
        )
        transformer.transform(data_uri, content_type="text/csv", split_type="Line")
        job = transformer.latest_transform_job
        assert job is not None and transformer.output_path is not None, "set by transform()"
        print(f"batch transform {job.name} wrote {transformer.output_path}")
        session.download_data(Path(scratch) / "out", transformer.output_path)
        correct = 0
        for label in sorted(set(test_data.iloc[:, 0])):
            name = f"{species[label]}.csv.out"
            lines = (Path(scratch) / "out" / name).read_text().splitlines()
            predictions = [int(line) for line in lines]
            correct += sum(p == label for p in predictions)
            print(f"{name}: {predictions}")
    accuracy = correct / len(test_data)
    print(f"batch accuracy on {len(test_data)} held-out rows: {accuracy:.3f}")
    session.delete_model(transformer.model_name)
    return accuracy


def tune(session: Session, train_uri: str) -> HyperparameterTuner:
    """Step 8: tune max_leaf_nodes and criterion on a 30% validation split; print the best."""
    estimator = SKLearn(
        entry_point="scikit_learn_iris.py",
        source_dir=str(EXAMPLE_DIR),
        hyperparameters={"validation_fraction": 0.3},
        session=session,
    )
    tuner = HyperparameterTuner(
        estimator,
        objective_metric_name=OBJECTIVE_METRIC,
        hyperparameter_ranges={
            "max_leaf_nodes": IntegerParameter(2, 30),
            "criterion": CategoricalParameter(["gini", "entropy"]),
        },
        metric_definitions=[{"Name": OBJECTIVE_METRIC, "Regex": r"validation accuracy: ([0-9.]+)"}],
        max_jobs=6,
        max_parallel_jobs=2,
        base_tuning_job_name="iris-tuning",
        random_seed=7,
    )
    tuner.fit({"train": train_uri})
    best = tuner.describe()["BestTrainingJob"]
    objective = best["FinalHyperParameterTuningJobObjectiveMetric"]
    print(f"best training job: {best['TrainingJobName']}")
    print(f"best {objective['MetricName']}: {objective['Value']:.3f}")
    print(f"best hyperparameters: {best['TunedHyperParameters']}")
    return tuner


def run(session: Session) -> float:
    """Every step in order, against a running control service; returns the tuned accuracy."""
    with tempfile.TemporaryDirectory(prefix="skmaker-iris-") as scratch:
        data_folder = Path(scratch) / "data"
        _, test_data = write_iris_csv(data_folder)
        train_uri = upload_training_data(session, data_folder)
    estimator = train(session, train_uri)
    predictor = deploy(estimator)
    try:
        predict(predictor, test_data)
    finally:
        clean_up(predictor)
    batch_transform(session, estimator, test_data)
    tuner = tune(session, train_uri)
    best_predictor = tuner.deploy(initial_instance_count=1)
    print(f"endpoint {best_predictor.endpoint_name} serves the best model")
    try:
        return predict(best_predictor, test_data)
    finally:
        clean_up(best_predictor)


def main() -> int:
    """Runs the walkthrough on $SKMAKER_ADDRESS, or on an embedded control it starts."""
    address = os.environ.get("SKMAKER_ADDRESS")
    if address:
        with Session(address) as session:
            run(session)
        return 0
    with embedded_control() as address, Session(address) as session:
        print(f"embedded control listening on {address}")
        run(session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
