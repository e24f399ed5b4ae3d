"""Wires a trainer worker: settings -> control link, work loop, lifecycle hooks."""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import prometheus_client

from services.runtime import script_runtimes
from services.runtime.archives import ArchiveLimits
from services.runtime.lifecycle import Service
from services.runtime.runtime_on_demand import build_failure
from services.runtime.script_runtimes import choose_python
from services.runtime.tls import ClientTls
from services.trainer.config import TrainerSettings
from services.trainer.control_link import ControlLink
from services.trainer.job import JobEnvironment, RuntimeBuildFailed, RuntimeUnavailable
from services.trainer.metrics import TrainerMetrics
from services.trainer.sandbox import JobLimits, Sandbox, default_memory_bytes
from services.trainer.worker import TrainerWorker


def script_base_environment(environ: Mapping[str, str], allow: str) -> dict[str, str]:
    """The worker's variables a script may see: those `allow` names (comma-separated globs).

    An allow-list, not a deny-list: whatever else the worker's environment holds (tokens,
    cloud credentials, the operator's settings) stays out of user code's reach. skmaker's
    own settings never pass, whatever the list says.
    """
    patterns = [p.strip() for p in allow.split(",") if p.strip()]
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith("SKMAKER_")
        and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }


def job_limits(settings: TrainerSettings) -> JobLimits:
    """The limits of each job's processes, from the settings."""
    memory = settings.job_memory_mb * 2**20 if settings.job_memory_mb > 0 else 0
    return JobLimits(
        memory_bytes=memory or default_memory_bytes(),
        max_processes=max(0, settings.job_max_processes),
        max_open_files=max(0, settings.job_max_open_files),
        cpu_seconds=max(0, settings.job_cpu_seconds),
    )


def build(settings: TrainerSettings, environ: Mapping[str, str]) -> Service:
    """Builds the trainer service; the work loop starts once the process is bound."""
    registry = prometheus_client.CollectorRegistry()
    script_python = choose_python(settings.script_runtime, settings.runtimes_dir)
    logging.getLogger(__name__).info("%s", script_python.describe())
    sandbox = Sandbox.create(
        settings.job_user,
        job_limits(settings),
        python=script_python.python,  # the job user must be able to start it
        use_cgroups=settings.job_cgroups,
    )
    work_dir = sandbox.job_root(Path(settings.work_dir).resolve())
    link = ControlLink(
        settings.control,
        worker_id=f"{socket.gethostname()}/{os.getpid()}",
        token=settings.auth_token,
        control_timeout_s=settings.control_timeout_s,
        tls=ClientTls.from_settings(settings),
    )

    def runtime_python(name: str, progress: Callable[[str], None]) -> str:
        # A job's runtime other than this trainer's default: built here on its first use (a
        # file lock makes concurrent builders wait for one build), then reused.
        try:
            rt = script_runtimes.runtime(name, settings.runtimes_dir)
            python = str(script_runtimes.ensure_built(rt, progress=progress))
        except script_runtimes.UnknownRuntime as err:
            raise RuntimeUnavailable(f"{err} (this trainer has no such runtime)") from err
        except (subprocess.CalledProcessError, OSError) as err:
            raise RuntimeBuildFailed(build_failure(name, err)) from err
        sandbox.allow_python(python)
        return python

    job_env = JobEnvironment(
        python_for=runtime_python,
        python=script_python.python,
        deps_root=work_dir / "deps",
        base_environment=script_base_environment(environ, settings.script_env_allow),
        stop_grace_s=settings.stop_grace_s,
        pip_timeout_s=settings.pip_timeout_s,
        sandbox=sandbox,
        archive_limits=ArchiveLimits(
            max_bytes=settings.max_archive_bytes, max_members=settings.max_archive_members
        ),
        file_channel_roots=tuple(
            Path(os.path.realpath(root))
            for root in settings.file_channel_roots.split(os.pathsep)
            if root
        ),
    )
    worker = TrainerWorker(
        link,
        work_dir / "jobs",
        job_env,
        TrainerMetrics.create(registry),
        acquire_wait_s=settings.acquire_wait_s,
        keep_workspaces=settings.keep_workspaces,
        max_beat_log_bytes=max(1, settings.max_heartbeat_log_bytes),
        max_job_log_bytes=max(1, settings.max_job_log_bytes),
    )

    def on_stop() -> None:
        worker.join(settings.shutdown_grace_s + settings.stop_grace_s)
        link.close()
        sandbox.close()

    return Service(
        name="trainer",
        servicers=[],
        registry=registry,
        on_start=worker.start,
        on_drain=worker.drain,
        on_stop=on_stop,
    )
