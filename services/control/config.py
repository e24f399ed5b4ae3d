"""ControlSettings: every knob of the control service, read once in `__main__`.

Each field is a flag (`lease_s` -> `--lease-s`) with `SKMAKER_CONTROL_<NAME>` behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import ServiceSettings, setting

GIB = 1024**3


@dataclass(frozen=True)
class ControlSettings(ServiceSettings):
    """skmaker control: training jobs, artifacts and the worker task queue."""

    grpc_port: int = setting(50051, "gRPC port of the public and worker APIs", flags=["--port"])
    data_dir: str = setting("./.skmaker", "folder holding control.db and artifacts/")
    local: bool = setting(False, "also start trainer workers as child processes")
    local_trainers: int = setting(1, "how many trainer children --local starts")
    trainer_args: str = setting("", "extra flags (shell syntax) given to each local trainer")
    lease_s: float = setting(10.0, "seconds a task lease lasts without a heartbeat")
    heartbeat_interval_s: float = setting(2.0, "how often workers are told to heartbeat")
    max_attempts: int = setting(3, "leases a task gets before its job fails (lost workers)")
    retry_backoff_s: float = setting(
        1.0, "delay before a lost task is retried; doubles per attempt"
    )
    max_upload_bytes: int = setting(10 * GIB, "largest artifact UploadArtifact accepts")
