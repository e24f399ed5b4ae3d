"""Wires a trainer worker: settings -> control link, work loop, lifecycle hooks."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import prometheus_client

from services.runtime.lifecycle import Service
from services.runtime.script_runtimes import choose_python
from services.trainer.config import TrainerSettings
from services.trainer.control_link import ControlLink
from services.trainer.job import JobEnvironment
from services.trainer.metrics import TrainerMetrics
from services.trainer.worker import TrainerWorker


def script_base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment minus skmaker's own settings (they may hold a token)."""
    return {k: v for k, v in environ.items() if not k.startswith("SKMAKER_")}


def build(settings: TrainerSettings, environ: Mapping[str, str]) -> Service:
    """Builds the trainer service; the work loop starts once the process is bound."""
    registry = prometheus_client.CollectorRegistry()
    work_dir = Path(settings.work_dir).resolve()
    link = ControlLink(
        settings.control,
        worker_id=f"{socket.gethostname()}/{os.getpid()}",
        token=settings.auth_token,
        control_timeout_s=settings.control_timeout_s,
    )
    script_python = choose_python(settings.script_runtime, settings.runtimes_dir)
    logging.getLogger(__name__).info("%s", script_python.describe())
    job_env = JobEnvironment(
        python=script_python.python,
        deps_root=work_dir / "deps",
        base_environment=script_base_environment(environ),
        stop_grace_s=settings.stop_grace_s,
        pip_timeout_s=settings.pip_timeout_s,
    )
    worker = TrainerWorker(
        link,
        work_dir / "jobs",
        job_env,
        TrainerMetrics.create(registry),
        acquire_wait_s=settings.acquire_wait_s,
        keep_workspaces=settings.keep_workspaces,
    )

    def on_stop() -> None:
        worker.join(settings.shutdown_grace_s + settings.stop_grace_s)
        link.close()

    return Service(
        name="trainer",
        servicers=[],
        registry=registry,
        on_start=worker.start,
        on_drain=worker.drain,
        on_stop=on_stop,
    )
