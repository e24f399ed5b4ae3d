"""Builds the control service: store, scheduler, artifacts, tuning, models, endpoints, servicers.

`build(settings)` opens the database (applying migrations) and the artifact folder, so a bad
data dir fails before anything binds. The lease reaper, the replica backend and, with
`--local`, the minimum of trainer children start once the gRPC port is bound (more trainers
come and go with the training tasks, batch workers with the running transform jobs); stored
endpoints are then served again. On shutdown long polls and log followers end first, then the
replicas are drained and stopped, then the children.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import optuna

from services.control.artifacts.base import ArtifactStore, use_s3_location
from services.control.artifacts.key_locks import KeyLocks
from services.control.artifacts.servicer import ArtifactsServicer
from services.control.artifacts.store import LocalArtifactStore
from services.control.backends import EventSink, ReplicaBackend
from services.control.backends.containers import DockerBackendSettings, DockerReplicaBackend
from services.control.backends.local import LocalReplicaBackend
from services.control.backends.local_process import LocalBackendSettings
from services.control.backends.replica_runtime import ReplicaPython, SupervisionSettings
from services.control.backends.swarm import SwarmReplicaBackend
from services.control.backends.swarm_config import swarm_settings
from services.control.call_classes import control_call_limiter, worker_or_marked
from services.control.config import ControlSettings
from services.control.dispatch.credentials import worker_scope
from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.servicer import DispatchServicer
from services.control.dispatch.tasks import TaskKind, TaskState
from services.control.hosting.autoscaling_loop import Autoscaling
from services.control.hosting.credentials import ReplicaCredentials
from services.control.hosting.endpoint_servicer import EndpointServicer
from services.control.hosting.endpoint_store import EndpointStore
from services.control.hosting.endpoints import Endpoints
from services.control.hosting.load_metrics import LoadSource, PromQLSource, ScrapeSource
from services.control.hosting.misdirected_inference import MisdirectedInferenceHandler
from services.control.hosting.model_registry import ModelRegistry
from services.control.hosting.model_servicer import ModelServicer
from services.control.hosting.runtime_versions import ReplicaRuntimes
from services.control.hosting.scrape_targets import ScrapeTargetsFile
from services.control.local_workers.batch import LocalBatchWorkers, batch_worker_spec
from services.control.local_workers.supervisor import WorkerSpec, WorkerSupervisor
from services.control.local_workers.trainers import (
    LocalTrainers,
    TrainingDemand,
    default_max_trainers,
)
from services.control.metrics import ControlMetrics
from services.control.runtimes import ControlRuntimes
from services.control.runtimes_servicer import RuntimeServicer
from services.control.state import ControlStore
from services.control.training.jobs import TrainingJobs
from services.control.training.servicer import TrainingServicer
from services.control.transform.jobs import TransformJobs
from services.control.transform.servicer import TransformServicer
from services.control.transform.waits import TransformWaits
from services.control.tuning.jobs import TuningJobs
from services.control.tuning.servicer import TuningServicer
from services.runtime import lifecycle, script_runtimes, tls
from services.runtime.archives import ArchiveLimits
from services.runtime.auth import ScopedTokens, read_tokens_file
from services.runtime.components import Component
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.job_user import JobUser, model_code_user
from services.runtime.script_runtimes import PythonChoice, choose_python
from skmaker.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    dispatch_pb2,
    dispatch_pb2_grpc,
    runtimes_pb2,
    runtimes_pb2_grpc,
    serving_pb2,
    serving_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
    transform_pb2,
    transform_pb2_grpc,
    tuning_pb2,
    tuning_pb2_grpc,
)


def trainer_specs(
    settings: ControlSettings,
    grpc_port: int,
    indices: Iterable[int],
    issue_token: Callable[[str], str] | None = None,
) -> list[WorkerSpec]:
    """Local trainer children `trainer-<index>` for a control bound to `grpc_port`.

    `issue_token(name)` gives each a worker-scoped token; without it they get the control's.
    """
    data_dir = Path(settings.data_dir).resolve()
    extra = shlex.split(settings.trainer_args)
    return [
        WorkerSpec(
            name=f"trainer-{index}",
            argv=(
                sys.executable,
                "-m",
                "services.trainer",
                "--control",
                f"127.0.0.1:{grpc_port}",
                "--work-dir",
                str(data_dir / "work" / f"trainer-{index}"),
                "--grpc-port=0",
                "--metrics-port=0",
                # The bundles the control accepts, its trainers unpack (--trainer-args may differ).
                f"--max-archive-bytes={settings.max_archive_bytes}",
                f"--max-archive-members={settings.max_archive_members}",
                *extra,
            ),
            log_path=data_dir / "logs" / f"trainer-{index}.log",
            token=_worker_token(settings, f"trainer-{index}", issue_token),
            token_fd_env="SKMAKER_TRAINER_AUTH_TOKEN_FD",
            extra_env={
                **_script_runtime_env("SKMAKER_TRAINER_", settings),
                **child_environment("SKMAKER_TRAINER_", settings),
            },
        )
        for index in indices
    ]


def _worker_token(
    settings: ControlSettings, name: str, issue_token: Callable[[str], str] | None
) -> str:
    if not settings.auth_enabled:
        return ""
    return issue_token(name) if issue_token is not None else settings.auth_token


def child_environment(prefix: str, settings: ControlSettings) -> dict[str, str]:
    """What a child service (`prefix`: its variables') inherits of the control's settings.

    The TLS files by path (it serves TLS with the control's certificate and checks the control
    with its CA) and the metrics token, which the child drops from its environment once read.
    """
    values = tls.child_environment(prefix, settings)
    if settings.metrics_token:
        values[prefix + "METRICS_TOKEN"] = settings.metrics_token
    return values


def _script_runtime_env(prefix: str, settings: ControlSettings) -> dict[str, str]:
    """The control's script runtime choice, for a child that resolves its own runtime."""
    chosen = {"SCRIPT_RUNTIME": settings.script_runtime, "RUNTIMES_DIR": settings.runtimes_dir}
    return {prefix + name: value for name, value in chosen.items() if value}


def replica_backend(
    settings: ControlSettings,
    store: ControlStore,
    on_event: EventSink,
    script_python: PythonChoice | None = None,
    issue_token: Callable[[str, str, str], str] | None = None,
    run_as: JobUser | None = None,
    python_for: ReplicaPython | None = None,
    runtime_for: Callable[[str, str], str] | None = None,
) -> ReplicaBackend | None:
    """The backend `settings` ask for (None for `none`), reporting events to `on_event`.

    `issue_token(endpoint, replica id, model)` gives each replica a token of its own; local
    replicas run as `run_as` when given; `python_for(endpoint, model)` is the interpreter of
    its model's script runtime, `runtime_for(endpoint, model)` its name (for swarm replicas).
    """
    supervision = SupervisionSettings(
        start_timeout_s=settings.replica_start_timeout_s,
        start_attempts=settings.replica_start_attempts,
        health_interval_s=settings.replica_health_interval_s,
        health_timeout_s=settings.replica_health_timeout_s,
        unhealthy_checks=settings.replica_unhealthy_checks,
        shutdown_grace_s=settings.replica_shutdown_grace_s,
        tls=tls.ClientTls.from_settings(settings),
    )
    extra_args = tuple(shlex.split(settings.replica_args))
    script_python = script_python or PythonChoice(sys.executable, "")
    if settings.effective_replica_backend == "docker":
        containers = DockerBackendSettings(
            docker_url=settings.docker_url,
            image=settings.docker_image,
            network=settings.docker_network,
            control_address=settings.docker_control_address,
            endpoint_address=settings.docker_endpoint_address,
            auth_token=settings.auth_token,
            caller_token_sha256=",".join(settings.people().digests()),
            environment={
                name: value
                for name, value in child_environment("SKMAKER_INFERENCE_", settings).items()
                if not name.startswith("SKMAKER_INFERENCE_TLS_")
            },
            tls={name: str(getattr(settings, name)) for name in tls.TLS_FIELDS},
            extra_args=extra_args,
            supervision=supervision,
            # The control runs in the replicas' image, so its runtime's path is theirs too.
            python=script_python.python if script_python.runtime else "python",
            issue_token=issue_token,
            control_lost_exit_s=settings.replica_control_lost_exit_s,
            python_for=python_for,
            runtimes_volume=settings.docker_runtimes_volume,
            runtimes_path=str(script_runtimes.runtimes_dir(settings.runtimes_dir)),
        )
        return DockerReplicaBackend(containers, EndpointStore(store), on_event)
    if settings.effective_replica_backend == "swarm":
        return SwarmReplicaBackend(
            swarm_settings(
                settings,
                supervision,
                extra_args,
                script_python.python if script_python.runtime else "python",
                issue_token,
                runtime_for,
                str(script_runtimes.runtimes_dir(settings.runtimes_dir)),
            ),
            EndpointStore(store),
            on_event,
        )
    if settings.effective_replica_backend != "local":
        return None
    local = LocalBackendSettings(
        data_dir=Path(settings.data_dir),
        host="127.0.0.1",
        auth_token=settings.auth_token,
        caller_token_sha256=",".join(settings.people().digests()),
        extra_args=extra_args,
        supervision=supervision,
        python=script_python.python,
        issue_token=issue_token,
        environment=child_environment("SKMAKER_INFERENCE_", settings),
        run_as=run_as,
        python_for=python_for,
    )
    return LocalReplicaBackend(local, EndpointStore(store), on_event)


def _build_events(
    runtimes: ControlRuntimes, endpoints: Endpoints, models: ModelRegistry
) -> Callable[[str, str], None]:
    """Tells the endpoints whose replicas wait for a runtime how its build goes."""

    def tell(runtime: str, message: str) -> None:
        for view in endpoints.list(""):
            name = view.endpoint.name
            try:
                model = models.describe(view.endpoint.model_name, endpoint_name=name)
            except NotFound:
                continue
            if (model.script_runtime or runtimes.default_name()) == runtime:
                endpoints.record_event(name, message)

    return tell


def restrict_state(data_dir: Path) -> None:
    """Makes the database, the artifacts and the logs readable by the control's user alone, and
    the data folder and its work folder traversable but not listable by others.

    User code run as another user (training scripts; a root control's replicas and batch
    workers) passes through the data folder to its own work folder below it: other jobs' data,
    models and logs must be closed to it, and what else lies there is none of its business.
    """
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    (data_dir / "work").mkdir(parents=True, exist_ok=True)
    for folder in (data_dir, data_dir / "work"):
        try:
            folder.chmod(0o711)
        except PermissionError:  # a folder someone else owns (a mount point): left as it is
            logging.getLogger(__name__).warning("cannot restrict %s: not its owner", folder)
    for folder in (data_dir / "artifacts", data_dir / "logs"):
        if folder.exists():  # no artifacts/ with an S3 store
            folder.chmod(0o700)
    for database in data_dir.glob("control.db*"):
        database.chmod(0o600)


def model_code_user_of(
    settings: ControlSettings, data_dir: Path, script_python: PythonChoice
) -> JobUser | None:
    """The user local replicas and batch workers run as: the job user under a root control
    that starts them (`model_code_user`), else None (the control's own)."""
    if not (settings.local or settings.effective_replica_backend == "local"):
        return None
    work = data_dir.resolve() / "work"
    work.mkdir(parents=True, exist_ok=True)
    # The runtime's python runs replicas and batch workers, the control's the port helper.
    user = model_code_user(settings.job_user, work, (script_python.python, sys.executable))
    if user is not None:
        logging.getLogger(__name__).info(
            "local replicas and batch workers run model code as %s (uid %d)", user.name, user.uid
        )
    return user


def open_artifact_store(settings: ControlSettings, data_dir: Path) -> ArtifactStore:
    """`<data-dir>/artifacts`, or the S3 bucket of `--artifact-store s3://BUCKET[/PREFIX]`,
    whose bucket and prefix then stand for the store in `s3://` URIs."""
    if not settings.artifact_store:
        return LocalArtifactStore(data_dir / "artifacts", settings.max_upload_bytes)
    # Imported here: boto3 takes seconds to import, which a control without S3 need not pay.
    from services.control.artifacts.s3_store import S3ArtifactStore, parse_store_uri

    location = parse_store_uri(settings.artifact_store)
    store = S3ArtifactStore(
        location,
        settings.max_upload_bytes,
        presign_endpoint_url=settings.artifact_presign_endpoint,
        url_ttl_s=settings.artifact_url_ttl_s,
    )
    use_s3_location(location)
    return store


def load_source(settings: ControlSettings) -> LoadSource:
    """PromQL against `--prometheus-url` when set; otherwise the replicas' /metrics."""
    if settings.prometheus_url:
        return PromQLSource(settings.prometheus_url)
    client_tls = tls.ClientTls.from_settings(settings)
    return ScrapeSource(
        ssl_context=client_tls.ssl_context() if client_tls is not None else None,
        token=settings.metrics_token,
    )


def build(settings: ControlSettings) -> lifecycle.Service:
    """Wires the control service; nothing listens until `lifecycle.start`/`serve`.

    Long because it is the one place where every part of the control is made and connected
    (store, scheduler, job kinds, hosting, workers, servicers, components and hooks), in
    dependency order: split up, the order would be spread over several functions.
    """
    data_dir = Path(settings.data_dir)
    # Replicas and batch workers run user code, so they run on the script runtime's python.
    script_python = choose_python(settings.script_runtime, settings.runtimes_dir)
    logging.getLogger(__name__).info("replicas and batch workers: %s", script_python.describe())
    service = lifecycle.Service(name="control", servicers=[])
    metrics = ControlMetrics(service.registry)
    store = ControlStore(data_dir / "control.db")
    artifacts = open_artifact_store(settings, data_dir)
    restrict_state(data_dir)
    model_user = model_code_user_of(settings, data_dir, script_python)
    scheduler = Scheduler(
        store,
        metrics,
        lease_s=settings.lease_s,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        max_attempts=settings.max_attempts,
        retry_backoff_s=settings.retry_backoff_s,
    )
    archive_limits = ArchiveLimits(
        max_bytes=settings.max_archive_bytes, max_members=settings.max_archive_members
    )
    # Creates bind a bundle's key while uploads to it end under the same lock.
    key_locks = KeyLocks()
    # The runtime each job, model and transform runs on (framework_version), built on demand.
    runtimes = ControlRuntimes(settings.runtimes_dir, settings.script_runtime)
    training_jobs = TrainingJobs(
        store,
        scheduler,
        artifacts,
        metrics,
        archive_limits=archive_limits,
        key_locks=key_locks,
        resolve_runtime=runtimes.resolve,
    )
    scheduler.register(TaskKind.TRAINING, training_jobs)
    # Optuna logs every trial at INFO; the tuning loop logs what matters itself.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuning_jobs = TuningJobs(store, training_jobs, artifacts, metrics)
    metrics.track_queue_depth(scheduler.queue_depth)
    # Its pid file lets a restarted control stop children a killed run left still draining.
    supervisor = WorkerSupervisor(pid_file=data_dir / "work" / "local-workers.json")
    models = ModelRegistry(store, artifacts, resolve_runtime=runtimes.resolve)
    transform_jobs = TransformJobs(
        store,
        scheduler,
        artifacts,
        models,
        metrics,
        target_shard_bytes=settings.transform_shard_bytes,
        resolve_runtime=runtimes.resolve,
    )
    scheduler.register(TaskKind.TRANSFORM, transform_jobs)
    # Processes the control starts get tokens of their own, each scoped to what it needs.
    scoped_tokens = ScopedTokens() if settings.auth_enabled else None
    service.scoped_tokens = scoped_tokens
    if scoped_tokens is not None and settings.worker_tokens_file:
        for name, token in read_tokens_file(Path(settings.worker_tokens_file)).items():
            scoped_tokens.grant(token, worker_scope(f"worker {name}"))
    service.call_limiter = control_call_limiter(settings, scoped_tokens, metrics)

    worker_tokens: dict[str, str] = {}

    def issue_worker_token(name: str) -> str:
        # One per worker name: batch workers come and go with the transform jobs.
        assert scoped_tokens is not None
        if name not in worker_tokens:
            worker_tokens[name] = scoped_tokens.issue(worker_scope(f"local worker {name}"))
        return worker_tokens[name]

    # Set once the port is bound; batch workers started later are pointed at it.
    control_address = ""
    bound_port = 0

    def batch_spec(runtime: str, index: int) -> WorkerSpec | None:
        # A worker runs handlers in-process: on its models' runtime, once that is built.
        try:
            python = runtimes.python_if_ready(runtime) if runtime else script_python.python
        except (InvalidArgument, RuntimeError) as err:
            logging.getLogger(__name__).warning("no batch worker on %s: %s", runtime, err)
            return None  # asked again each pass: a failed build is retried after a while
        if python is None:
            return None
        spec = batch_worker_spec(
            index,
            data_dir=data_dir,
            control_address=control_address,
            extra_args=settings.batch_args,
            python=python,
            runtime=runtime,
            extra_env=child_environment("SKMAKER_BATCH_", settings),
            run_as=model_user,
        )
        token = _worker_token(settings, spec.name, issue_worker_token)
        return replace(spec, token=token)

    # Transforms waiting on a runtime: its build starts here; Describe says why they wait.
    transform_waits = TransformWaits(scheduler, runtimes)
    local_batch = LocalBatchWorkers(
        supervisor,
        batch_spec,
        transform_jobs.wanted_workers,
        max_workers=settings.local_batch_workers_max,
        idle_s=settings.local_batch_idle_s,
    )

    def training_demand() -> TrainingDemand:
        tasks = scheduler.unfinished(TaskKind.TRAINING)
        leased_by = frozenset(t.worker_id for t in tasks if t.state is TaskState.LEASED)
        return TrainingDemand(len(tasks), leased_by)

    def trainer_spec(index: int) -> WorkerSpec:
        return trainer_specs(settings, bound_port, [index], issue_worker_token)[0]

    local_trainers = LocalTrainers(
        supervisor,
        trainer_spec,
        training_demand,
        min_trainers=settings.local_trainers,
        max_trainers=(
            default_max_trainers()
            if settings.local_trainers_max is None
            else settings.local_trainers_max
        ),
        idle_s=settings.local_trainers_idle_s,
    )

    def on_replica_event(endpoint_name: str, message: str) -> None:
        endpoints.record_event(endpoint_name, message)

    # Replicas run the model's code in-process: each gets a token that reads its model only.
    credentials = ReplicaCredentials(scoped_tokens, models) if scoped_tokens else None

    def replica_python(endpoint: str, model_name: str) -> str | None:
        model = models.describe(model_name, endpoint_name=endpoint)
        return runtimes.python_if_ready(model.script_runtime)

    backend = replica_backend(
        settings,
        store,
        on_replica_event,
        script_python,
        credentials.issue if credentials else None,
        model_user,
        replica_python,
        lambda endpoint, name: (
            models.describe(name, endpoint_name=endpoint).script_runtime or runtimes.default_name()
        ),
    )
    endpoints = Endpoints(
        store, models, backend, metrics, max_replicas=settings.max_endpoint_replicas
    )
    runtimes.add_listener(_build_events(runtimes, endpoints, models))
    sd_file = (
        ScrapeTargetsFile(Path(settings.prometheus_sd_file))
        if settings.prometheus_sd_file
        else None
    )
    autoscaling = Autoscaling(
        endpoints,
        load_source(settings),
        metrics,
        interval_s=settings.autoscale_interval_s,
        on_scrape_targets=sd_file.write if sd_file is not None else None,
    )

    def endpoint_address(name: str) -> str | None:
        try:
            return endpoints.describe(name).endpoint.address or None
        except NotFound:
            return None

    def on_bound(grpc_port: int) -> None:
        # Children need the real port, known only once bound (--grpc-port=0 in tests).
        nonlocal control_address, bound_port
        control_address = f"127.0.0.1:{grpc_port}"
        bound_port = grpc_port
        if settings.local:
            local_trainers.reconcile()  # the minimum, or more for tasks queued before a restart
        if backend is not None:
            backend.start(f"127.0.0.1:{grpc_port}")

    def on_start() -> None:
        supervisor.start()
        endpoints.start()

    def on_drain() -> None:
        # Children that exit on the group's SIGTERM are not restarted.
        supervisor.begin_shutdown()
        endpoints.begin_shutdown()
        training_jobs.close()

    def on_stop() -> None:
        # Replicas drain in parallel with the trainers' shutdown; both before the store closes.
        endpoints.close()
        supervisor.stop()
        store.close()

    service.servicers = [
        lifecycle.Servicer(
            training_pb2_grpc.add_TrainingServiceServicer_to_server,
            TrainingServicer(training_jobs),
            training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
        ),
        lifecycle.Servicer(
            tuning_pb2_grpc.add_TuningServiceServicer_to_server,
            TuningServicer(tuning_jobs),
            tuning_pb2.DESCRIPTOR.services_by_name["TuningService"].full_name,
        ),
        lifecycle.Servicer(
            transform_pb2_grpc.add_TransformServiceServicer_to_server,
            TransformServicer(transform_jobs, transform_waits.message),
            transform_pb2.DESCRIPTOR.services_by_name["TransformService"].full_name,
        ),
        lifecycle.Servicer(
            artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server,
            ArtifactsServicer(
                artifacts, metrics, training_jobs, worker_or_marked(scoped_tokens), key_locks
            ),
            artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
        ),
        lifecycle.Servicer(
            serving_pb2_grpc.add_ModelServiceServicer_to_server,
            ModelServicer(models),
            serving_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
        ),
        lifecycle.Servicer(
            serving_pb2_grpc.add_EndpointServiceServicer_to_server,
            EndpointServicer(endpoints),
            serving_pb2.DESCRIPTOR.services_by_name["EndpointService"].full_name,
        ),
        lifecycle.Servicer(
            runtimes_pb2_grpc.add_RuntimeServiceServicer_to_server,
            RuntimeServicer(runtimes),
            runtimes_pb2.DESCRIPTOR.services_by_name["RuntimeService"].full_name,
        ),
        lifecycle.Servicer(
            dispatch_pb2_grpc.add_DispatchServiceServicer_to_server,
            DispatchServicer(scheduler, ReplicaRuntimes(endpoints, models).report),
            dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"].full_name,
        ),
    ]
    service.unlisted_handlers = [MisdirectedInferenceHandler(endpoint_address)]
    service.on_bound = on_bound
    service.on_start = on_start
    # Started after on_start, in this order; drained (loops stop, long polls end) last first
    # before on_drain: the local worker loops first, so children exiting on the group's SIGTERM
    # are not replaced, and autoscaling before the endpoints shut down.
    components: list[Component] = [
        scheduler,
        autoscaling,
        tuning_jobs.loop,
        transform_jobs.assembler,
        transform_waits.loop,
    ]
    if settings.local:
        components += [local_batch.loop, local_trainers.loop]
    service.components = components
    service.on_drain = on_drain
    service.on_stop = on_stop
    return service
