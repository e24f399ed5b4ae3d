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
    job_user: str = setting(
        "skmaker-job",
        "system user training scripts run as when the trainer runs as root (created if missing)",
    )
    job_memory_mb: int = setting(
        0, "memory limit of a job's processes together, MiB; 0: 3/4 of this machine's memory"
    )
    job_max_processes: int = setting(4096, "most processes and threads a job may run; 0: none")
    job_max_open_files: int = setting(4096, "most open files per job process; 0: no limit")
    job_cpu_seconds: int = setting(0, "CPU seconds each job process may use; 0: no limit")
    job_cgroups: bool = setting(
        True, "box each job in a cgroup where the kernel allows (else rlimits, with a warning)"
    )
    file_channel_roots: str = setting(
        "", "folders (':'-separated) file:// channels may read from; empty: no file:// channels"
    )
    script_env_allow: str = setting(
        "PATH,LANG,LANGUAGE,LC_*,TZ,TERM,SM_*,SAGEMAKER_*,http_proxy,https_proxy,no_proxy,"
        "HTTP_PROXY,HTTPS_PROXY,NO_PROXY,PIP_INDEX_URL,PIP_EXTRA_INDEX_URL,PIP_FIND_LINKS,"
        "PIP_CERT,PIP_TRUSTED_HOST,SSL_CERT_FILE,SSL_CERT_DIR,REQUESTS_CA_BUNDLE",
        "the trainer's environment variables (comma-separated, * globs) training scripts and "
        "pip see; the job's own environment is always added",
    )
    max_archive_bytes: int = setting(
        1024**3, "most bytes a source bundle may unpack to (larger: the job fails, saying so)"
    )
    max_archive_members: int = setting(10_000, "most files and folders a source bundle may hold")
    max_heartbeat_log_bytes: int = setting(
        1024 * 1024, "most output (characters) one heartbeat carries; more goes with the next"
    )
    max_job_log_bytes: int = setting(
        64 * 1024 * 1024, "most output a job's log keeps; the rest is dropped behind a marker"
    )
    script_runtime: str = setting(
        "", "script runtime (runtimes/<name>.lock) scripts run in; empty: the newest"
    )
    runtimes_dir: str = setting("", "where script runtimes are built; empty: .venv-runtimes/")
