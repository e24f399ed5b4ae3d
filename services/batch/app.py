"""Wires a batch worker: settings -> control link, model cache, work loop, lifecycle hooks.

`build(settings, environ)` does no I/O; the loop starts once the process is bound and healthy.
On SIGTERM the worker takes no new shard and gets `shutdown_grace_s` to finish the one it
holds (after that it is abandoned and re-run elsewhere when its lease expires).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping
from pathlib import Path

import prometheus_client

from services.batch.config import BatchSettings
from services.batch.control_link import ControlLink
from services.batch.metrics import BatchMetrics
from services.batch.models import ModelCache
from services.batch.worker import BatchWorker
from services.runtime import script_runtimes
from services.runtime.lifecycle import Service
from services.runtime.tls import ClientTls


def build(settings: BatchSettings, environ: MutableMapping[str, str]) -> Service:
    """Builds the batch worker service.

    Args:
        settings: The worker's settings.
        environ: The process environment; the model's, the job's and the batch variables are
            written into it before the user's code runs (pass `os.environ`).
    """
    logging.getLogger(__name__).info("%s", script_runtimes.this_python())
    registry = prometheus_client.CollectorRegistry()
    work_dir = Path(settings.work_dir).resolve()
    link = ControlLink(
        settings.control,
        worker_id=f"{socket.gethostname()}/{os.getpid()}",
        token=settings.auth_token,
        control_timeout_s=settings.control_timeout_s,
        tls=ClientTls.from_settings(settings),
        # Handlers run in this process: only shards of models on this runtime are ours.
        script_runtime=script_runtimes.current_name(),
    )
    models = ModelCache(
        work_dir,
        Path(settings.deps_dir).resolve() if settings.deps_dir else work_dir.parent / "deps",
        environ,
        region=settings.region,
        pip_timeout_s=settings.pip_timeout_s,
        capacity=settings.max_cached_models,
    )
    worker = BatchWorker(
        link,
        models,
        work_dir,
        BatchMetrics.create(registry),
        acquire_wait_s=settings.acquire_wait_s,
        local_inputs=settings.local_inputs,
    )

    def on_stop() -> None:
        worker.join(settings.shutdown_grace_s)
        link.close()

    return Service(
        name="batch",
        servicers=[],
        registry=registry,
        on_start=worker.start,
        on_drain=worker.drain,
        on_stop=on_stop,
    )
