"""The SageMaker SDK surface of `Session` and its boto3-shaped client against a real control.

The control has no trainers, so created jobs stay queued: enough for the data calls
(`upload_data`/`download_data` in SageMaker's forms, `s3://<default bucket>/` paths), the
boto3-shaped training, model and tuning calls (responses, filters, pages, paginators) and the
errors boto3 code checks (`response["Error"]["Code"]`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_control import upload_bundle

from skmaker import NotFound, Session, TrainingInput
from skmaker.boto import ClientError
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

SCRIPT = {"train.py": "print('hello')\n", "serve.py": "def model_fn(model_dir):\n    return 1\n"}


@pytest.fixture(autouse=True)
def no_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SKMAKER_ADDRESS", "SKMAKER_TOKEN", "SKMAKER_TLS_CA", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SKMAKER_REGION", raising=False)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A control without trainers, shared by the module: created jobs stay queued."""
    workdir = tmp_path_factory.mktemp("control")
    service = run_service("control", workdir, ["--data-dir", str(workdir / "data")])
    yield service
    service.stop()


@pytest.fixture
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address, timeout_s=10) as client:
        yield client


def _folder(root: Path) -> Path:
    (root / "nested").mkdir(parents=True)
    (root / "a.csv").write_text("1,2\n")
    (root / "nested" / "b.csv").write_text("3,4\n")
    return root


def test_upload_and_download_in_sagemakers_forms(session: Session, tmp_path: Path) -> None:
    bucket = session.default_bucket()
    uri = session.upload_data(str(_folder(tmp_path / "data")), bucket, "sdk/data")
    assert uri == "store://sdk/data"  # upload_data keeps answering store:// URIs
    # SageMaker's download_data(path, bucket, key_prefix): a folder keeps its layout ...
    written = session.download_data(str(tmp_path / "out"), bucket, "sdk/data")
    assert [Path(p).relative_to(tmp_path / "out").as_posix() for p in written] == [
        "a.csv",
        "nested/b.csv",
    ]
    assert (tmp_path / "out" / "nested" / "b.csv").read_text() == "3,4\n"
    # ... one object lands under its base name; the URI forms name the same keys.
    (single,) = session.download_data(tmp_path / "one", bucket, key_prefix="sdk/data/a.csv")
    assert Path(single).read_text() == "1,2\n"
    (by_uri,) = session.download_data(tmp_path / "two", f"s3://{bucket}/sdk/data/nested")
    assert Path(by_uri).name == "b.csv"
    (by_store_uri,) = session.download_data(tmp_path / "three", "store://sdk/data/a.csv")
    assert Path(by_store_uri).read_text() == "1,2\n"
    with pytest.raises(NotFound, match="nothing stored"):
        session.download_data(tmp_path / "none", bucket, "sdk/missing")


def test_default_bucket_prefix_prefixes_uploads_without_a_bucket(
    control: ServiceProcess, tmp_path: Path
) -> None:
    (tmp_path / "f.csv").write_text("5\n")
    with Session(control.address, default_bucket_prefix="team-a") as prefixed:
        assert (
            prefixed.upload_data(tmp_path / "f.csv", key_prefix="in") == "store://team-a/in/f.csv"
        )
        # With the bucket named, the key is taken as it is, as in SageMaker.
        explicit = prefixed.upload_data(tmp_path / "f.csv", prefixed.default_bucket(), "in")
        assert explicit == "store://in/f.csv"


def test_training_jobs_through_the_boto3_client(session: Session, tmp_path: Path) -> None:
    bucket = session.default_bucket()
    source = upload_bundle(session, tmp_path, SCRIPT, "sdk/boto/code")
    session.upload_data(str(_folder(tmp_path / "data")), bucket, "sdk/boto/train")
    for index in range(3):
        session.create_training_job(
            f"boto-job-{index}",
            entry_point="train.py",
            source_uri=f"s3://{bucket}/sdk/boto/code/sourcedir.tar.gz",
            hyperparameters={"n": str(index)},
            channels={"train": TrainingInput(f"s3://{bucket}/sdk/boto/train", "x")},
            output_uri=f"s3://{bucket}/sdk/boto/output",
        )
    sm = session.sagemaker_client
    job = sm.describe_training_job(TrainingJobName="boto-job-1")
    assert job["TrainingJobStatus"] == "InProgress"
    assert job["TrainingJobArn"] == "arn:aws:sagemaker:local:000000000000:training-job/boto-job-1"
    assert job["AlgorithmSpecification"]["SourceUri"] == source
    assert job["OutputDataConfig"]["S3OutputPath"] == "store://sdk/boto/output"
    s3_source = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert s3_source["S3Uri"] == "store://sdk/boto/train"
    for key, value in {
        "EnableNetworkIsolation": False,
        "EnableInterContainerTrafficEncryption": False,
        "EnableManagedSpotTraining": False,
    }.items():
        assert job[key] is value, key
    assert job["LastModifiedTime"] >= job["CreationTime"]
    assert job["ResponseMetadata"]["HTTPStatusCode"] == 200

    listed = sm.list_training_jobs(NameContains="oto-job", MaxResults=2, SortBy="Name")
    assert [s["TrainingJobName"] for s in listed["TrainingJobSummaries"]] == [
        "boto-job-2",
        "boto-job-1",
    ]
    rest = sm.list_training_jobs(
        NameContains="oto-job", MaxResults=2, SortBy="Name", NextToken=listed["NextToken"]
    )
    assert [s["TrainingJobName"] for s in rest["TrainingJobSummaries"]] == ["boto-job-0"]
    assert "NextToken" not in rest
    pages = sm.get_paginator("list_training_jobs").paginate(
        NameContains="boto-job", SortOrder="Ascending", PaginationConfig={"PageSize": 1}
    )
    names = [s["TrainingJobName"] for page in pages for s in page["TrainingJobSummaries"]]
    assert names == ["boto-job-0", "boto-job-1", "boto-job-2"]

    assert sm.stop_training_job(TrainingJobName="boto-job-0")["ResponseMetadata"]
    stopped = sm.describe_training_job(TrainingJobName="boto-job-0")["TrainingJobStatus"]
    assert stopped in ("Stopping", "Stopped")


def test_errors_carry_boto3s_codes(session: Session) -> None:
    sm = session.sagemaker_client
    with pytest.raises(ClientError) as missing:
        sm.describe_training_job(TrainingJobName="never-created")
    assert missing.value.response["Error"]["Code"] == "ValidationException"
    assert missing.value.operation_name == "DescribeTrainingJob"
    assert isinstance(missing.value, NotFound)  # skmaker's own class catches it too
    with pytest.raises(ClientError) as no_tuning:
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="never-created")
    assert no_tuning.value.response["Error"]["Code"] == "ResourceNotFound"
    with pytest.raises(ClientError) as no_endpoint:
        session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName="never-created", ContentType="text/csv", Body="1,2"
        )
    assert no_endpoint.value.response["Error"]["Code"] == "ValidationException"


def test_models_through_the_boto3_client(session: Session, tmp_path: Path) -> None:
    bucket = session.default_bucket()
    (tmp_path / "model.tar.gz").write_bytes(b"an archive")
    session.upload_data(tmp_path / "model.tar.gz", bucket, "sdk/models/m1")
    source = upload_bundle(session, tmp_path, SCRIPT, "sdk/models/code")
    sm = session.sagemaker_client
    created = sm.create_model(
        ModelName="boto-model",
        ExecutionRoleArn="arn:aws:iam::1:role/r",
        PrimaryContainer={
            "Image": "ignored",
            "ModelDataUrl": f"s3://{bucket}/sdk/models/m1/model.tar.gz",
            "Environment": {
                "SAGEMAKER_PROGRAM": "serve.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": source,
                "GREETING": "hi",
            },
        },
    )
    assert created["ModelArn"].endswith(":model/boto-model")
    described = sm.describe_model(ModelName="boto-model")
    container = described["PrimaryContainer"]
    assert container["ModelDataUrl"] == "store://sdk/models/m1/model.tar.gz"
    assert container["Environment"] == {
        "GREETING": "hi",
        "SAGEMAKER_PROGRAM": "serve.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": source,
    }
    assert described["EnableNetworkIsolation"] is False
    models = sm.list_models(NameContains="boto-mod")["Models"]
    assert [m["ModelName"] for m in models] == ["boto-model"]
    sm.delete_model(ModelName="boto-model")
    with pytest.raises(ClientError, match="not found"):
        sm.describe_model(ModelName="boto-model")
    with pytest.raises(ClientError, match="SAGEMAKER_PROGRAM"):
        sm.create_model(ModelName="no-program", PrimaryContainer={"ModelDataUrl": "x"})


def test_sagemakers_s3_helpers_read_and_write_the_store(session: Session, tmp_path: Path) -> None:
    from skmaker.s3 import S3Downloader, S3Uploader

    bucket = session.default_bucket()
    base = f"s3://{bucket}/sdk/helpers"
    uploaded = S3Uploader.upload(str(_folder(tmp_path / "data")), base, sagemaker_session=session)
    assert uploaded == base
    note = S3Uploader.upload_string_as_file_body(
        "héllo\n", f"{base}/note.txt", sagemaker_session=session
    )
    assert note == f"{base}/note.txt"
    assert S3Downloader.list(base, sagemaker_session=session) == [
        f"{base}/a.csv",
        f"{base}/nested/b.csv",
        f"{base}/note.txt",
    ]
    assert S3Downloader.list("store://sdk/helpers/nested", sagemaker_session=session) == [
        "store://sdk/helpers/nested/b.csv"
    ]
    assert S3Downloader.read_file(f"{base}/note.txt", sagemaker_session=session) == "héllo\n"
    written = S3Downloader.download(f"{base}/nested", tmp_path / "out", sagemaker_session=session)
    assert [Path(p).read_text() for p in written] == ["3,4\n"]
    # The Session methods underneath, as SageMaker's.
    assert session.list_s3_files(bucket, "sdk/helpers/nested") == ["sdk/helpers/nested/b.csv"]
    assert session.read_s3_file(bucket, "sdk/helpers/a.csv") == "1,2\n"
    with pytest.raises(NotFound):
        session.read_s3_file(bucket, "sdk/helpers/missing.txt")


def test_the_control_takes_s3_uris_of_the_default_bucket_on_the_wire(
    control: ServiceProcess, tmp_path: Path
) -> None:
    # What a grpcurl user sends: no client mapping in between (raw stubs).
    import grpc

    from skmaker.v1 import (
        artifacts_pb2_grpc,
        training_job_pb2,
        training_pb2,
        training_pb2_grpc,
        transfer,
    )

    with grpc.insecure_channel(control.address) as channel:
        artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        training = training_pb2_grpc.TrainingServiceStub(channel)
        (tmp_path / "a.csv").write_text("1,2\n")
        info = transfer.upload_file(artifacts, tmp_path / "a.csv", "s3://skmaker/wire/data/a.csv")
        assert info.uri == "store://wire/data/a.csv"
        listed = transfer.list_artifacts(artifacts, "s3://skmaker/wire")
        assert [i.uri for i in listed] == ["store://wire/data/a.csv"]
        with Session(control.address) as session:
            source = upload_bundle(session, tmp_path, SCRIPT, "wire/code")
        spec = training_job_pb2.TrainingJobSpec(
            entry_point="train.py",
            source_uri="s3://skmaker/" + source.removeprefix("store://"),
            channels=[training_job_pb2.Channel(name="train", uri="s3://skmaker/wire/data")],
            output_uri="s3://skmaker/wire/output",
        )
        created = training.CreateTrainingJob(
            training_pb2.CreateTrainingJobRequest(name="wire-job", spec=spec), timeout=10
        ).training_job
        assert created.spec.source_uri == source
        assert created.spec.channels[0].uri == "store://wire/data"
        assert created.spec.output_uri == "store://wire/output"
        with pytest.raises(grpc.RpcError) as other_bucket:
            transfer.list_artifacts(artifacts, "s3://another-bucket/wire")
        assert other_bucket.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_create_training_job_in_the_sdks_form(session: Session, tmp_path: Path) -> None:
    # What the SageMaker SDK's framework estimators send: the script and its code archive in
    # the sagemaker_program / sagemaker_submit_directory hyperparameters, JSON-encoded.
    bucket = session.default_bucket()
    source = upload_bundle(session, tmp_path, SCRIPT, "sdk/create/code")
    session.upload_data(str(_folder(tmp_path / "data")), bucket, "sdk/create/train")
    sm = session.sagemaker_client
    answer = sm.create_training_job(
        TrainingJobName="sdk-form-job",
        AlgorithmSpecification={
            "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn",
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "acc", "Regex": "acc: ([0-9.]+)"}],
        },
        RoleArn="arn:aws:iam::1:role/r",
        HyperParameters={
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": f'"s3://{bucket}/sdk/create/code/sourcedir.tar.gz"',
            "max_leaf_nodes": "30",
        },
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3Uri": f"s3://{bucket}/sdk/create/train"}},
                "ContentType": "text/csv",
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/sdk/create/output"},
        ResourceConfig={"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    assert answer["TrainingJobArn"].endswith(":training-job/sdk-form-job")
    job = sm.describe_training_job(TrainingJobName="sdk-form-job")
    algorithm = job["AlgorithmSpecification"]
    assert (algorithm["EntryPoint"], algorithm["SourceUri"]) == ("train.py", source)
    assert algorithm["MetricDefinitions"] == [{"Name": "acc", "Regex": "acc: ([0-9.]+)"}]
    assert job["HyperParameters"]["max_leaf_nodes"] == "30"
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 600
    assert job["InputDataConfig"][0]["ContentType"] == "text/csv"
    with pytest.raises(ClientError) as bad_token:
        sm.list_training_jobs(NextToken="not-a-token")
    assert bad_token.value.response["Error"]["Code"] == "ValidationException"
    assert bad_token.value.operation_name == "ListTrainingJobs"
