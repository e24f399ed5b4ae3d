"""Process lifecycle for every skmaker service: bind, health, reflection, metrics, drain, exit.

`start()` builds a synchronous grpcio server (measured faster than grpc.aio for the Predict hot
path on this hardware), adds the service's servicers plus grpc.health.v1 and server reflection,
binds, starts Prometheus' /metrics, writes the port file, runs the service's `on_start` and only
then reports SERVING. `serve()` does that, waits for SIGTERM/SIGINT and shuts down in the order
that loses nothing: health NOT_SERVING first (balancers stop sending), then the gRPC server
stops with a grace period, then `on_stop`; the metrics server stops beside all that (its
shutdown waits up to half a second for its poll loop). Then the process exits at once, with
code 0, skipping the interpreter's slow teardown (`exit_now`).

Every port turns SO_REUSEPORT off, so a second server can never silently share it; the one
exception is `Service.shared_port_address`, which an endpoint's replicas bind together. That
shared port is bound only after `on_start` succeeded, because the kernel hands connections to
every socket bound there: a replica still loading its model must not be one of them. The port
file then gains a `"shared"` key (it is rewritten, atomically, before health turns SERVING).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.runtime import lifeline, reflection, tls
from services.runtime.auth import BearerTokenInterceptor, ScopedTokens, people_tokens
from services.runtime.call_limits import CallLimiter
from services.runtime.components import Component, Components
from services.runtime.errors import ErrorInterceptor
from services.runtime.metrics_server import start_metrics_server
from services.runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

# 64 MiB: artifact chunks are 1 MiB and Predict payloads are capped lower by the inference
# service itself, which returns RESOURCE_EXHAUSTED with a useful message instead of gRPC's.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Servicer:
    """One servicer to register: the generated `add_XServicer_to_server` and its full name."""

    add_to_server: Callable[[Any, grpc.Server], None]
    implementation: Any
    full_name: str


@dataclass
class Service:
    """What a service hands to the lifecycle. Hooks run outside any RPC."""

    name: str
    servicers: Sequence[Servicer]
    registry: prometheus_client.CollectorRegistry = field(
        default_factory=prometheus_client.CollectorRegistry
    )
    on_start: Callable[[], None] | None = None
    on_stop: Callable[[], None] | None = None
    # Called with the bound gRPC port right before on_start (e.g. to point child workers at it).
    on_bound: Callable[[int], None] | None = None
    # Called when draining starts (before the server stops), e.g. to refuse new work.
    on_drain: Callable[[], None] | None = None
    # Background parts (services.runtime.components), in dependency order: started in order
    # once on_start returned; drained last first when draining starts (before on_drain), and
    # stopped last first once the RPCs have stopped (before on_stop).
    components: Sequence[Component] = ()
    # host:port bound with SO_REUSEPORT by a second server sharing the same servicers; bound
    # and started only once on_start returned, so no traffic arrives there before it is ready.
    shared_port_address: str | None = None
    # host:port the gRPC server binds instead of the settings' host and port, when a front
    # process owns the callers' port (the gateway's HAProxy) ...
    grpc_address: str | None = None
    # ... and that port, written to the port file as "grpc" (the server's own is "internal").
    advertised_grpc_port: int | None = None
    # The process's exit code once stopped (e.g. 1 when a child it depends on died); None: 0.
    exit_code: Callable[[], int] | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # Credentials this service issues to its children, accepted within their scopes.
    scoped_tokens: ScopedTokens | None = None
    # Handlers served but not listed in reflection or health, e.g. the control's answer to
    # inference calls sent to it by mistake.
    unlisted_handlers: Sequence[grpc.GenericRpcHandler] = ()
    extra_server_options: Sequence[tuple[str, Any]] = ()
    # Bounded capacity for long calls (streams, long polls) beside the unary threads; the
    # pool gets its `reserved_threads` on top of `max_workers` (services.runtime.call_limits).
    call_limiter: CallLimiter | None = None


@dataclass
class RunningService:
    """A started service: its bound ports and the handles needed to stop it."""

    service: Service
    settings: ServiceSettings
    grpc_port: int
    metrics_port: int
    health: health.HealthServicer
    _servers: list[grpc.Server]
    _httpd: Any
    # The servers' handler pools, shut down after the servers stop so idle workers end.
    _executors: list[futures.ThreadPoolExecutor] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)
    # The port bound at `Service.shared_port_address`; None without one.
    shared_port: int | None = None
    # The service's components, as started (none until on_start returned).
    components: Components = field(default_factory=lambda: Components(()))

    def __post_init__(self) -> None:
        self.components = Components(self.service.components)

    @property
    def address(self) -> str:
        """host:port callers use: the gRPC server's, or the front process's that owns it."""
        port = self.service.advertised_grpc_port or self.grpc_port
        return f"{self.settings.host}:{port}"

    def set_serving(self, serving: bool) -> None:
        """Sets overall and per-service health."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        for servicer in self.service.servicers:
            self.health.set(servicer.full_name, status)

    def stop(self) -> None:
        """Drains and stops: NOT_SERVING, stop RPCs with grace, on_stop, metrics. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        # The metrics server notices a shutdown only at its next poll (0.1 s): let that wait
        # run beside the drain instead of after it (scrapes during the drain may fail).
        metrics_stopped = threading.Thread(
            target=self._httpd.shutdown if self._httpd is not None else lambda: None,
            name="metrics-shutdown",
        )
        metrics_stopped.start()
        # Each step's duration goes into the "stopped" line: a stop that runs past its
        # supervisor's limit (Docker's 10 s) says where the time went.
        steps = _StepTimer()
        self.components.drain()
        steps.mark("loops drained")
        if self.service.on_drain is not None:
            self.service.on_drain()
            steps.mark("on_drain")
        grace = self.settings.shutdown_grace_s
        stop_events = [server.stop(grace) for server in self._servers]
        for event in stop_events:
            event.wait(grace + 1)
        steps.mark("RPCs ended")
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        if self.service.call_limiter is not None:
            self.service.call_limiter.watchdog.loop.stop()
        self.components.stop()
        steps.mark("loops stopped")
        if self.service.on_stop is not None:
            self.service.on_stop()
            steps.mark("on_stop")
        metrics_stopped.join()
        if self._httpd is not None:
            self._httpd.server_close()
        steps.mark("metrics")
        log.info("%s stopped in %s", self.service.name, steps.summary())


class _StepTimer:
    """Durations of the consecutive steps of a stop, for its log line."""

    def __init__(self) -> None:
        self._last = self._started = time.monotonic()
        self._steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self._steps.append((step, now - self._last))
        self._last = now

    def summary(self) -> str:
        total = self._last - self._started
        return f"{total:.2f}s (" + ", ".join(f"{name} {s:.2f}s" for name, s in self._steps) + ")"


def _server_options(service: Service, reuse_port: bool) -> list[tuple[str, Any]]:
    return [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", service.max_message_bytes),
        ("grpc.max_send_message_length", service.max_message_bytes),
        *service.extra_server_options,
    ]


def _build_server(
    service: Service,
    settings: ServiceSettings,
    health_servicer: health.HealthServicer,
    reuse_port: bool,
    executors: list[futures.ThreadPoolExecutor],
) -> grpc.Server:
    """The service's gRPC server; its handler pool is appended to `executors`."""
    interceptors: list[grpc.ServerInterceptor] = [ErrorInterceptor()]
    threads = settings.max_workers
    if service.call_limiter is not None:
        # Outside the error mapping, so a refusal is answered before any handler runs.
        interceptors.insert(0, service.call_limiter)
        threads += service.call_limiter.reserved_threads
    people = people_tokens(
        settings.auth_token, settings.auth_tokens_file, settings.auth_token_sha256
    )
    if people:
        interceptors.insert(0, BearerTokenInterceptor(scoped=service.scoped_tokens, people=people))
    executor = futures.ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix=f"{service.name}-rpc"
    )
    server = grpc.server(
        executor, interceptors=interceptors, options=_server_options(service, reuse_port)
    )
    executors.append(executor)
    for servicer in service.servicers:
        servicer.add_to_server(servicer.implementation, server)
    if service.unlisted_handlers:
        server.add_generic_rpc_handlers(tuple(service.unlisted_handlers))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.full_name for s in service.servicers]
    names += [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    return server


def _bind(server: grpc.Server, address: str, settings: ServiceSettings) -> int:
    """Binds `address` with TLS when the settings have a certificate; returns the port."""
    credentials = tls.server_credentials(settings)
    if credentials is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, credentials))


def write_port_file(path: str, ports: dict[str, int]) -> None:
    """Writes `ports` as JSON atomically (temp file + rename) so readers never see half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(ports, handle)
    os.replace(tmp, target)


def start(service: Service, settings: ServiceSettings) -> RunningService:
    """Binds and starts `service`; returns once it is SERVING (after `on_start`).

    The own gRPC port and /metrics are bound first and the port file written, so a supervisor
    can watch health while `on_start` runs (NOT_SERVING until it returns). The shared port, if
    any, is bound only after `on_start` succeeded; the port file is then rewritten with it.

    Raises:
        RuntimeError: when a port cannot be bound.
    """
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    executors: list[futures.ThreadPoolExecutor] = []
    server = _build_server(service, settings, health_servicer, False, executors)
    address = service.grpc_address or f"{settings.host}:{settings.grpc_port}"
    grpc_port = _bind(server, address, settings)
    if grpc_port == 0:
        raise RuntimeError(f"{service.name}: cannot bind gRPC address {address}")
    httpd, metrics_port = start_metrics_server(
        settings.host,
        settings.metrics_port,
        service.registry,
        token=settings.metrics_token,
        ssl_context=tls.server_ssl_context(settings),
    )
    running = RunningService(
        service=service,
        settings=settings,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        health=health_servicer,
        _servers=[server],
        _httpd=httpd,
        _executors=executors,
    )
    running.set_serving(False)
    server.start()
    if service.call_limiter is not None:
        service.call_limiter.watchdog.loop.start()
    ports = {"grpc": grpc_port, "metrics": metrics_port}
    if service.advertised_grpc_port is not None:
        ports.update(grpc=service.advertised_grpc_port, internal=grpc_port)
    if settings.port_file:
        write_port_file(settings.port_file, ports)
    # "grpc" is the port callers use; with a front process (the gateway's HAProxy) that is
    # the front's, and the server's own loopback port is only worth a mention beside it.
    internal = f" internal={grpc_port}" if "internal" in ports else ""
    log.info(
        "%s listening grpc=%s metrics=%s%s", service.name, ports["grpc"], metrics_port, internal
    )
    try:
        if service.on_bound is not None:
            service.on_bound(grpc_port)
        if service.on_start is not None:
            service.on_start()
        running.components.start()
        if service.shared_port_address:
            running.shared_port = _start_shared(
                service, settings, health_servicer, running, service.shared_port_address
            )
            ports["shared"] = running.shared_port
            if settings.port_file:
                write_port_file(settings.port_file, ports)
            log.info("%s listening shared=%s", service.name, service.shared_port_address)
    except BaseException:
        running.stop()
        raise
    running.set_serving(True)
    return running


def _start_shared(
    service: Service,
    settings: ServiceSettings,
    health_servicer: health.HealthServicer,
    running: RunningService,
    address: str,
) -> int:
    """Binds and starts the SO_REUSEPORT server at `address`; returns the bound port."""
    shared = _build_server(service, settings, health_servicer, True, running._executors)
    port = _bind(shared, address, settings)
    if port == 0:
        raise RuntimeError(f"{service.name}: cannot bind {address}")
    # Registered before start so that stop() always stops it, even if start fails half-way.
    running._servers.append(shared)
    shared.start()
    return port


def configure_logging(level: str) -> None:
    """One-line-per-record logs on stderr, with the process's service name in each line."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


_PR_SET_DUMPABLE = 4


def hide_process_memory() -> bool:
    """Marks this process not dumpable; returns whether the kernel agreed.

    Other processes of the same user (model code in a replica or batch worker the control
    started, a script a non-root trainer runs) then cannot read its memory, environment or
    descriptors through /proc or ptrace, where they would find its token. It also turns off
    core dumps. Children are unaffected: the flag is reset when they exec.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def serve(service: Service, settings: ServiceSettings) -> NoReturn:
    """Starts `service`, blocks until SIGTERM or SIGINT, shuts down gracefully, exits the process.

    The process is first made not dumpable (`hide_process_memory`). A process started with a
    lifeline (`services.runtime.lifeline`) also stops when the process that started it dies.
    Once stopped, the process exits (`exit_now`) with 0, or with what `service.exit_code` says.
    """
    if not hide_process_memory():
        log.warning("cannot mark the process not dumpable: same-user processes can read it")
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received %s; draining", service.name, signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A process the control started stops with it, even after its SIGKILL (see lifeline).
    lifeline.watch_parent(stop_requested.set, exit_after_s=settings.shutdown_grace_s + 30.0)
    running = start(service, settings)
    stop_requested.wait()
    running.stop()
    code = service.exit_code() if service.exit_code is not None else 0
    exit_now(service.name, code, LINGERING_THREADS_WAIT_S)


# How long a stopped service waits for its other threads to end before it exits without them.
LINGERING_THREADS_WAIT_S = 0.5


def exit_now(name: str, code: int, wait_s: float) -> NoReturn:
    """Ends the process with `code` at once, once it has stopped; logs threads still running.

    Everything the service owns has drained, stopped and been saved by now, so the interpreter's
    own teardown has nothing left to do but unload modules and join threads: under CPU
    contention that took 2-3 s for a process with scikit-learn loaded (measured on two busy
    cores), and a thread blocked where no stop reaches it (a handler stuck in user code, a call
    without deadline) would hold it for good, until a supervisor's SIGKILL. So other non-daemon
    threads get `wait_s` to end; each still running is logged with its stack (a stop that
    leaves one is a bug to fix); then the logs are flushed and the process leaves by `os._exit`.
    """
    deadline = time.monotonic() + wait_s
    lingering = _other_non_daemon_threads()
    for thread in lingering:
        thread.join(max(0.0, deadline - time.monotonic()))
    frames = sys._current_frames()
    for thread in (t for t in lingering if t.is_alive()):
        frame = frames.get(thread.ident) if thread.ident is not None else None
        stack = "".join(traceback.format_stack(frame, limit=8)) if frame is not None else "?"
        log.warning(
            "%s stopped, but thread %s still runs %.1fs later; exiting without it:\n%s",
            name,
            thread.name,
            wait_s,
            stack.rstrip(),
        )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _other_non_daemon_threads() -> list[threading.Thread]:
    current = threading.current_thread()
    return [t for t in threading.enumerate() if t is not current and not t.daemon]
