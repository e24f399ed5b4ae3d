"""Where a transform job's data lies in the artifact store: its input files, cut into shards.

The input URI names one object or a prefix: every object at or below it is an input file, keyed
by its path relative to the prefix (a single object by its base name). Outputs keep that key:
`<output>/<key>.out`, `<output>/<key>.out.errors`, and, while a file's shards run, each shard's
output staged at `<output>/.skmaker-shards/<key>.out.<index>` (`shards`) and its
bad records (per-record error mode) at `<output>/.skmaker-shards/<key>.out.<index>.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from services.control.artifacts.store import ArtifactStore, key_of
from services.control.transform.shards import InputFile, Shard, plan_shards, shard_output_key
from services.control.transform.values import TransformFile, TransformJobSpec, TransformShard
from services.runtime.errors import NotFound
from services.sagemaker.transform.records import Compression, SplitType


def output_prefix_key(spec: TransformJobSpec) -> str:
    """The key of a job's output path; its outputs lie below it."""
    return key_of(spec.output_uri)


def staged_key(spec: TransformJobSpec, file_key: str, shard: TransformShard) -> str:
    """Where a shard's output is staged until its file is assembled.

    The key depends only on the shard, so a shard scored again after its worker was lost
    overwrites its earlier output instead of adding a second one.
    """
    staged = shard_output_key(Shard(file_key, shard.index, shard.start, shard.end))
    return f"{output_prefix_key(spec)}/{staged}"


def staged_errors_key(spec: TransformJobSpec, file_key: str, shard: TransformShard) -> str:
    """Where a shard's bad records are staged (JSON lines) until its file is assembled.

    Beside the staged output, and as fixed: a re-run overwrites it. No staged output ends in
    `.errors` (they end in `.out.<index>`), so the two never collide.
    """
    return staged_key(spec, file_key, shard) + ".errors"


def list_input_files(artifacts: ArtifactStore, spec: TransformJobSpec) -> list[TransformFile]:
    """The objects at or below the job's input URI, in key order, as Pending files.

    Objects at or below the job's own output path are left out: with an output path inside
    the input prefix, the outputs of an earlier run are no input.

    Raises:
        NotFound: nothing is stored there.
    """
    input_key = key_of(spec.input_uri)
    out_key = output_prefix_key(spec)
    files: list[TransformFile] = []
    for info in artifacts.list(input_key):
        if info.key == out_key or info.key.startswith(out_key + "/"):
            continue
        relative = (
            info.key.rsplit("/", 1)[-1] if info.key == input_key else info.key[len(input_key) + 1 :]
        )
        files.append(TransformFile(len(files), relative, info.uri, info.size))
    if not files:
        raise NotFound(f"no input at {spec.input_uri}: upload an object there, or objects below it")
    return files


# A job's input is cut into at most about this many shards per instance it asks for: enough
# that workers finishing at different times share the tail, few enough that the fixed cost of
# a shard (a lease, an output upload, a completion, each a durable write) stays small.
SHARDS_PER_INSTANCE = 4


def plan_job_shards(
    artifacts: ArtifactStore,
    spec: TransformJobSpec,
    files: Sequence[TransformFile],
    target_shard_bytes: int,
) -> list[tuple[int, Shard]]:
    """Cut the files into shards on line boundaries (`plan_shards`), reading the store directly.

    Shards are `target_shard_bytes` long, or longer when that would give the job's instances
    more than `SHARDS_PER_INSTANCE` shards each.

    Returns:
        (file position, shard) pairs, by file then byte order.
    """
    by_key = {file.key: file for file in files}
    total_bytes = sum(file.size for file in files)
    shares = SHARDS_PER_INSTANCE * max(1, spec.instance_count)
    target_shard_bytes = max(target_shard_bytes, -(-total_bytes // shares))

    def read_range(key: str, start: int, length: int) -> bytes:
        return artifacts.read_range(key_of(by_key[key].input_uri), start, length)

    planned = plan_shards(
        [InputFile(file.key, file.size) for file in files],
        cast(SplitType, spec.split_type),
        target_shard_bytes,
        read_range,
        compression=cast(Compression, spec.compression_type),
    )
    return [(by_key[shard.key].position, shard) for shard in planned]
