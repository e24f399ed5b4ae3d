"""A SageMaker notebook's driver code, run unchanged against the embedded control (issue 12).

The cells below are written as SageMaker SDK v2 notebooks write them (the public examples'
scikit-learn notebooks): S3 paths built from `default_bucket()`, an estimator with AWS-only
arguments (and SDK v1's `script_mode=True`), `code_location`/`output_path` in that bucket,
`Predictor(name, sagemaker_session=..., serializer=CSVSerializer())`, boto3's
`invoke_endpoint(...)["Body"].read()`, `download_data(path, bucket, key_prefix)` of the model
artifact, `except ValueError` around a failing `fit`, and `delete_model()` before
`delete_endpoint()`. Only the imports differ from SageMaker (`from skmaker import ...`). The
answers must equal the trained model's own predictions, also from a replica started after the
model was deleted.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker import (
    Predictor,
    Session,
    SKLearn,
    SKLearnPredictor,
    TrainingInput,
    get_execution_role,
)
from skmaker.boto import ClientError
from skmaker.serializers import CSVSerializer
from tests.harness import REPO_ROOT, ServiceProcess, run_service

# The notebook asks for framework_version="1.2-1": its script trains on runtime sklearn-1.2.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("oldest_and_newest_runtimes")]

EXAMPLE_DIR = REPO_ROOT / "examples" / "iris"
ROLE = "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole"


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The embedded control (`--local`: trainer and replicas are its children)."""
    service = run_service(
        "control", tmp_path / "control", ["--local", "--data-dir", str(tmp_path / "data")]
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def notebook_env(control: ServiceProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user exports before starting the notebook: where skmaker is."""
    monkeypatch.setenv("SKMAKER_ADDRESS", control.address)
    for name in (
        "SKMAKER_TOKEN",
        "SKMAKER_TLS_CA",
        "SKMAKER_GATEWAY_ADDRESS",
        "SKMAKER_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)


def _write_iris(folder: Path) -> pd.DataFrame:
    """The training CSV (label first, no header) without 10 rows of each species; returns them."""
    iris = load_iris(as_frame=True)
    frame = pd.concat([iris.target, iris.data], axis=1)
    held_out = [species * 50 + row for species in range(3) for row in range(40, 50)]
    folder.mkdir(parents=True)
    frame.drop(index=held_out).to_csv(folder / "iris.csv", header=False, index=False)
    return frame.loc[held_out]


def _predict_on(python: str, archive: Path, rows: Any) -> Any:
    """What the model in `archive` predicts for `rows`, asked of another runtime's `python`."""
    code = (
        "import io, json, sys, tarfile, joblib\n"
        "member = tarfile.open(sys.argv[1]).extractfile('model.joblib')\n"
        "model = joblib.load(io.BytesIO(member.read()))\n"
        "print(json.dumps(model.predict(json.loads(sys.stdin.read())).tolist()))\n"
    )
    done = subprocess.run(
        [python, "-c", code, str(archive)],
        input=json.dumps(rows.tolist()),
        capture_output=True,
        text=True,
        check=True,
    )
    return np.asarray(json.loads(done.stdout))


def test_a_sagemaker_notebook_runs_unchanged(
    notebook_env: None,
    control: ServiceProcess,
    tmp_path: Path,
    oldest_and_newest_runtimes: dict[str, str],
) -> None:
    test_data = _write_iris(tmp_path / "iris")
    test_X = test_data.iloc[:, 1:]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")

        # -- the notebook ------------------------------------------------------------------
        sagemaker_session = Session()
        role = get_execution_role()
        bucket = sagemaker_session.default_bucket()
        prefix = "DEMO-scikit-iris"
        region = sagemaker_session.boto_region_name
        sagemaker_session.upload_data(
            str(tmp_path / "iris"), bucket=bucket, key_prefix=f"{prefix}/train"
        )
        train_input = TrainingInput(f"s3://{bucket}/{prefix}/train", content_type="text/csv")

        sklearn = SKLearn(
            entry_point="scikit_learn_iris.py",
            source_dir=str(EXAMPLE_DIR),
            framework_version="1.2-1",
            py_version="py3",
            instance_type="ml.c5.xlarge",
            role=role,
            script_mode=True,  # SDK v1's flag, still in many notebooks
            hyperparameters={"max_leaf_nodes": 30},
            output_path=f"s3://{bucket}/{prefix}/output",
            code_location=f"s3://{bucket}/{prefix}/code",
            sagemaker_session=sagemaker_session,
        )
        sklearn.fit({"train": train_input}, logs=False)
        job_name = sklearn.latest_training_job.name

        sm_client = sagemaker_session.sagemaker_client
        job = sm_client.describe_training_job(TrainingJobName=job_name)
        artifact = job["ModelArtifacts"]["S3ModelArtifacts"]

        predictor = sklearn.deploy(initial_instance_count=1, instance_type="ml.m5.large")
        endpoint_name = predictor.endpoint_name
        numpy_predictions = predictor.predict(test_X.values)

        csv_predictor = Predictor(
            endpoint_name, sagemaker_session=sagemaker_session, serializer=CSVSerializer()
        )
        raw_answer = csv_predictor.predict(test_X.values)

        runtime = sagemaker_session.sagemaker_runtime_client
        payload = test_X.to_csv(header=False, index=False)
        response = runtime.invoke_endpoint(
            EndpointName=endpoint_name, ContentType="text/csv", Accept="text/csv", Body=payload
        )
        csv_answer = response["Body"].read().decode("utf-8")

        batch_dir = tmp_path / "batch"
        batch_dir.mkdir()
        test_X.to_csv(batch_dir / "test.csv", header=False, index=False)
        sagemaker_session.upload_data(str(batch_dir), bucket=bucket, key_prefix=f"{prefix}/batch")
        transformer = sklearn.transformer(
            instance_count=1,
            instance_type="ml.m5.large",
            accept="text/csv",
            assemble_with="Line",
            output_path=f"s3://{bucket}/{prefix}/batch-output",
        )
        transformer.transform(
            f"s3://{bucket}/{prefix}/batch", content_type="text/csv", split_type="Line"
        )
        transformer.wait(logs=False)
        sagemaker_session.download_data(
            str(tmp_path / "batch-output"), bucket, f"{prefix}/batch-output"
        )
        transformer.delete_model()

        local_artifacts = tmp_path / "artifacts"
        sagemaker_session.download_data(
            path=str(local_artifacts),
            bucket=bucket,
            key_prefix=f"{prefix}/output/{job_name}/output/model.tar.gz",
        )

        failing = SKLearn(
            entry_point="scikit_learn_iris.py",
            source_dir=str(EXAMPLE_DIR),
            hyperparameters={"criterion": "no-such-criterion"},
            role=role,
            instance_type="ml.c5.xlarge",
            sagemaker_session=sagemaker_session,
        )
        try:
            failing.fit({"train": train_input}, logs=False)
            failure = ""
        except ValueError as error:
            failure = str(error)

        predictor.delete_model()
        after_delete = runtime.invoke_endpoint(
            EndpointName=endpoint_name, ContentType="text/csv", Body=payload
        )["Body"].read()
        predictor.update_endpoint(initial_instance_count=2)  # a scale-out after the deletion
        endpoint = sm_client.describe_endpoint(EndpointName=endpoint_name)
        scaled_answers = [csv_predictor.predict(test_X.values) for _ in range(6)]
        predictor.delete_endpoint()
        sm_client.get_waiter("endpoint_deleted").wait(EndpointName=endpoint_name)
        # -- end of the notebook -----------------------------------------------------------

    # The first estimator warned once about all it ignores, script_mode among them.
    messages = [str(w.message) for w in warned]
    unknown = [m for m in messages if "SKLearn() does not know: script_mode" in m]
    assert len(unknown) == 1, messages
    assert "SageMaker-only arguments: instance_type" in unknown[0]
    assert region == "local"

    # The s3:// paths were the store: code, output and data where the notebook put them.
    assert artifact == f"store://{prefix}/output/{job_name}/output/model.tar.gz"
    spec = job["AlgorithmSpecification"]
    assert spec["SourceUri"] == f"store://{prefix}/code/{job_name}/source/sourcedir.tar.gz"
    channel = job["InputDataConfig"][0]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"store://{prefix}/train"
    assert (channel["ContentType"], job["EnableNetworkIsolation"]) == ("text/csv", False)
    assert job["TrainingJobArn"] == f"arn:aws:sagemaker:local:000000000000:training-job/{job_name}"
    assert job["ResponseMetadata"]["HTTPStatusCode"] == 200

    # Every answer equals the trained model's own predictions, made on scikit-learn 1.2 as the
    # notebook asked (this environment's newer scikit-learn cannot load that pickle).
    (archive,) = list(local_artifacts.iterdir())
    assert archive.name == "model.tar.gz"
    expected = _predict_on(oldest_and_newest_runtimes["sklearn-1.2"], archive, test_X.values)
    assert isinstance(predictor, SKLearnPredictor)
    np.testing.assert_array_equal(numpy_predictions, expected)
    assert isinstance(raw_answer, bytes)  # the base Predictor: bytes, the default accept (JSON)
    assert json.loads(raw_answer) == expected.tolist()
    assert response["ContentType"] == "text/csv"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert [int(float(v)) for v in csv_answer.split()] == expected.tolist()
    batch_output = (tmp_path / "batch-output" / "test.csv.out").read_text()
    assert [int(float(v)) for v in batch_output.split()] == expected.tolist()
    with pytest.raises(ClientError):  # the transformer's model is gone, as in SageMaker
        sm_client.describe_model(ModelName=transformer.model_name)

    # The failing fit raised the SDK's exception, caught as the ValueError it is.
    assert failure.startswith("Error for Training job sagemaker-scikit-learn-"), failure
    assert "Failed" in failure

    # Deleting the model left the endpoint serving it, on a replica started afterwards too.
    assert json.loads(after_delete) == expected.tolist()
    serving = [r for r in endpoint["Replicas"] if r["State"] == "Serving"]
    assert (endpoint["EndpointStatus"], len(serving)) == ("InService", 2), endpoint
    assert all(json.loads(answer) == expected.tolist() for answer in scaled_answers)
    events = [event["Message"] for event in endpoint["Events"]]
    assert any("deleted; this endpoint keeps serving it" in event for event in events), events
    with pytest.raises(ClientError) as gone:
        sm_client.describe_model(ModelName=endpoint_name)
    assert gone.value.response["Error"]["Code"] == "ValidationException"


def test_boto3_hosting_cells_run_unchanged(
    notebook_env: None, control: ServiceProcess, tmp_path: Path
) -> None:
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)
    joblib.dump(model, tmp_path / "model.joblib")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model.joblib", arcname="model.joblib")
    with tarfile.open(tmp_path / "sourcedir.tar.gz", "w:gz") as tar:
        tar.add(EXAMPLE_DIR / "scikit_learn_iris.py", arcname="scikit_learn_iris.py")

    # -- the notebook: boto3 calls only, on the session's clients -----------------------------
    session = Session()
    bucket = session.default_bucket()
    session.upload_data(str(tmp_path / "model.tar.gz"), bucket, "boto-demo/model")
    session.upload_data(str(tmp_path / "sourcedir.tar.gz"), bucket, "boto-demo/code")
    sm = session.sagemaker_client
    runtime = session.sagemaker_runtime_client
    sm.create_model(
        ModelName="iris-boto",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1",
            "ModelDataUrl": f"s3://{bucket}/boto-demo/model/model.tar.gz",
            "Environment": {
                "SAGEMAKER_PROGRAM": "scikit_learn_iris.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": f"s3://{bucket}/boto-demo/code/sourcedir.tar.gz",
            },
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName="iris-boto-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "iris-boto",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName="iris-boto-ep", EndpointConfigName="iris-boto-config")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="iris-boto-ep")
    endpoint = sm.describe_endpoint(EndpointName="iris-boto-ep")
    response = runtime.invoke_endpoint(
        EndpointName="iris-boto-ep",
        ContentType="text/csv",
        Accept="application/json",
        Body=io.BytesIO(b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"),
    )
    answer = json.loads(response["Body"].read())
    with pytest.raises(ClientError) as refused:
        runtime.invoke_endpoint(
            EndpointName="iris-boto-ep", ContentType="text/csv", Body="1.0,2.0\n"
        )
    sm.delete_model(ModelName="iris-boto")
    sm.delete_endpoint(EndpointName="iris-boto-ep")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="iris-boto-ep")
    sm.delete_endpoint_config(EndpointConfigName="iris-boto-config")
    # -- end of the notebook -------------------------------------------------------------------

    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == "iris-boto-config"
    assert endpoint["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert answer == model.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]).tolist()
    assert response["ContentType"] == "application/json"
    # A payload of the wrong width is the handler's error: SageMaker Runtime's ModelError.
    assert refused.value.response["Error"]["Code"] == "ModelError"
    assert refused.value.response["OriginalStatusCode"] == 400
    assert sm.list_endpoints(NameContains="iris-boto")["Endpoints"] == []
