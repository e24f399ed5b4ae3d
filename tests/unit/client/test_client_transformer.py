"""The transformer's client-side rules and the DescribeTransformJob shape, without a server.

What a transform job does is tested against the real control in
tests/e2e/test_batch_transform.py; here only what the client decides alone: checks made
before any call (a Session to an unreachable address proves none is made) and the dicts built
from wire messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2

from skmaker import Session, Transformer, UnexpectedStatusException
from skmaker.transform_descriptions import transform_job_description, transform_job_summary
from skmaker.v1 import transform_job_pb2

# Nothing listens here: a call would fail with Unavailable, not with the errors tested.
UNREACHABLE = "127.0.0.1:1"


@pytest.fixture
def offline() -> Iterator[Session]:
    with Session(UNREACHABLE, token="", timeout_s=1) as session:
        yield session


def _stamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def test_local_paths_and_manifest_files_are_refused_before_any_call(offline: Session) -> None:
    transformer = Transformer("m", session=offline)
    with pytest.raises(ValueError, match=r"upload local files with Session\.upload_data"):
        transformer.transform("data/batch.csv")
    with pytest.raises(ValueError, match="ManifestFile"):
        transformer.transform("store://x", data_type="ManifestFile")
    with pytest.raises(ValueError, match="invalid job name"):
        transformer.transform("store://x", job_name="bad_name")
    assert transformer.latest_transform_job is None


def test_wait_and_stop_need_a_job(offline: Session) -> None:
    transformer = Transformer("m", session=offline)
    with pytest.raises(ValueError, match="call transform"):
        transformer.wait()
    with pytest.raises(ValueError, match="call transform"):
        transformer.stop_transform_job()


def test_sagemaker_only_arguments_warn_once_and_keep_positions(offline: Session) -> None:
    with pytest.warns(UserWarning, match="instance_type, tags") as caught:
        transformer = Transformer(
            "m", 2, "ml.m5.xlarge", "SingleRecord", "Line", tags=[{"Key": "k"}], session=offline
        )
    assert len(caught) == 1
    assert (transformer.instance_count, transformer.strategy) == (2, "SingleRecord")
    assert transformer.assemble_with == "Line"
    assert transformer.output_path is None


def test_a_transform_job_failure_reads_as_sagemakers() -> None:
    error = UnexpectedStatusException.for_transform_job("j", "Failed", "store://in/a.csv: line 7")
    assert str(error) == "Error for Transform job j: Failed. Reason: store://in/a.csv: line 7"
    assert (error.job_name, error.failure_reason) == ("j", "store://in/a.csv: line 7")


def test_description_is_shaped_like_describe_transform_job() -> None:
    job = transform_job_pb2.TransformJob(
        name="j",
        status=transform_job_pb2.TRANSFORM_JOB_STATUS_FAILED,
        failure_reason="1 of 2 input files failed",
        spec=transform_job_pb2.TransformJobSpec(
            model_name="m",
            input_uri="store://in",
            output_uri="store://out",
            content_type="text/csv",
            split_type="Line",
            batch_strategy="MultiRecord",
            max_payload_mb=6,
            max_concurrent_transforms=1,
            assemble_with="Line",
            compression_type="None",
            data_processing=transform_job_pb2.DataProcessing(join_source="Input"),
            instance_count=2,
        ),
        files=[
            transform_job_pb2.TransformFile(
                input_uri="store://in/a.csv",
                output_uri="store://out/a.csv.out",
                bytes_total=10,
                bytes_done=10,
                records_done=3,
                status="Completed",
            ),
            transform_job_pb2.TransformFile(
                input_uri="store://in/b.csv",
                bytes_total=20,
                bytes_done=4,
                records_done=1,
                status="Failed",
                failure_reason="store://in/b.csv: line 2: bad",
            ),
        ],
        shards_total=3,
        shards_done=2,
        creation_time=_stamp(100),
        transform_start_time=_stamp(101),
    )
    description = transform_job_description(job)
    assert description["TransformJobStatus"] == "Failed"
    assert description["FailureReason"] == "1 of 2 input files failed"
    assert description["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == "store://in"
    assert "Accept" not in description["TransformOutput"]  # left to the model, as boto3 omits it
    assert (description["BatchStrategy"], description["MaxPayloadInMB"]) == ("MultiRecord", 6)
    assert description["MaxConcurrentTransforms"] == 1
    # Knobs the request left unset are omitted too: the model's execution_parameters_fn or
    # the defaults decide them when the job runs.
    job.spec.ClearField("batch_strategy")
    job.spec.ClearField("max_payload_mb")
    job.spec.ClearField("max_concurrent_transforms")
    unset = transform_job_description(job)
    assert not {"BatchStrategy", "MaxPayloadInMB", "MaxConcurrentTransforms"} & set(unset)
    assert description["TransformOutput"]["AssembleWith"] == "Line"
    assert description["DataProcessing"] == {
        "InputFilter": "$",
        "OutputFilter": "$",
        "JoinSource": "Input",
    }
    assert description["TransformResources"]["InstanceCount"] == 2
    assert description["CreationTime"] == datetime.fromtimestamp(100, UTC)
    assert "TransformEndTime" not in description
    first, second = description["Files"]
    assert first["OutputUri"] == "store://out/a.csv.out"
    assert "FailureReason" not in first
    assert "OutputUri" not in second
    assert second["FailureReason"] == "store://in/b.csv: line 2: bad"
    assert (description["ShardsTotal"], description["ShardsDone"]) == (3, 2)
    assert transform_job_summary(job) == {
        "TransformJobName": "j",
        "TransformJobStatus": "Failed",
        "ModelName": "m",
        "FailureReason": "1 of 2 input files failed",
        "CreationTime": datetime.fromtimestamp(100, UTC),
    }


def test_unknown_transformer_arguments_warn_once_never_a_type_error() -> None:
    with pytest.warns(UserWarning) as warned:
        transformer = Transformer("m", 1, "ml.m5.large", max_paylod=5, sagemaker_session=None)
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "SageMaker-only arguments: instance_type" in message
    assert "max_paylod (did you mean max_payload?)" in message
    assert transformer.max_payload is None
