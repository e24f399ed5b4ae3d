"""Transform job values: what a user asks to score, and the job, file and shard state kept for it.

A transform job scores every object under its input URI (contract §4). The control cuts the
objects into shards (`shards.plan_shards`): whole files, and a large Line-split
file into byte ranges on line boundaries. Each shard is one task of the scheduler. A file is
`Pending` until one of its shards is leased, `InProgress` while shards run, `Assembling` once
every shard is done (its `.out` is being concatenated from the shard outputs), then `Completed`;
a shard that fails makes its file `Failed`, and a stop leaves unfinished files `Stopped`.
`Assembling` is internal: the wire shows it as `InProgress`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from services.control.hosting.model_values import Model
from services.control.training.values import RuntimeVersions

# SageMaker's defaults (contract §4.2), applied by the batch worker when neither the request
# nor the model's execution_parameters_fn sets a value.
DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_MAX_CONCURRENT_TRANSFORMS = 1


class TransformJobStatus(enum.StrEnum):
    """SageMaker's TransformJobStatus values."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"

    @property
    def is_terminal(self) -> bool:
        """True for Completed, Failed and Stopped."""
        return self in (self.COMPLETED, self.FAILED, self.STOPPED)


class FileStatus(enum.StrEnum):
    """Where one input file is."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    ASSEMBLING = "Assembling"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def is_terminal(self) -> bool:
        """True for Completed, Failed and Stopped."""
        return self in (self.COMPLETED, self.FAILED, self.STOPPED)


class ShardStatus(enum.StrEnum):
    """Where one shard is: queued (`pending`), leased (`running`), or ended."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # Not needed any more: its file failed, or the job was stopped.
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        """True while the shard may still be scored (queued or leased)."""
        return self in (self.PENDING, self.RUNNING)


@dataclass(frozen=True)
class DataProcessing:
    """SageMaker's DataProcessing (contract §4.3); empty filters mean `$`."""

    input_filter: str = ""
    join_source: str = "None"
    output_filter: str = ""


@dataclass(frozen=True)
class TransformJobSpec:
    """What a user asks to score; stored with the defaults filled in by validation.

    BatchStrategy, MaxPayloadInMB and MaxConcurrentTransforms are stored as asked: empty and
    0 mean "unset", so the batch worker can apply SageMaker's precedence (the request, then
    the model's `execution_parameters_fn`, then the defaults; contract §4.2). Jobs created
    before kept the defaults filled in, which reads as "set" and behaves as it did.
    """

    model_name: str
    input_uri: str
    output_uri: str = ""
    content_type: str = ""
    accept: str = ""
    split_type: str = "None"
    batch_strategy: str = ""
    max_payload_mb: int = 0
    max_concurrent_transforms: int = 0
    assemble_with: str = "None"
    compression_type: str = "None"
    data_processing: DataProcessing = field(default_factory=DataProcessing)
    instance_count: int = 1
    environment: Mapping[str, str] = field(default_factory=dict)
    record_errors: bool = False
    skip_header: bool = False
    # Score on another scikit-learn than the model's runtime; empty: the model's.
    framework_version: str = ""


@dataclass(frozen=True)
class RecordError:
    """A record a shard could not score (per-record error mode): its line in the file, why."""

    line: int
    message: str


@dataclass(frozen=True)
class TransformFile:
    """One input object of a job, with its progress summed over its shards.

    Attributes:
        position: Its place in the job's input order, from 0.
        key: Its key relative to the input URI; the output keeps it (`<key>.out`).
        input_uri: `store://` URI of the object.
        size: Bytes, as listed when the job was created.
        status: See the module docstring.
        failure_reason: Why it failed, naming the line and the error.
        output_uri: Its `.out`, once assembled.
        errors_uri: Its errors file, with per-record errors and at least one bad record.
        records_done: Records scored so far.
        bytes_done: Input bytes scored so far.
        records_failed: Bad records reported (per-record error mode).
    """

    position: int
    key: str
    input_uri: str
    size: int
    status: FileStatus = FileStatus.PENDING
    failure_reason: str = ""
    output_uri: str = ""
    errors_uri: str = ""
    records_done: int = 0
    bytes_done: int = 0
    records_failed: int = 0


@dataclass(frozen=True)
class TransformShard:
    """One shard: a byte range of one input file, scored as one task.

    Attributes:
        job_name: Its job.
        file_position: Its file's position in the job.
        index: Its position among its file's shards, from 0.
        start: Its first byte (0 or just after a line end).
        end: The byte after its last one.
        task_id: The scheduler task that scores it.
        status: See `ShardStatus`.
        records_done: Records scored (from heartbeats, then the completion).
        bytes_done: Input bytes scored.
        failure_reason: Why it failed.
        records_failed: Bad records the worker wrote to the shard's staged errors object
            (per-record error mode); bad records an older worker reported inline are rows
            of their own, not counted here.
    """

    job_name: str
    file_position: int
    index: int
    start: int
    end: int
    task_id: str
    status: ShardStatus = ShardStatus.PENDING
    records_done: int = 0
    bytes_done: int = 0
    failure_reason: str = ""
    records_failed: int = 0


@dataclass(frozen=True)
class TransformJob:
    """A transform job as DescribeTransformJob shows it. Times are Unix seconds.

    Attributes:
        name: Unique name.
        spec: What was asked, defaults filled in.
        model: The model as it was when the job was created (a later delete does not
            stop the job).
        status: Overall status.
        creation_time: When it was created.
        failure_reason: Why it failed (≤1024 chars).
        start_time: When the first shard was leased.
        end_time: When it reached a terminal status.
        files: Per-file progress, in input order (empty in listings).
        shards_total: Shards planned.
        shards_done: Shards finished.
    """

    name: str
    spec: TransformJobSpec
    model: Model
    status: TransformJobStatus
    creation_time: float
    failure_reason: str = ""
    start_time: float | None = None
    end_time: float | None = None
    files: tuple[TransformFile, ...] = ()
    shards_total: int = 0
    shards_done: int = 0


def spec_to_json(spec: TransformJobSpec) -> str:
    """The spec as JSON text (its stored form)."""
    values = asdict(spec)
    values["environment"] = dict(spec.environment)
    return json.dumps(values, sort_keys=True)


def spec_from_json(text: str) -> TransformJobSpec:
    """The inverse of `spec_to_json`; unknown keys (from a newer schema) are ignored."""
    values: dict[str, Any] = json.loads(text)
    known = TransformJobSpec.__dataclass_fields__
    kept = {key: value for key, value in values.items() if key in known}
    kept["data_processing"] = DataProcessing(**values.get("data_processing", {}))
    kept["environment"] = dict(values.get("environment", {}))
    return TransformJobSpec(**kept)


def model_to_json(model: Model) -> str:
    """The model snapshot as JSON text."""
    values = asdict(model)
    values["environment"] = dict(model.environment)
    return json.dumps(values, sort_keys=True)


def model_from_json(text: str) -> Model:
    """The inverse of `model_to_json`."""
    values: dict[str, Any] = json.loads(text)
    kept = {key: value for key, value in values.items() if key in Model.__dataclass_fields__}
    kept["runtime_versions"] = RuntimeVersions(**values.get("runtime_versions", {}))
    return Model(**kept)
