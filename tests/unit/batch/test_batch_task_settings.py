"""The settings a worker applies travel as proto enums: what the control resolved is what runs."""

from __future__ import annotations

import pytest

from services.batch.control_link import shard_from_task
from services.control.hosting.model_values import Model
from services.control.transform.convert import transform_task_to_pb
from services.control.transform.jobs import TransformTaskPayload
from services.control.transform.values import TransformJobSpec
from skmaker.v1 import dispatch_pb2


def leased(spec: TransformJobSpec) -> dispatch_pb2.Task:
    payload = TransformTaskPayload(
        job_name="score",
        spec=spec,
        model=Model("m", "store://m/model.tar.gz", "inference.py", "", {}, "", 0.0),
        input_uri="store://in/a.csv",
        shard_index=0,
        start=0,
        end=-1,
        output_uri="store://out/a.csv.out",
        is_first_shard=True,
    )
    task = dispatch_pb2.Task(task_id="t-1", attempt=1)
    task.transform.CopyFrom(transform_task_to_pb(payload))
    return task


@pytest.mark.parametrize(
    ("split_type", "compression", "assemble_with"),
    [("None", "None", "None"), ("Line", "Gzip", "Line"), ("Line", "None", "None")],
)
def test_the_worker_applies_what_the_control_resolved(
    split_type: str, compression: str, assemble_with: str
) -> None:
    spec = TransformJobSpec(
        model_name="m",
        input_uri="store://in",
        split_type=split_type,
        compression_type=compression,
        assemble_with=assemble_with,
    )
    task = leased(spec)
    assert task.transform.split_type != dispatch_pb2.SPLIT_TYPE_UNSPECIFIED
    shard = shard_from_task(task)
    assert (shard.split_type, shard.compression, shard.assemble_with) == (
        split_type,
        compression,
        assemble_with,
    )


def test_the_worker_reads_the_enums_not_the_spec_strings() -> None:
    task = leased(TransformJobSpec(model_name="m", input_uri="store://in", split_type="Line"))
    task.transform.spec.split_type = "None"  # what the user asked is not what the worker applies
    assert shard_from_task(task).split_type == "Line"


def test_unset_enums_mean_sagemakers_defaults() -> None:
    task = leased(TransformJobSpec(model_name="m", input_uri="store://in"))
    task.transform.ClearField("split_type")
    task.transform.ClearField("compression")
    task.transform.ClearField("assemble_with")
    shard = shard_from_task(task)
    assert (shard.split_type, shard.compression, shard.assemble_with) == ("None", "None", "None")
