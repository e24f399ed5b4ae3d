"""The Docker replica backend: inference replicas as containers the control starts itself.

Each replica is a container of the skmaker image (by default the image the control's own
container runs) on the deployment's network (by default the control's own), running
`python -m services.inference` against the control. It is named `<network>-<endpoint>-<replica>`,
which Docker's DNS resolves on that network, so its gRPC address is `<name>:50051` (health
checks, the gateway) and its /metrics `<name>:8000` (Prometheus' file-SD list, autoscaling).
Labels (`LABEL_*`) tie it to the deployment, endpoint and replica, and to the control run that
started it. `supervisor.ReplicaSupervisor` decides when containers start, get replaced and
drain (SIGTERM, SIGKILL after the grace period); this module runs them, removes the exited
ones, and stops those a previous control left: the ones recorded in the ledger (container id)
and any other container labelled with the endpoint on this deployment's network.

Containers are not auto-removed: an exited one is kept until the supervisor read why it failed
(its failure file, through the Engine API's archive call) and its last log lines.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import tarfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from services.control.backends import EventSink, RecordedReplica, ReplicaLedger
from services.control.backends.replica_runtime import (
    EndpointAddress,
    LaunchError,
    Leftover,
    ReplicaPython,
    ReplicaSpec,
    SupervisionSettings,
    port_of,
    python_ready,
    replica_python,
)
from services.control.backends.supervisor import ReplicaSupervisor

log = logging.getLogger(__name__)

BACKEND_NAME = "docker"
GRPC_PORT = 50051
METRICS_PORT = 8000
# Inside the replica's container; read back with the archive call once it exited.
FAILURE_FILE = "/tmp/skmaker-replica-failure.txt"
# Inside the replica's container: the control's TLS files, copied in before it starts.
TLS_DIR = "/tmp/skmaker-tls"
LABEL_MANAGED = "skmaker.managed"
LABEL_NETWORK = "skmaker.network"
LABEL_ENDPOINT = "skmaker.endpoint"
LABEL_REPLICA = "skmaker.replica"
LABEL_MODEL = "skmaker.model"
LABEL_RUN = "skmaker.control-run"
_DNS_LABEL_MAX = 63
_LOG_TAIL_LINES = 12
_EXITED = ("exited", "dead")


@dataclass(frozen=True)
class DockerBackendSettings:
    """How the Docker backend runs replicas (plain values taken from ControlSettings).

    Attributes:
        docker_url: the Docker Engine API, e.g. unix:///var/run/docker.sock.
        image: the replicas' image; empty: the image of the control's own container.
        network: the network replicas join; empty: the control's own container's network.
        control_address: where replicas reach the control; empty: the control's container
            name and gRPC port.
        endpoint_address: the Address every endpoint reports (e.g. the gateway's).
        auth_token: given to replicas through their environment, never argv, when there is no
            `issue_token`.
        caller_token_sha256: digests (hex, comma-separated) of the people's tokens replicas
            accept; empty: replicas take no token.
        environment: added to each replica's environment (the metrics token).
        tls: the control's TLS settings as `tls.TLS_FIELDS` name -> value; the files are
            copied into each replica's container (`TLS_DIR`) before it starts.
        extra_args: extra flags for every replica.
        supervision: start, health and drain timings.
        python: the interpreter inside the image that runs replicas (the script runtime's)
            when `python_for` is not given.
        control_lost_exit_s: a replica stops once the control has not answered this long
            (its `--control-lost-exit-s`; a container cannot hold the control's lifeline).
        python_for: the interpreter of each model's replicas (its own script runtime's, on
            the runtimes volume mounted at the same path in the replicas).
        runtimes_volume: a volume mounted into every replica at `runtimes_path` (where
            runtimes built on demand live); empty mounts none.
        runtimes_path: where the runtimes folder is, in the control and the replicas.
    """

    docker_url: str = "unix:///var/run/docker.sock"
    image: str = ""
    network: str = ""
    control_address: str = ""
    endpoint_address: str = ""
    auth_token: str = ""
    caller_token_sha256: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    tls: Mapping[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    python: str = "python"
    # (endpoint, replica id, model) -> the replica's own token; None gives it `auth_token`.
    issue_token: Callable[[str, str, str], str] | None = None
    control_lost_exit_s: float = 120.0
    python_for: ReplicaPython | None = None
    runtimes_volume: str = ""
    runtimes_path: str = ""


# ----------------------------------------------------------------- the container, as values


def container_name(prefix: str, endpoint: str, replica_id: str) -> str:
    """`<prefix>-<endpoint>-<replica>`, shortened (with a hash) to fit one DNS label."""
    name = f"{prefix}-{endpoint}-{replica_id}"
    if len(name) <= _DNS_LABEL_MAX:
        return name
    digest = hashlib.sha256(f"{prefix}/{endpoint}".encode()).hexdigest()[:10]
    return f"{prefix[:16]}-{endpoint[:24]}-{digest}-{replica_id}"[:_DNS_LABEL_MAX]


def replica_labels(network: str, spec: ReplicaSpec, run_id: str) -> dict[str, str]:
    """The labels of a replica's container."""
    return {
        LABEL_MANAGED: "true",
        LABEL_NETWORK: network,
        LABEL_ENDPOINT: spec.endpoint_name,
        LABEL_REPLICA: spec.replica_id,
        LABEL_MODEL: spec.model_name,
        LABEL_RUN: run_id,
    }


def leftover_filters(network: str, endpoint: str) -> dict[str, str | list[str] | bool]:
    """The Engine API filter finding every replica container of `endpoint` on `network`."""
    return {
        "label": [
            f"{LABEL_MANAGED}=true",
            f"{LABEL_NETWORK}={network}",
            f"{LABEL_ENDPOINT}={endpoint}",
        ]
    }


def replica_command(
    spec: ReplicaSpec,
    control_address: str,
    shutdown_grace_s: float,
    extra_args: Sequence[str],
    python: str = "python",
    control_lost_exit_s: float = 0.0,
) -> list[str]:
    """The replica container's command (the image's conventions: ports 50051 and 8000)."""
    return [
        python,
        "-m",
        "services.inference",
        "--control",
        control_address,
        "--endpoint-name",
        spec.endpoint_name,
        "--model-name",
        spec.model_name,
        "--replica-id",
        spec.replica_id,
        "--host",
        "0.0.0.0",
        "--grpc-port",
        str(GRPC_PORT),
        "--metrics-port",
        str(METRICS_PORT),
        "--shutdown-grace-s",
        str(shutdown_grace_s),
        "--failure-file",
        FAILURE_FILE,
        "--control-lost-exit-s",
        str(control_lost_exit_s),
        *extra_args,
    ]


def tls_files(tls_settings: Mapping[str, str]) -> tuple[dict[str, str], bytes]:
    """A replica's TLS environment and the tar archive of its files (for `put_archive`).

    Each file setting (`tls_cert_file`, ...) becomes `TLS_DIR/<name>.pem` inside the container,
    readable by the control's user (the image's, which the replica runs as) alone; the
    environment points the replica's settings there. Empty without TLS settings.
    """
    environment: dict[str, str] = {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        folder = tarfile.TarInfo(TLS_DIR.rsplit("/", 1)[1])
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        folder.uid, folder.gid = os.getuid(), os.getgid()
        archive.addfile(folder)
        for name, value in sorted(tls_settings.items()):
            variable = "SKMAKER_INFERENCE_" + name.upper()
            if not value or not name.endswith("_file"):
                if value:
                    environment[variable] = value
                continue
            data = Path(value).read_bytes()
            stem = name.removeprefix("tls_").removesuffix("_file")  # cert, key, ca, client_ca
            member = tarfile.TarInfo(f"{folder.name}/{stem}.pem")
            member.size, member.mode = len(data), 0o600
            member.uid, member.gid = os.getuid(), os.getgid()
            archive.addfile(member, io.BytesIO(data))
            environment[variable] = f"{TLS_DIR}/{stem}.pem"
            if name == "tls_ca_file":  # for the image's HEALTHCHECK (services.runtime.healthcheck)
                environment["SKMAKER_HEALTHCHECK_TLS_CA_FILE"] = environment[variable]
    if not environment:
        return {}, b""
    return environment, buffer.getvalue()


def exit_code_of(state: Mapping[str, Any]) -> int | None:
    """A container's exit code from its inspected `State`; None while it runs or starts."""
    if state.get("Status") in _EXITED:
        return int(state.get("ExitCode", -1))
    return None


# ----------------------------------------------------------------- running containers


@dataclass(frozen=True)
class _FixedAddress:
    """The Address every endpoint reports; nothing to hold."""

    address: str

    def release(self) -> None:
        """Nothing to free."""


class _ReplicaContainer:
    """A replica's container, as `RunningReplica`."""

    def __init__(self, container: Container, name: str) -> None:
        self._container = container
        self._name = name
        self._exit_code: int | None = None

    @property
    def handle(self) -> str:
        return str(self._container.id)

    @property
    def label(self) -> str:
        return f"container {self._name}"

    def addresses(self) -> tuple[str, str]:
        return f"{self._name}:{GRPC_PORT}", f"{self._name}:{METRICS_PORT}"

    def poll(self) -> int | None:
        if self._exit_code is None:
            try:
                self._container.reload()
                self._exit_code = exit_code_of(self._container.attrs.get("State", {}))
            except docker.errors.NotFound:
                self._exit_code = -1  # removed behind our back
            except docker.errors.DockerException as err:
                log.warning("cannot inspect %s: %s", self._name, err)
        return self._exit_code

    def terminate(self) -> None:
        _signal(self._container, "SIGTERM")

    def kill(self) -> None:
        _signal(self._container, "SIGKILL")

    def failure_text(self) -> str:
        try:
            chunks, _stat = self._container.get_archive(FAILURE_FILE)
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
                member = archive.extractfile(archive.getmembers()[0])
                text = member.read().decode(errors="replace") if member is not None else ""
        except (docker.errors.DockerException, tarfile.TarError, IndexError):
            return ""  # no failure file: the replica did not explain itself
        return " ".join(text.split())

    def log_tail(self) -> str:
        try:
            output = self._container.logs(tail=_LOG_TAIL_LINES).decode(errors="replace")
        except docker.errors.DockerException as err:
            return f"(cannot read the logs of {self._name}: {err})"
        lines = [line for line in output.splitlines() if line.strip()]
        return " | ".join(lines) or "(nothing)"

    def release(self) -> None:
        _remove(self._container)


@dataclass
class _LeftoverContainer:
    """A replica container a previous control run left, being drained and removed."""

    container: Container
    replica_id: str
    label: str
    kill_at: float
    killed: bool = False

    def is_gone(self) -> bool:
        try:
            self.container.reload()
        except docker.errors.NotFound:
            return True
        except docker.errors.DockerException as err:
            log.warning("cannot inspect leftover %s: %s", self.label, err)
            return False
        if exit_code_of(self.container.attrs.get("State", {})) is not None:
            _remove(self.container)
            return True
        if time.monotonic() >= self.kill_at and not self.killed:
            _signal(self.container, "SIGKILL")
            self.killed = True
        return False


def _signal(container: Container, signal_name: str) -> None:
    _tolerating_gone(f"send {signal_name} to", container, lambda: container.kill(signal_name))


def _remove(container: Container) -> None:
    # Its work dir is in its own file system, which goes with it; `v` takes anonymous volumes
    # (an image's VOLUME) along too, so nothing of a gone replica stays on the host.
    _tolerating_gone("remove", container, lambda: container.remove(force=True, v=True))


def _tolerating_gone(what: str, container: Container, call: Callable[[], object]) -> None:
    """Runs `call`; a container already gone (404) or already stopping or being removed (409)
    is what was wanted anyway."""
    try:
        call()
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as err:
        if err.status_code != 409:
            log.warning("cannot %s %s: %s", what, container.name, err)


class DockerContainers:
    """`ReplicaRuntime` of containers started through the Docker Engine API.

    The client connects on first use, so a control whose Docker socket is unreachable still
    serves everything but endpoints (whose replicas fail with the reason).
    """

    def __init__(self, settings: DockerBackendSettings) -> None:
        """Runs replicas as `settings` say; nothing is contacted yet."""
        self._settings = settings
        self._client: docker.DockerClient | None = None
        self._image = settings.image
        self._network = settings.network
        self._control_host = ""
        # Tells this run's containers from those a previous control left.
        self._run_id = uuid.uuid4().hex

    def claim_address(self, endpoint: str, wanted: str) -> tuple[EndpointAddress, str]:
        """Every endpoint reports the configured address (callers go through the gateway)."""
        return _FixedAddress(self._settings.endpoint_address), ""

    def ready_to_launch(self, endpoint: str, model: str) -> bool:
        """False while the model's script runtime is being built."""
        return python_ready(self._settings.python_for, endpoint, model)

    def launch(self, spec: ReplicaSpec) -> _ReplicaContainer:
        """Creates and starts the replica's container."""
        python = replica_python(self._settings.python_for, spec, self._settings.python)
        client = self._connect()
        name = container_name(self._network, spec.endpoint_name, spec.replica_id)
        control = self._settings.control_address or (
            f"{self._control_host}:{port_of(spec.control_address)}"
        )
        tls_environment, tls_archive = tls_files(self._settings.tls)
        environment = {**self._settings.environment, **tls_environment}
        if self._settings.caller_token_sha256:
            # The container's environment is the model code's to read: it gets a token that
            # can read its own model only, and a digest of the callers' token.
            own = (
                self._settings.issue_token(spec.endpoint_name, spec.replica_id, spec.model_name)
                if self._settings.issue_token
                else self._settings.auth_token
            )
            environment["SKMAKER_INFERENCE_AUTH_TOKEN"] = own
            environment["SKMAKER_INFERENCE_AUTH_TOKEN_SHA256"] = self._settings.caller_token_sha256
        try:
            container = client.containers.create(
                self._image,
                replica_command(
                    spec,
                    control,
                    self._settings.supervision.shutdown_grace_s,
                    self._settings.extra_args,
                    python,
                    self._settings.control_lost_exit_s,
                ),
                name=name,
                hostname=name,
                labels=replica_labels(self._network, spec, self._run_id),
                # Through the environment, not argv, so the token never shows in `ps`.
                environment=environment,
                network=self._network,
                init=True,  # reaps the orphans of the user's scripts
                detach=True,
                # Runtimes built on demand live on a volume, at the control's own path.
                volumes=(
                    {
                        self._settings.runtimes_volume: {
                            "bind": self._settings.runtimes_path,
                            "mode": "ro",
                        }
                    }
                    if self._settings.runtimes_volume and self._settings.runtimes_path
                    else None
                ),
            )
        except docker.errors.DockerException as err:
            raise LaunchError(f"creating container {name}: {err}") from err
        try:
            if tls_archive:
                container.put_archive(TLS_DIR.rsplit("/", 1)[0], tls_archive)
            container.start()
        except docker.errors.DockerException as err:
            _remove(container)
            raise LaunchError(f"starting container {name}: {err}") from err
        return _ReplicaContainer(container, name)

    def stop_leftovers(
        self, endpoint: str, recorded: Sequence[RecordedReplica], kill_after_s: float
    ) -> list[Leftover]:
        """SIGTERMs the endpoint's containers on this network that an earlier run started
        (found by label, recorded or not), and removes those that already exited."""
        try:
            client = self._connect()
            found = client.containers.list(
                all=True, filters=leftover_filters(self._network, endpoint)
            )
        except (docker.errors.DockerException, LaunchError) as err:
            log.warning("cannot look for containers an earlier control left: %s", err)
            return []
        stopping: list[Leftover] = []
        for container in found:
            labels = container.labels
            if labels.get(LABEL_RUN) == self._run_id:
                continue
            if exit_code_of(container.attrs.get("State", {})) is not None:
                _remove(container)
                continue
            _signal(container, "SIGTERM")
            stopping.append(
                _LeftoverContainer(
                    container,
                    labels.get(LABEL_REPLICA, "?"),
                    f"container {container.name}",
                    time.monotonic() + kill_after_s,
                )
            )
        return stopping

    def _connect(self) -> docker.DockerClient:
        """The Engine API client, with the image, network and control host settled.

        Raises:
            LaunchError: Docker cannot be reached, or a default cannot be found.
        """
        if self._client is not None:
            return self._client
        try:
            client = docker.DockerClient(base_url=self._settings.docker_url)
        except docker.errors.DockerException as err:
            raise LaunchError(
                f"cannot reach Docker at {self._settings.docker_url} ({err}); is the socket "
                "mounted, and is the control in the socket's group?"
            ) from err
        if not (self._image and self._network and self._settings.control_address):
            self._settle_defaults(client)
        self._client = client
        return client

    def _settle_defaults(self, client: docker.DockerClient) -> None:
        """Takes what was not configured from the container the control runs in."""
        # Docker names a container's host after its id, which the API accepts as a prefix.
        try:
            own = client.containers.get(socket.gethostname())
        except docker.errors.DockerException as err:
            missing = [
                flag
                for flag, value in (
                    ("--docker-image", self._image),
                    ("--docker-network", self._network),
                    ("--docker-control-address", self._settings.control_address),
                )
                if not value
            ]
            raise LaunchError(
                f"the control does not run in a container Docker knows ({err}): "
                f"set {', '.join(missing)}"
            ) from err
        self._image = self._image or str(own.attrs["Image"])
        self._control_host = str(own.name)
        if not self._network:
            networks = sorted(own.attrs["NetworkSettings"]["Networks"])
            if len(networks) != 1:
                raise LaunchError(
                    f"the control's container is on networks {networks}: set --docker-network"
                )
            self._network = networks[0]


class DockerReplicaBackend(ReplicaSupervisor):
    """`ReplicaBackend` running replicas as Docker containers; see the module docstring."""

    def __init__(
        self, settings: DockerBackendSettings, ledger: ReplicaLedger, on_event: EventSink
    ) -> None:
        """Prepares the backend; Docker is contacted when the first replica starts."""
        super().__init__(
            BACKEND_NAME, DockerContainers(settings), settings.supervision, ledger, on_event
        )
