"""BatchSettings: every knob of a batch worker, with its default and description.

Started by hand or by a `--local` control::

    python -m services.batch --control HOST:PORT [--work-dir DIR] [--grpc-port 0 ...]

Every flag has an environment variable behind it with the prefix `SKMAKER_BATCH_`
(`--acquire-wait-s` <- `SKMAKER_BATCH_ACQUIRE_WAIT_S`); a flag wins over the variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import ServiceSettings, setting

ENV_PREFIX = "SKMAKER_BATCH_"


@dataclass(frozen=True)
class BatchSettings(ServiceSettings):
    """A batch worker: leases transform shards from the control and scores them one at a time."""

    control: str = setting("127.0.0.1:50051", "address of the control's gRPC API")
    work_dir: str = setting("./.skmaker/work/batch", "where models are unpacked and shards staged")
    deps_dir: str = setting("", "requirements.txt install cache; empty means <work-dir>/../deps")
    acquire_wait_s: float = setting(10.0, "long-poll time of one AcquireTask call")
    control_timeout_s: float = setting(
        120.0, "how long to keep retrying a call while the control is unreachable"
    )
    local_inputs: bool = setting(
        True,
        "read a shard's input from the control's disk when it is visible here (same host, or "
        "the artifact volume mounted at the same path) instead of downloading it",
    )
    max_cached_models: int = setting(2, "models kept loaded in memory between shards")
    pip_timeout_s: float = setting(900.0, "time limit for installing a model's requirements.txt")
    region: str = setting("local", "SAGEMAKER_REGION given to the user's code")
