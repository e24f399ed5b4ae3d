"""Training and serving runtimes: recorded in the job and the model, compared per replica.

A real `--local` control trains with its trainer child, deploys to a real replica, and the
versions recorded must be the ones the script's interpreter has: the script runtime's pins
(its lock), or this venv's when no runtime is built; the replica runs on the same one and
reports the same, so the endpoint has no mismatch event. A replica serving with another
scikit-learn is played through DispatchService.ReportReplicaRuntime, as the trainer is in
test_control_service.py: the endpoint's events must then name the difference.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtime import script_runtimes
from skmaker import Session, SKLearn
from skmaker.v1 import dispatch_pb2, dispatch_pb2_grpc, training_job_pb2
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

TRAIN_AND_SERVE = """\
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


if __name__ == "__main__":
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    joblib.dump(model, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
"""


def _expected_runtime() -> dict[str, str]:
    """What user code runs on: the chosen script runtime's pins, else this venv's packages."""
    choice = script_runtimes.choose_python()
    if not choice.runtime:
        return {
            "Python": platform.python_version(),
            "ScikitLearn": importlib.metadata.version("scikit-learn"),
            "Numpy": importlib.metadata.version("numpy"),
            "Joblib": importlib.metadata.version("joblib"),
        }
    pins = dict(script_runtimes.read_lock(script_runtimes.runtime(choice.runtime).lock))
    python = subprocess.run(
        [choice.python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    return {
        "Python": python,
        "ScikitLearn": pins["scikit-learn"],
        "Numpy": pins["numpy"],
        "Joblib": pins["joblib"],
    }


EXPECTED = _expected_runtime()


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("control")
    service = run_service("control", workdir, ["--local", "--data-dir", str(workdir / "data")])
    yield service
    service.stop()


def test_versions_are_recorded_and_a_differing_replica_is_an_event(
    control: ServiceProcess, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(TRAIN_AND_SERVE)
    with Session(control.address, token="") as session:
        estimator = SKLearn(entry_point="train.py", source_dir=str(code), session=session)
        estimator.fit(job_name="versions", logs=False)
        assert estimator.latest_training_job is not None
        trained = estimator.latest_training_job.describe()["RuntimeVersions"]
        assert trained == EXPECTED
        predictor = estimator.deploy(initial_instance_count=1)
        try:
            endpoint = predictor.endpoint_name
            model_name = session.describe_endpoint(endpoint)["ModelName"]
            model = session.describe_model(model_name)
            assert model["TrainingJobName"] == "versions"
            assert model["RuntimeVersions"] == EXPECTED
            # The real replica reported the same runtime: nothing to say.
            events = [e["Message"] for e in session.describe_endpoint(endpoint)["Events"]]
            assert not [message for message in events if "trained with" in message]

            report = dispatch_pb2.ReportReplicaRuntimeRequest(
                endpoint_name=endpoint,
                replica_id="r-9",
                model_name=model_name,
                runtime_versions=training_job_pb2.RuntimeVersions(
                    python=EXPECTED["Python"],
                    sklearn="0.24.2",
                    numpy=EXPECTED["Numpy"],
                    joblib=EXPECTED["Joblib"],
                ),
            )
            answer = dispatch_pb2_grpc.DispatchServiceStub(control.channel()).ReportReplicaRuntime(
                report, timeout=10
            )
            expected = (
                f"replica r-9 serves model {model_name} with scikit-learn 0.24.2 "
                f"(trained with {EXPECTED['ScikitLearn']})"
            )
            assert answer.mismatch.startswith(expected)
            events = [e["Message"] for e in session.describe_endpoint(endpoint)["Events"]]
            assert answer.mismatch in events
        finally:
            predictor.delete_endpoint()
