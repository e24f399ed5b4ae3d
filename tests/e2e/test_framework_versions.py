"""framework_version means something: each model trains and serves on its own scikit-learn.

One real `--local` control trains iris with `framework_version="1.2-1"` (the oldest runtime)
and with none (the newest). Each script prints the `sklearn.__version__` it runs on; the two
models are deployed at once and each endpoint's handler answers with its own version; a batch
transform of each model runs on its own runtime; after a restart of the control, the models,
the jobs and the endpoints' fresh replicas are still on their recorded runtimes. A version no
runtime serves is refused at create with the versions available (issue 16, acceptance 1-3).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_iris

from skmaker import InvalidArgument, Session, SKLearn
from skmaker.deserializers import JSONDeserializer
from skmaker.serializers import CSVSerializer
from tests.harness import ServiceProcess, run_service

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("oldest_and_newest_runtimes")]

# Trains and serves; both sides say which scikit-learn they run on.
SCRIPT = """\
import json
import os

import joblib
import sklearn


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def output_fn(prediction, accept):
    answer = {"sklearn": sklearn.__version__, "labels": [int(label) for label in prediction]}
    return json.dumps(answer), "application/json"


if __name__ == "__main__":
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    print(f"training on scikit-learn {sklearn.__version__}", flush=True)
    frame = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "iris.csv"), header=None)
    model = LogisticRegression(max_iter=500).fit(frame.iloc[:, 1:], frame.iloc[:, 0])
    joblib.dump(model, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
"""
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("framework-versions")


def _start(data_dir: Path, name: str) -> ServiceProcess:
    return run_service(
        "control",
        data_dir / name,
        ["--local", "--local-batch-idle-s", "0", "--data-dir", str(data_dir / "state")],
    )


@pytest.fixture(scope="module")
def code(data_dir: Path) -> Path:
    folder = data_dir / "code"
    folder.mkdir()
    (folder / "iris.py").write_text(SCRIPT)
    return folder


def _pins(runtimes: dict[str, str]) -> tuple[str, str]:
    """The scikit-learn versions the oldest and newest runtimes' locks pin."""
    from services.runtime.framework_versions import available

    found = {item.name: item.framework_version for item in available()}
    oldest, newest = sorted(runtimes, key=list(found).index)
    return found[oldest], found[newest]


def _log(session: Session, job_name: str) -> str:
    out = io.StringIO()
    session.logs_for_job(job_name, out=out)
    return out.getvalue()


def _answer(predictor: Any) -> dict[str, Any]:
    answer: dict[str, Any] = predictor.predict(ROWS)
    return answer


def test_each_model_trains_serves_and_scores_on_its_own_scikit_learn(
    data_dir: Path, code: Path, oldest_and_newest_runtimes: dict[str, str]
) -> None:
    old_version, new_version = _pins(oldest_and_newest_runtimes)
    assert old_version.startswith("1.2.") and old_version != new_version
    control = _start(data_dir, "control")
    try:
        with Session(control.address) as session:
            iris = load_iris(as_frame=True)
            train = data_dir / "train"
            train.mkdir()
            frame = iris.frame[["target", *iris.feature_names]]
            frame.to_csv(train / "iris.csv", header=False, index=False)
            train_uri = session.upload_data(str(train), key_prefix="fv/train")

            def estimator(**kwargs: str) -> SKLearn:
                return SKLearn("iris.py", source_dir=str(code), session=session, **kwargs)

            # Unservable versions are refused at create, naming those that can be had.
            with pytest.raises(InvalidArgument, match=r"'0\.23-1'.*1\.2-1 \(scikit-learn 1\.2"):
                estimator(framework_version="0.23-1").fit({"train": train_uri}, logs=False)

            old = estimator(framework_version="1.2-1")
            new = estimator()
            old.fit({"train": train_uri}, wait=False)
            new.fit({"train": train_uri}, wait=False)
            for trained, version in ((old, old_version), (new, new_version)):
                job = trained.latest_training_job
                assert job is not None
                described = session.wait_for_job(job.name)
                assert described["TrainingJobStatus"] == "Completed", described
                assert f"training on scikit-learn {version}" in _log(session, job.name)
                assert described["RuntimeVersions"]["ScikitLearn"] == version
            old_job = session.describe_training_job(old.latest_training_job.name)  # type: ignore[union-attr]
            assert (old_job["FrameworkVersion"], old_job["ScriptRuntime"]) == (
                "1.2-1",
                "sklearn-1.2",
            )

            # Both endpoints serve at once, each through its own scikit-learn.
            old_predictor = old.deploy(
                endpoint_name="fv-old", serializer=CSVSerializer(), deserializer=JSONDeserializer()
            )
            new_predictor = new.deploy(
                endpoint_name="fv-new", serializer=CSVSerializer(), deserializer=JSONDeserializer()
            )
            assert _answer(old_predictor) == {"sklearn": old_version, "labels": [0, 2]}
            assert _answer(new_predictor) == {"sklearn": new_version, "labels": [0, 2]}
            described = session.describe_endpoint("fv-old")
            # Served as trained: no event about a runtime that differs from the training one.
            assert not [e for e in described["Events"] if "serves model" in e["Message"]]
            model_name = described["ModelName"]
            assert session.describe_model(model_name)["ScriptRuntime"] == "sklearn-1.2"

            # A batch transform of each model scores on its runtime (batch workers per runtime).
            batch = data_dir / "batch"
            batch.mkdir()
            (batch / "rows.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in ROWS))
            batch_uri = session.upload_data(str(batch), key_prefix="fv/batch")
            for trained, version in ((old, old_version), (new, new_version)):
                transformer = trained.transformer(instance_count=1, assemble_with="Line")
                transformer.transform(batch_uri, content_type="text/csv", split_type="Line")
                out = data_dir / f"out-{version}"
                session.download_data(str(out), transformer.output_path)
                lines = (out / "rows.csv.out").read_text().splitlines()
                outputs = [json.loads(line) for line in lines if line]
                assert {answer["sklearn"] for answer in outputs} == {version}
                assert [label for answer in outputs for label in answer["labels"]] == [0, 2]
        control.stop(timeout_s=60)

        # A restarted control keeps every model, job and endpoint on its recorded runtime.
        control = _start(data_dir, "control-again")
        with Session(control.address) as session:
            assert session.describe_model(model_name)["ScriptRuntime"] == "sklearn-1.2"
            for endpoint, version in (("fv-old", old_version), ("fv-new", new_version)):
                session.wait_for_endpoint(endpoint)
                body, _ = session.invoke_endpoint(endpoint, "5.1,3.5,1.4,0.2\n", "text/csv")
                assert json.loads(body) == {"sklearn": version, "labels": [0]}
            session.delete_endpoint("fv-old")
            session.delete_endpoint("fv-new")
    finally:
        control.stop(timeout_s=60)
