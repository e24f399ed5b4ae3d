"""ControlSettings: every knob of the control service, read once in `__main__`.

Each field is a flag (`lease_s` -> `--lease-s`) with `SKMAKER_CONTROL_<NAME>` behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.runtime.auth import PeopleTokens, people_tokens, read_tokens_file, token_sha256
from services.runtime.settings import ServiceSettings, setting

GIB = 1024**3
# Where endpoint replicas can run; "none" serves no endpoints (CreateEndpoint is refused).
REPLICA_BACKENDS = ("local", "docker", "swarm", "none")


@dataclass(frozen=True)
class ControlSettings(ServiceSettings):
    """skmaker control: training jobs, models, endpoints, artifacts and the worker task queue."""

    grpc_port: int = setting(50051, "gRPC port of the public and worker APIs", flags=["--port"])
    data_dir: str = setting("./.skmaker", "folder holding control.db and artifacts/")
    local: bool = setting(
        False, "also start trainer workers, and batch workers while transforms run, as children"
    )
    local_trainers: int = setting(
        1, "trainer children --local keeps running without work (more start as tasks queue)"
    )
    local_trainers_max: int | None = setting(
        None,
        "the most trainer children --local runs (one per queued or running training task); "
        "default the core count; 0 runs none",
    )
    local_trainers_idle_s: float = setting(
        5.0, "--local stops trainers beyond --local-trainers idle this many seconds"
    )
    trainer_args: str = setting("", "extra flags (shell syntax) given to each local trainer")
    script_runtime: str = setting(
        "", "script runtime (runtimes/<name>.lock) user code runs in; empty: the newest"
    )
    runtimes_dir: str = setting("", "where script runtimes are built; empty: .venv-runtimes/")
    lease_s: float = setting(10.0, "seconds a task lease lasts without a heartbeat")
    heartbeat_interval_s: float = setting(2.0, "how often workers are told to heartbeat")
    max_attempts: int = setting(3, "leases a task gets before its job fails (lost workers)")
    retry_backoff_s: float = setting(
        1.0, "delay before a lost task is retried; doubles per attempt"
    )
    max_upload_bytes: int = setting(10 * GIB, "largest artifact UploadArtifact accepts")
    max_archive_bytes: int = setting(
        GIB, "most bytes a source bundle may unpack to; larger ones are refused at create"
    )
    max_archive_members: int = setting(10_000, "most files and folders a source bundle may hold")
    max_streams: int = setting(
        128, "log follows, uploads and downloads served at once, on threads of their own"
    )
    max_streams_per_caller: int = setting(
        32, "streams one caller (token, or address without one) may hold open at once"
    )
    stream_idle_timeout_s: float = setting(
        60.0, "an upload that sends nothing for this long is ended and its data discarded"
    )
    max_worker_transfers: int = setting(
        64, "workers' downloads and uploads served at once, apart from users' streams"
    )
    max_long_polls: int = setting(
        128, "workers' task polls (AcquireTask) waiting at once, on threads of their own"
    )
    max_long_polls_per_caller: int = setting(
        64, "task polls one caller (token, or address without one) may have waiting at once"
    )
    artifact_store: str = setting(
        "",
        "where artifacts live: empty for <data-dir>/artifacts, or s3://BUCKET[/PREFIX] in an "
        "S3-compatible store (endpoint and credentials from AWS_ENDPOINT_URL, "
        "AWS_ACCESS_KEY_ID, ... or ~/.aws, as boto3 reads them)",
    )
    artifact_presign_endpoint: str = setting(
        "",
        "the S3 endpoint presigned URLs name, when workers and clients reach the store at "
        "another address than the control; empty for the control's",
    )
    artifact_url_ttl_s: int = setting(3600, "how long a presigned artifact URL works")
    replica_backend: str = setting(
        "",
        "where endpoint replicas run: local, docker, swarm or none; empty means local with --local",
    )
    replica_args: str = setting("", "extra flags (shell syntax) given to each replica")
    replica_control_lost_exit_s: float = setting(
        120.0, "a Docker replica stops once the control has not answered this long (0: never)"
    )
    job_user: str = setting(
        "skmaker-job",
        "with the control running as root, the user local replicas and batch workers run model "
        "code as (created when missing); empty: root",
    )
    replica_start_timeout_s: float = setting(
        180.0, "a replica not SERVING this long after its start is killed and retried"
    )
    replica_start_attempts: int = setting(
        2, "starts a replica gets when it dies before serving without a failure file"
    )
    replica_health_interval_s: float = setting(0.5, "how often replicas are health-checked")
    replica_health_timeout_s: float = setting(1.0, "deadline of one replica health check")
    replica_unhealthy_checks: int = setting(
        3, "failed health checks in a row after which a serving replica is replaced"
    )
    replica_shutdown_grace_s: float = setting(
        5.0, "seconds a draining replica gets to finish in-flight requests (then SIGKILL + 5s)"
    )
    docker_url: str = setting(
        "unix:///var/run/docker.sock", "Docker Engine API of the docker replica backend"
    )
    docker_image: str = setting(
        "", "image of replica containers; empty: the image of the control's own container"
    )
    docker_network: str = setting(
        "", "network replica containers join; empty: the control's own container's network"
    )
    docker_control_address: str = setting(
        "", "where replica containers reach the control; empty: its container name and port"
    )
    docker_endpoint_address: str = setting(
        "", "the Address every endpoint reports with the docker backend (e.g. the gateway's)"
    )
    swarm_cpu_reservation: float = setting(
        0.0, "CPUs the swarm backend reserves for each replica on its node; 0: none"
    )
    swarm_memory_reservation_mb: int = setting(
        0, "memory (MiB) the swarm backend reserves for each replica on its node; 0: none"
    )
    swarm_constraints: str = setting(
        "", "placement constraints of swarm replicas, comma-separated (node.labels.x==y)"
    )
    swarm_spread: bool = setting(True, "spread each endpoint's swarm replicas across nodes")
    docker_runtimes_volume: str = setting(
        "",
        "a Docker volume holding the runtimes folder (--runtimes-dir), mounted at that path "
        "into replica containers so runtimes built on demand serve; empty mounts none",
    )
    max_endpoint_replicas: int = setting(16, "the most replicas one endpoint may have")
    transform_shard_bytes: int = setting(
        16 * 1024 * 1024, "a Line-split transform input is cut into shards of about this size"
    )
    local_batch_workers_max: int = setting(
        2, "the most batch workers --local runs (a transform job asks for its instance count)"
    )
    local_batch_idle_s: float = setting(
        5.0, "--local stops batch workers no transform job needs after this many seconds"
    )
    batch_args: str = setting("", "extra flags (shell syntax) given to each local batch worker")
    autoscale_interval_s: float = setting(
        1.0, "how often endpoints with a scaling policy are measured and scaled"
    )
    worker_tokens_file: str = setting(
        "",
        "tokens of workers the control does not start (trainer and batch containers), one "
        "'name:token' a line: each may lease and report tasks and move artifacts, nothing else",
    )
    prometheus_url: str = setting(
        "", "read replica load by PromQL from this Prometheus (http://host:9090); empty: scrape"
    )
    prometheus_sd_file: str = setting(
        "", "keep a Prometheus file_sd JSON of every replica's /metrics address at this path"
    )

    @property
    def auth_enabled(self) -> bool:
        """True when callers need a token (a single one, a tokens file or digests)."""
        return bool(self.auth_token or self.auth_tokens_file or self.auth_token_sha256)

    def people(self) -> PeopleTokens:
        """The people's tokens callers may present (already checked by `settings.load`)."""
        return people_tokens(self.auth_token, self.auth_tokens_file, self.auth_token_sha256)

    @property
    def effective_replica_backend(self) -> str:
        """The backend in use: `replica_backend`, else local with --local, else none."""
        if self.replica_backend:
            return self.replica_backend
        return "local" if self.local else "none"

    def check(self) -> None:
        """Refuses settings that cannot work together.

        Raises:
            ValueError: an unknown replica backend, or a non-positive replica or autoscaling
                knob.
        """
        if self.effective_replica_backend not in REPLICA_BACKENDS:
            raise ValueError(
                f"--replica-backend {self.replica_backend!r} is unknown: use one of "
                + ", ".join(REPLICA_BACKENDS)
            )
        if self.replica_start_attempts < 1 or self.max_endpoint_replicas < 1:
            raise ValueError("--replica-start-attempts and --max-endpoint-replicas must be >= 1")
        if self.transform_shard_bytes < 1 or self.local_batch_workers_max < 0:
            raise ValueError(
                "--transform-shard-bytes must be >= 1 and --local-batch-workers-max >= 0"
            )
        if self.local_trainers < 0 or (self.local_trainers_max or 0) < 0:
            raise ValueError("--local-trainers and --local-trainers-max must be >= 0")
        if not self.autoscale_interval_s > 0:
            raise ValueError("--autoscale-interval-s must be positive")
        limits = [self.max_streams, self.max_streams_per_caller, self.max_worker_transfers]
        limits += [self.max_long_polls, self.max_long_polls_per_caller]
        if min(limits) < 1 or self.stream_idle_timeout_s < 0:
            raise ValueError(
                "--max-streams, --max-long-polls, their per-caller limits and "
                "--max-worker-transfers must be >= 1, "
                "--stream-idle-timeout-s >= 0"
            )
        if self.worker_tokens_file and not (self.auth_token or self.auth_tokens_file):
            raise ValueError(
                "--worker-tokens-file needs people's tokens (--auth-token-file or "
                "--auth-tokens-file): without them every call is open anyway"
            )
        if self.worker_tokens_file:
            workers = read_tokens_file(Path(self.worker_tokens_file))
            people = self.people()
            if any(people.who(token_sha256(token)) for token in workers.values()):
                raise ValueError(f"{self.worker_tokens_file}: a worker has a person's token")
        starts_children = self.local or self.effective_replica_backend != "none"
        if self.tls_cert_file and not self.tls_ca_file and starts_children:
            raise ValueError(
                "--tls-cert-file: the workers and replicas the control starts check it with "
                "--tls-ca-file (the CA that signed it); give that too"
            )
