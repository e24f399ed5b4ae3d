"""TrainerSettings: every knob of a trainer worker, with its default and description."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import ServiceSettings, setting

ENV_PREFIX = "SKMAKER_TRAINER_"


@dataclass(frozen=True)
class TrainerSettings(ServiceSettings):
    """A trainer worker: pulls training tasks from the control and runs them one at a time."""

    control: str = setting("127.0.0.1:50051", "address of the control's gRPC API")
    work_dir: str = setting("./.skmaker/work/trainer", "where job workspaces (/opt/ml) live")
    acquire_wait_s: float = setting(10.0, "long-poll time of one AcquireTask call")
    stop_grace_s: float = setting(
        120.0, "seconds a script gets between SIGTERM and SIGKILL on stop or max_run"
    )
    control_timeout_s: float = setting(
        120.0, "how long to keep retrying a report while the control is unreachable"
    )
    keep_workspaces: bool = setting(False, "keep each job's workspace after it ends (debugging)")
    pip_timeout_s: float = setting(900.0, "time limit for installing a job's requirements.txt")
    script_runtime: str = setting(
        "", "script runtime (runtimes/<name>.lock) scripts run in; empty: the newest"
    )
    runtimes_dir: str = setting("", "where script runtimes are built; empty: .venv-runtimes/")
