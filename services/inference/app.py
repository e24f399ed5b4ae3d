"""Wires an inference replica: settings -> replica state, model loader, servicers, lifecycle hooks.

`build(settings, environ)` does no I/O: the model is fetched and loaded in `on_start`, after the
replica's own port is bound (health NOT_SERVING meanwhile) and before the shared port is. A load
that fails writes its reason to the failure file and raises `ModelLoadFailed`, which `__main__`
turns into exit code 1.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path

import prometheus_client

from services.inference import micro_batch
from services.inference.config import InferenceSettings
from services.inference.control_link import ControlModelSource
from services.inference.metrics import InferenceMetrics
from services.inference.replica import Replica
from services.inference.servicer import InferenceServicer
from services.inference.v2_servicer import OpenInferenceServicer
from services.runtime import lifecycle, native_threads, script_runtimes
from services.runtime.components import Component
from services.runtime.lifeline import ControlWatchdog
from services.runtime.tls import ClientTls
from services.runtime.version import services_version
from services.runtime.versions import serving_runtime
from services.sagemaker.serving import fast_path
from services.sagemaker.serving.model_loader import (
    LoadedModel,
    ModelLoader,
    ModelLoadFailed,
    failure_reason,
)
from skmaker.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    open_inference_pb2,
    open_inference_pb2_grpc,
)

log = logging.getLogger(__name__)

# The gRPC message limit sits this far above the payload limit, so an oversized payload reaches
# the replica's own check (RESOURCE_EXHAUSTED naming the setting) instead of gRPC's generic one.
MESSAGE_HEADROOM_BYTES = 1024 * 1024


def write_failure_file(path: str, reason: str) -> None:
    """Writes `reason` to `path` atomically (temp file + rename), so a reader sees all or none."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(reason + "\n")
    os.replace(tmp, target)


def build(settings: InferenceSettings, environ: MutableMapping[str, str]) -> lifecycle.Service:
    """Builds the replica service; the model loads in `on_start`.

    Args:
        settings: The replica's settings (already `check()`ed).
        environ: The process environment; the model's environment is applied to it before the
            user's module is imported (pass `os.environ` in the replica process).

    Long because it is the one place where the replica's parts (model source and loader,
    metrics, servicers, start, drain and stop hooks) are made and connected, in order.
    """
    log.info("%s", script_runtimes.this_python())
    registry = prometheus_client.CollectorRegistry()
    metrics = InferenceMetrics(
        registry, settings.endpoint_name or settings.model_name or "standalone"
    )
    replica = Replica(
        endpoint_name=settings.endpoint_name,
        model_name=settings.model_name,
        replica_id=settings.replica_id or f"{socket.gethostname()}-{os.getpid()}",
        metrics=metrics,
        max_payload_bytes=settings.max_payload_bytes,
    )
    work_dir = Path(settings.work_dir).resolve()
    loader = ModelLoader(
        work_dir,
        Path(settings.deps_dir).resolve() if settings.deps_dir else work_dir.parent / "deps",
        environ,
        region=settings.region,
        pip_timeout_s=settings.pip_timeout_s,
    )

    def load() -> LoadedModel:
        if settings.is_standalone:
            code_dir = Path(settings.code_dir).resolve() if settings.code_dir else None
            return loader.load_local(
                Path(settings.model_dir).resolve(), code_dir, settings.entry_point
            )
        source = ControlModelSource(
            settings.control,
            token=settings.auth_token,
            timeout_s=settings.control_timeout_s,
            endpoint_name=settings.endpoint_name,
            tls=ClientTls.from_settings(settings),
        )
        try:
            loaded = loader.load_model(source, settings.model_name)
            if settings.endpoint_name:
                # After the load: the versions of the modules the model really imported.
                mismatch, _ = source.report_runtime(
                    settings.endpoint_name,
                    replica.replica_id,
                    settings.model_name,
                    serving_runtime(),
                    loaded.predict_path,
                )
                if mismatch:
                    log.warning("%s", mismatch)
            return loaded
        finally:
            source.close()

    def on_start() -> None:
        try:
            loaded = load()
        except Exception as err:
            # Whatever went wrong (including a bug), the control learns why from this file.
            reason = failure_reason(err)
            if settings.failure_file:
                write_failure_file(settings.failure_file, reason)
            raise ModelLoadFailed(reason) from err
        handler = loaded.handler
        core = handler.predict_core
        batching = core is not None and micro_batch.wanted(
            environ, default_handlers=handler.uses_default_predict
        )
        if batching and core is not None:
            handler = handler.with_predict_core(
                micro_batch.MicroBatcher(
                    core,
                    on_stacked=metrics.count_stacked,
                    max_running=native_threads.available_cpus(),
                )
            )
        metrics.set_predict_path(loaded.predict_path.name, fast_path.PATHS, batching)
        replica.set_loaded(handler, loaded.load_seconds)
        log.info(
            "%s; micro-batching %s", loaded.predict_path.describe(), "on" if batching else "off"
        )
        log.info(
            "model loaded in %.2fs from %s (entry point %s, warm-up %s)",
            loaded.load_seconds,
            loaded.model_dir,
            loaded.entry_point,
            "passed" if loaded.warmed_up else "skipped",
        )
        log.info("native thread pools per call: %s", native_threads.describe_pools())

    def on_drain() -> None:
        if replica.handler is not None and settings.drain_notice_s > 0:
            # Health already says NOT_SERVING; a gateway watching it stops sending here
            # within milliseconds, so these calls need no retry elsewhere.
            time.sleep(settings.drain_notice_s)
        replica.drain()
        if replica.handler is not None:
            # Stop the server only once callers have moved to other replicas (see
            # Replica.wait_until_quiet); bounded, so a caller that keeps coming (one
            # connection through the shared port) reconnects elsewhere after the stop.
            replica.wait_until_quiet(settings.drain_quiet_s, settings.drain_quiet_timeout_s)

    components: list[Component] = []
    if settings.control and settings.control_lost_exit_s > 0:
        link = ControlModelSource(
            settings.control, token=settings.auth_token, tls=ClientTls.from_settings(settings)
        )
        components.append(ControlWatchdog(link.control_answers, settings.control_lost_exit_s).loop)

    age_ms = int(settings.max_connection_age_s * 1000)
    return lifecycle.Service(
        name="inference",
        servicers=[
            lifecycle.Servicer(
                inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                InferenceServicer(replica),
                inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
            ),
            lifecycle.Servicer(
                open_inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
                OpenInferenceServicer(replica, services_version()),
                open_inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            ),
        ],
        registry=registry,
        on_start=on_start,
        on_drain=on_drain,
        components=components,
        shared_port_address=(
            f"{settings.host}:{settings.shared_port}" if settings.shared_port else None
        ),
        max_message_bytes=settings.max_payload_bytes + MESSAGE_HEADROOM_BYTES,
        extra_server_options=(
            # Long-lived channels reconnect now and then, so the kernel can spread them over
            # replicas added since (design.md, Predict flow); 0 leaves connections uncapped.
            *(
                (
                    ("grpc.max_connection_age_ms", age_ms),
                    (
                        "grpc.max_connection_age_grace_ms",
                        int(settings.max_connection_age_grace_s * 1000),
                    ),
                )
                if age_ms > 0
                else ()
            ),
        ),
    )
