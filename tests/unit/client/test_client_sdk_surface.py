"""The SageMaker SDK surface of `Session` and the boto3-shaped clients, without a server.

What needs no call: `s3://<default bucket>/` URIs naming store keys, the session's SageMaker
attributes, the shape of `ClientError`, `StreamingBody`, paginators and waiters, and the
errors a notebook gets for what skmaker does not have. The same surface against real
processes is in tests/integration/client/test_sdk_surface_against_control.py and
tests/e2e/test_notebook_surface.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from skmaker import NotFound, Session, SkmakerClientError, UnexpectedStatusException, boto


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    for name in ("SKMAKER_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with Session("127.0.0.1:9") as client:  # nothing listens: no test here calls the server
        yield client


def test_s3_uris_of_the_default_bucket_name_store_keys() -> None:
    # Named here: without a name the session asks the control (see the integration tests).
    session = Session("127.0.0.1:9", default_bucket="skmaker")
    bucket = session.default_bucket()
    assert bucket == "skmaker"
    assert session.store_uri(f"s3://{bucket}/iris/train") == "store://iris/train"
    assert session.store_uri(f"s3://{bucket}/iris/train/") == "store://iris/train"
    assert session.store_key(f"s3://{bucket}/iris/model.tar.gz") == "iris/model.tar.gz"
    assert session.store_key("store://iris/train") == "iris/train"
    # Other URIs pass through; another bucket is a clear error, not a silent miss.
    assert session.store_uri("store://x") == "store://x"
    assert session.store_uri("file:///data/x") == "file:///data/x"
    assert session.store_uri("") == ""
    with pytest.raises(ValueError, match=r"bucket 'someone-elses'.*s3://skmaker/"):
        session.store_uri("s3://someone-elses/data")
    with pytest.raises(ValueError, match="bad artifact key"):
        session.store_key(f"s3://{bucket}/../etc")


def test_a_named_default_bucket_and_prefix(tmp_path: Any) -> None:
    with Session("127.0.0.1:9", default_bucket="my-bucket", default_bucket_prefix="/team/") as s:
        assert s.default_bucket() == "my-bucket"
        assert s.default_bucket_prefix == "team"
        assert s.store_uri("s3://my-bucket/a") == "store://a"
        with pytest.raises(ValueError, match="my-bucket"):
            s.store_uri("s3://skmaker/a")
        # upload_data and download_data refuse another bucket before any call.
        (tmp_path / "f.csv").write_text("1\n")
        with pytest.raises(ValueError, match="bucket 'other'"):
            s.upload_data(tmp_path / "f.csv", bucket="other")
        with pytest.raises(ValueError, match="bucket 'other'"):
            s.download_data(tmp_path, "other", "a")
        with pytest.raises(ValueError, match="either a URI or a bucket"):
            s.download_data(tmp_path, "store://a", "b")
    with pytest.raises(ValueError, match="not a bucket name"):
        Session("127.0.0.1:9", default_bucket="a/b")


def test_sagemaker_session_attributes(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    assert session.boto_region_name == "local"
    assert session.default_bucket_prefix is None
    assert session.arn("training-job", "Iris-1") == (
        "arn:aws:sagemaker:local:000000000000:training-job/iris-1"
    )
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with Session("127.0.0.1:9") as regional:
        assert regional.boto_region_name == "eu-west-1"
    # SageMaker's own Session arguments are accepted with one warning.
    with pytest.warns(UserWarning, match="boto_session"):
        Session("127.0.0.1:9", boto_session=object()).close()


def test_unexpected_status_is_a_value_error_as_in_the_sdk() -> None:
    error = UnexpectedStatusException("job-1", "Failed", "AlgorithmError: boom")
    assert isinstance(error, ValueError) and isinstance(error, SkmakerClientError)
    assert (error.actual_status, error.allowed_statuses) == ("Failed", ("Completed", "Stopped"))
    endpoint = UnexpectedStatusException.for_endpoint("ep", "Failed", "no model_fn")
    assert endpoint.allowed_statuses == ("InService",)
    with pytest.raises(ValueError, match="Error for Training job job-1: Failed"):
        raise error


def test_client_error_has_botos_shape_and_skmakers_class() -> None:
    error = boto._client_error(NotFound("training job 'x' not found"), "DescribeTrainingJob")
    assert isinstance(error, boto.ClientError) and isinstance(error, NotFound)
    assert error.response["Error"] == {
        "Code": "ValidationException",
        "Message": "training job 'x' not found",
    }
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error.operation_name == "DescribeTrainingJob"
    assert str(error) == (
        "An error occurred (ValidationException) when calling the DescribeTrainingJob "
        "operation: training job 'x' not found"
    )
    tuning = boto._client_error(NotFound("nope"), "DescribeHyperParameterTuningJob")
    assert tuning.response["Error"]["Code"] == "ResourceNotFound"


def test_a_handler_error_is_sagemaker_runtimes_model_error() -> None:
    from skmaker import InvalidArgument, ModelError

    refused = boto._client_error(
        InvalidArgument("unsupported content type a/b"), "InvokeEndpoint", from_model=True
    )
    assert refused.response["Error"]["Code"] == "ModelError"
    assert refused.response["OriginalStatusCode"] == 400
    assert "Received client error (400)" in refused.response["Error"]["Message"]
    raised = boto._client_error(ModelError("ValueError: boom"), "InvokeEndpoint", from_model=True)
    assert (raised.response["OriginalStatusCode"], raised.response["OriginalMessage"]) == (
        500,
        "ValueError: boom",
    )


def test_unknown_operations_and_waiters_name_themselves(session: Session) -> None:
    with pytest.raises(AttributeError, match="does not implement 'create_processing_job'"):
        session.sagemaker_client.create_processing_job(ProcessingJobName="p")
    with pytest.raises(AttributeError, match="sagemaker-runtime client does not implement"):
        session.sagemaker_runtime_client.invoke_endpoint_async(EndpointName="e")
    assert not hasattr(session.sagemaker_client, "create_auto_ml_job")
    with pytest.raises(AttributeError, match="no waiter 'notebook_instance_in_service'"):
        session.sagemaker_client.get_waiter("notebook_instance_in_service")
    assert session.sagemaker_client.can_paginate("list_training_jobs")
    assert not session.sagemaker_client.can_paginate("describe_training_job")


def test_invoke_endpoint_refuses_what_one_model_endpoints_lack(session: Session) -> None:
    with pytest.raises(boto.ClientError, match="one model in one variant") as refused:
        session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName="e", Body=b"1", TargetModel="m.tar.gz"
        )
    assert refused.value.response["Error"]["Code"] == "ValidationException"


def test_endpoint_configs_need_one_variant_with_a_model(session: Session) -> None:
    client = session.sagemaker_client
    with pytest.raises(boto.ClientError, match="one production variant"):
        client.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[])
    answer = client.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[{"ModelName": "m", "InstanceType": "ml.m5.large"}],
    )
    assert answer["EndpointConfigArn"].endswith(":endpoint-config/c")
    described = client.describe_endpoint_config(EndpointConfigName="c")
    assert described["ProductionVariants"][0]["InitialInstanceCount"] == 1
    with pytest.raises(boto.ClientError) as taken:
        client.create_endpoint_config(
            EndpointConfigName="c", ProductionVariants=[{"ModelName": "m"}]
        )
    assert taken.value.response["Error"]["Code"] == "ResourceInUse"
    client.delete_endpoint_config(EndpointConfigName="c")
    with pytest.raises(boto.ClientError, match="create_endpoint_config first"):
        client.create_endpoint(EndpointName="e", EndpointConfigName="c")


def test_streaming_body_reads_as_botocores() -> None:
    body = boto.StreamingBody(b"a,b\nc,d\n")
    assert body.read(2) == b"a,"
    assert list(body.iter_lines()) == [b"b", b"c,d"]
    assert list(boto.StreamingBody(b"abcde").iter_chunks(2)) == [b"ab", b"cd", b"e"]


def test_paginator_follows_next_token_and_honours_max_items() -> None:
    items = [{"Name": str(i)} for i in range(25)]

    def list_things(NextToken: str | None = None, MaxResults: int | None = None) -> dict:
        page, token = boto._page(items, NextToken, MaxResults)
        return {"Things": page, **({"NextToken": token} if token else {})}

    pages = list(boto.Paginator(list_things).paginate())
    assert [len(page["Things"]) for page in pages] == [10, 10, 5]
    sized = boto.Paginator(list_things).paginate(PaginationConfig={"PageSize": 20, "MaxItems": 5})
    assert [len(page["Things"]) for page in sized] == [20]


def test_waiter_stops_on_success_and_raises_on_failure() -> None:
    statuses = iter(["Creating", "Creating", "InService"])
    waiter = boto.Waiter(
        "endpoint_in_service",
        lambda **kwargs: {"EndpointStatus": next(statuses)},
        "EndpointStatus",
        frozenset({"InService"}),
        frozenset({"Failed"}),
    )
    waiter.wait(EndpointName="e", WaiterConfig={"Delay": 0.01})
    failing = boto.Waiter(
        "training_job_completed_or_stopped",
        lambda **kwargs: {"TrainingJobStatus": "Failed", "FailureReason": "boom"},
        "TrainingJobStatus",
        frozenset({"Completed"}),
        frozenset({"Failed"}),
    )
    with pytest.raises(boto.WaiterError, match="TrainingJobStatus is Failed \\(boom\\)") as failed:
        failing.wait(TrainingJobName="j")
    assert failed.value.last_response["FailureReason"] == "boom"
    never = boto.Waiter(
        "w", lambda **kwargs: {"S": "Creating"}, "S", frozenset({"Done"}), frozenset()
    )
    with pytest.raises(boto.WaiterError, match="Max attempts exceeded"):
        never.wait(WaiterConfig={"Delay": 0.01, "MaxAttempts": 3})


def test_s3_url_helpers_are_sagemakers() -> None:
    from skmaker.s3 import parse_s3_url, s3_path_join

    assert parse_s3_url("s3://skmaker/a/b.csv") == ("skmaker", "a/b.csv")
    with pytest.raises(ValueError, match="s3"):
        parse_s3_url("store://a")
    assert s3_path_join("s3://skmaker/", "/prefix/", "job", "") == "s3://skmaker/prefix/job"
    assert s3_path_join("prefix", "output") == "prefix/output"


def test_botocores_except_clauses_catch_ours_when_it_is_installed() -> None:
    # Skipped where botocore is not installed (the client does not depend on it).
    exceptions = pytest.importorskip("botocore.exceptions")
    error = boto._client_error(NotFound("model 'm' not found"), "DescribeModel")
    with pytest.raises(exceptions.ClientError) as caught:
        raise error
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.operation_name == "DescribeModel"
    assert isinstance(boto.WaiterError("w", "Max attempts exceeded", {}), exceptions.WaiterError)


def test_training_job_description_has_boto3s_keys_for_what_skmaker_knows() -> None:
    from datetime import UTC, datetime

    from google.protobuf import timestamp_pb2

    from skmaker.descriptions import training_job_description
    from skmaker.v1 import training_job_pb2

    def stamp(second: int) -> timestamp_pb2.Timestamp:
        message = timestamp_pb2.Timestamp()
        message.FromDatetime(datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC))
        return message

    job = training_job_pb2.TrainingJob(
        name="j",
        status=training_job_pb2.TRAINING_JOB_STATUS_COMPLETED,
        spec=training_job_pb2.TrainingJobSpec(
            entry_point="train.py",
            channels=[training_job_pb2.Channel(name="train", uri="store://d", content_type="x")],
        ),
        creation_time=stamp(1),
        training_start_time=stamp(2),
        training_end_time=stamp(9),
        secondary_status_transitions=[
            training_job_pb2.StatusTransition(
                status="Uploading", start_time=stamp(9), end_time=stamp(12)
            ),
        ],
        model_artifact_uri="store://j/model.tar.gz",
    )
    described = training_job_description(job)
    assert (
        described["EnableNetworkIsolation"],
        described["EnableInterContainerTrafficEncryption"],
        described["EnableManagedSpotTraining"],
    ) == (False, False, False)
    assert described["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert described["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] is False
    channel = described["InputDataConfig"][0]
    assert (channel["CompressionType"], channel["RecordWrapperType"]) == ("None", "None")
    assert described["TrainingTimeInSeconds"] == described["BillableTimeInSeconds"] == 7
    assert described["LastModifiedTime"] == datetime(2026, 1, 1, 0, 0, 12, tzinfo=UTC)
    assert described["ModelArtifacts"] == {"S3ModelArtifacts": "store://j/model.tar.gz"}


def test_modeled_exceptions_and_meta_are_boto3s(session: Session) -> None:
    sm = session.sagemaker_client
    missing = boto._client_error(NotFound("nope"), "DescribeHyperParameterTuningJob")
    assert isinstance(missing, sm.exceptions.ResourceNotFound)
    assert isinstance(missing, sm.exceptions.ClientError) and isinstance(missing, NotFound)
    with pytest.raises(sm.exceptions.ResourceNotFound):
        raise missing
    from skmaker import AlreadyExists, ModelError

    taken = boto._client_error(AlreadyExists("model 'm' already exists"), "CreateModel")
    assert isinstance(taken, sm.exceptions.ResourceInUse)
    runtime = session.sagemaker_runtime_client
    raised = boto._client_error(ModelError("boom"), "InvokeEndpoint", from_model=True)
    assert isinstance(raised, runtime.exceptions.ModelError)
    assert not isinstance(raised, sm.exceptions.ResourceNotFound)
    assert (sm.meta.region_name, runtime.meta.service_name) == ("local", "sagemaker-runtime")


def test_get_execution_role_keeps_role_cells_running() -> None:
    from skmaker import SKLearnModel, get_execution_role

    role = get_execution_role()
    assert role == "arn:aws:iam::000000000000:role/skmaker"
    with pytest.warns(UserWarning, match="SageMaker-only arguments: role"):
        SKLearnModel("store://m/model.tar.gz", role, "inference.py")


def test_arguments_refused_before_any_call_are_validation_exceptions(session: Session) -> None:
    with pytest.raises(boto.ClientError) as refused:
        session.sagemaker_client.list_training_jobs(StatusEquals="Done")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "unknown training job status 'Done'" in refused.value.response["Error"]["Message"]
