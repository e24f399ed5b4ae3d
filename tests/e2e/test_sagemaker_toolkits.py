"""Scripts written for SageMaker's scikit-learn container run unchanged, end to end.

The embedded control trains a script-mode script that imports `boto3` at module level and reads
its configuration through `sagemaker_training.environment.Environment()` and the legacy
`sagemaker_containers.training_env()`; its `output_fn` answers with
`worker.Response(encoders.encode(prediction, accept), mimetype=accept)`. The endpoint answers
CSV byte-for-byte as the trained model predicts in-process, a second handler whose `output_fn`
returns a dict answers JSON, and a batch transform runs the first handler. The scripts run on
the script runtime `make install` builds (the control starts every worker on it).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import joblib
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from services.runtime.script_runtimes import choose_python
from skmaker import ModelError, Session, SKLearn, SKLearnModel
from skmaker.deserializers import JSONDeserializer
from skmaker.serializers import CSVSerializer
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).with_name("sagemaker_scripts")
HYPERPARAMETERS = {"max_leaf_nodes": 30, "criterion": "entropy"}


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    if not choose_python().runtime:
        pytest.fail(f"these scripts need the script runtime: {choose_python().note}")
    tmp_path = tmp_path_factory.mktemp("toolkits")
    service = run_service(
        "control", tmp_path / "control", ["--local", "--data-dir", str(tmp_path / "data")]
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address) as client:
        yield client


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    iris = load_iris(as_frame=True)
    return pd.concat([iris.target, iris.data], axis=1).iloc[[3, 45, 60, 99, 120, 149]]


@pytest.fixture(scope="module")
def estimator(
    session: Session, tmp_path_factory: pytest.TempPathFactory, held_out: pd.DataFrame
) -> SKLearn:
    """The script-mode script, trained once on iris without the held-out rows."""
    data = tmp_path_factory.mktemp("iris")
    iris = load_iris(as_frame=True)
    frame = pd.concat([iris.target, iris.data], axis=1).drop(index=held_out.index)
    frame.to_csv(data / "iris.csv", header=False, index=False)
    train_uri = session.upload_data(str(data), key_prefix="toolkits/data")
    estimator = SKLearn(
        entry_point="iris_script_mode.py",
        source_dir=str(SCRIPTS),
        hyperparameters=HYPERPARAMETERS,
        session=session,
    )
    estimator.fit({"train": train_uri}, logs=False)
    return estimator


def _model_folder(session: Session, model_uri: str, folder: Path) -> Path:
    (archive,) = session.download_data(folder / "artifacts", model_uri)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(folder / "model", filter="data")
    return folder / "model"


def test_both_toolkits_read_the_jobs_configuration(
    session: Session, estimator: SKLearn, tmp_path: Path
) -> None:
    # The script asserted that both toolkits and the SM_* variables agree; this is what they read.
    model = _model_folder(session, str(estimator.model_data), tmp_path)
    report = json.loads((model / "environment.json").read_text())
    read = report["toolkit"]
    assert read["hyperparameters"] == HYPERPARAMETERS  # decoded, no sagemaker_* entries
    assert read["hosts"] == ["algo-1"]
    assert read["current_host"] == "algo-1"
    assert read["module_name"] == "iris_script_mode"
    assert read["user_entry_point"] == "iris_script_mode.py"
    assert list(read["channel_input_dirs"]) == ["train"]
    assert read["channel_input_dirs"]["train"].endswith("/input/data/train")
    assert read["model_dir"].endswith("/model")
    assert read["output_data_dir"].endswith("/output/data")
    assert read["num_cpus"] >= 1 and read["num_gpus"] == 0
    assert report["boto3"].startswith("1.")


def test_worker_response_handler_answers_csv_as_the_model_predicts(
    session: Session,
    control: ServiceProcess,
    estimator: SKLearn,
    held_out: pd.DataFrame,
    tmp_path: Path,
) -> None:
    trained = joblib.load(
        _model_folder(session, str(estimator.model_data), tmp_path) / "model.joblib"
    )
    rows = held_out.iloc[:, 1:].to_numpy()
    expected = trained.predict(rows)
    predictor = estimator.deploy(initial_instance_count=1)
    try:
        name = predictor.endpoint_name
        body = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows)
        answer, content_type = session.invoke_endpoint(name, body, "text/csv", accept="text/csv")
        assert answer == "".join(f"{label}\n" for label in expected).encode()
        assert content_type == "text/csv; charset=utf-8"  # what Flask sends for text/csv
        # The same handler writes the other types through the legacy encoders.
        answer, content_type = session.invoke_endpoint(name, body, "text/csv", "application/json")
        assert (json.loads(answer), content_type) == (expected.tolist(), "application/json")
        # And a type the script refuses is a model error naming its output_fn.
        with pytest.raises(ModelError, match="output_fn raised ValueError: text/html accept"):
            session.invoke_endpoint(name, body, "text/csv", "text/html")
        assert _logs_say_runtime(control, f"logs/endpoints/{name}/*.log")
    finally:
        predictor.delete_endpoint()
        predictor.delete_model()


def test_output_fn_returning_a_dict_answers_json(
    session: Session, estimator: SKLearn, held_out: pd.DataFrame, tmp_path: Path
) -> None:
    rows = held_out.iloc[:, 1:].to_numpy()
    trained = joblib.load(
        _model_folder(session, str(estimator.model_data), tmp_path) / "model.joblib"
    )
    model = SKLearnModel(
        str(estimator.model_data),
        entry_point="json_predictions.py",
        source_dir=str(SCRIPTS),
        session=session,
    )
    predictor = model.deploy(
        initial_instance_count=1, serializer=CSVSerializer(), deserializer=JSONDeserializer()
    )
    try:
        answer = predictor.predict(rows)
        assert answer == {
            "predictions": trained.predict(rows).tolist(),
            "accept": "application/json",
        }
        _, content_type = session.invoke_endpoint(
            predictor.endpoint_name, "5.1,3.5,1.4,0.2", "text/csv", accept="text/csv"
        )
        assert content_type == "application/json"  # a dict is JSON whatever was asked
    finally:
        predictor.delete_endpoint()
        predictor.delete_model()


def _logs_say_runtime(control: ServiceProcess, pattern: str) -> bool:
    """Whether a worker log under the control's data folder names the script runtime."""
    data_dir = Path(control.port_file).parent.parent / "data"
    runtime = choose_python().runtime
    return any(
        f"user code runs on script runtime {runtime}" in path.read_text()
        for path in data_dir.glob(pattern)
    )


def test_batch_transform_runs_the_worker_response_handler(
    session: Session,
    control: ServiceProcess,
    estimator: SKLearn,
    held_out: pd.DataFrame,
    tmp_path: Path,
) -> None:
    rows = held_out.iloc[:, 1:].to_numpy()
    trained = joblib.load(
        _model_folder(session, str(estimator.model_data), tmp_path) / "model.joblib"
    )
    data = tmp_path / "batch"
    data.mkdir()
    held_out.iloc[:, 1:].to_csv(data / "rows.csv", header=False, index=False)
    input_uri = session.upload_data(str(data), key_prefix="toolkits/batch")
    transformer = estimator.transformer(instance_count=1, accept="text/csv", assemble_with="Line")
    transformer.transform(input_uri, content_type="text/csv", split_type="Line")
    target = tmp_path / "outputs"
    session.download_data(target, transformer.output_path)
    (output,) = [path for path in target.rglob("*.out")]
    assert output.read_text() == "".join(f"{label}\n" for label in trained.predict(rows))
    assert _logs_say_runtime(control, "logs/batch-*.log")
    session.delete_model(transformer.model_name)
