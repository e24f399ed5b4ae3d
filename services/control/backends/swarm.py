"""The Swarm replica backend: each inference replica a Docker Swarm service with one task.

The control talks to a swarm manager's Engine API (its own node's socket) and creates, per
replica, a service `<network>-<endpoint>-<replica>` (the same name and labels as the docker
backend's containers, `containers.replica_labels`) with one task, running `python -m
services.inference` against the control on the deployment's overlay network. The swarm places
the task on a node, honouring the settings' constraints and resource reservations. Swarm
spreads a service's tasks, not tasks of different services, so the spread across an endpoint's
replicas is done here: a new replica is kept off the nodes that already run more of the
endpoint's replicas than the least loaded ready node (`placement_constraints`; a replica still
stopping counts double, so the replacement of one that failed avoids its node, which may be on
its way down before the swarm noticed), and the swarm chooses among the rest.

The service uses DNS round-robin (`endpoint_mode: dnsrr`): its name resolves to its task's
address on the overlay, so its gRPC address is `<name>:50051` (health checks, the gateway) and
its /metrics `<name>:8000` (Prometheus' file-SD list, autoscaling), from any node. No virtual IP
and no routing mesh: both need the kernel's IPVS, which not every host has.

The swarm restarts nothing (`restart_policy: none`): `supervisor.ReplicaSupervisor` decides when
replicas start, get replaced and drain, as for the other backends. A replica counts as exited
once its task ended, or once the node it was placed on is down (its engine stopped or lost), so
a replica of a lost node is replaced on another. Draining removes the service: the swarm sends
SIGTERM to its task, and SIGKILL after the stop grace period (the drain timeout). A restarted
control removes the services a previous control left (found by label).

A replica's failure file lives on whichever node ran it, out of the manager's reach, so a
replica that cannot load its model is explained by its last log lines (the service's logs)
and retried once like any other early exit.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import docker.types

from services.control.backends import EventSink, RecordedReplica, ReplicaLedger
from services.control.backends.containers import (
    GRPC_PORT,
    LABEL_ENDPOINT,
    LABEL_REPLICA,
    LABEL_RUN,
    METRICS_PORT,
    container_name,
    leftover_filters,
    replica_command,
    replica_labels,
)
from services.control.backends.replica_runtime import (
    EndpointAddress,
    LaunchError,
    Leftover,
    ReplicaSpec,
    SupervisionSettings,
)
from services.control.backends.supervisor import ReplicaSupervisor
from services.runtime.auth import token_digest

log = logging.getLogger(__name__)

BACKEND_NAME = "swarm"
NANO = 1_000_000_000
MIB = 1024 * 1024
_LOG_TAIL_LINES = 12
# Task states after which the task's container no longer runs (swarmkit's TaskState).
ENDED_TASK_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned", "remove"})
# Engine API calls go to the manager; one that hangs must not stall the supervisor for long.
_API_TIMEOUT_S = 10
# How long a launch waits for the endpoint's newest replicas to be placed before spreading.
_ASSIGN_WAIT_S = 3.0
# Where a replica builds a runtime its node's volume lacks (its own container's work folder).
REPLICA_BUILD_DIR = "/var/lib/skmaker/work/runtimes"
# How much a replica still stopping counts against its node when spreading (a live one: 1).
_STOPPING_WEIGHT = 2


@dataclass(frozen=True)
class SwarmBackendSettings:
    """How the Swarm backend runs replicas (plain values taken from ControlSettings).

    Attributes:
        docker_url: a swarm manager's Engine API, e.g. unix:///var/run/docker.sock.
        image: the replicas' image; empty: the image the control's own container was made
            from (as the swarm gave it, e.g. `name:tag@sha256:...`).
        network: the overlay network replicas join (the stack's); required.
        control_address: where replicas reach the control, e.g. `control:50051`; required.
        endpoint_address: the Address every endpoint reports (e.g. the gateway's).
        auth_token: callers' token; replicas get their own through the service's environment.
        extra_args: extra flags for every replica.
        supervision: start, health and drain timings.
        python: the interpreter inside the image that runs replicas.
        cpu_reservation: CPUs the swarm reserves for each replica on its node (0: none).
        memory_reservation_mb: memory reserved for each replica (0: none).
        constraints: placement constraints of every replica (`node.labels.gpu==false`).
        spread: spread the endpoint's replicas across nodes (the default).
        control_lost_exit_s: a replica stops once the control has not answered this long (its
            `--control-lost-exit-s`; a task on another node cannot hold the control's lifeline).
        runtimes_volume: the named volume of script runtimes, mounted read-only (handlers are
            untrusted code) at `runtimes_path` in every replica: each node has its own (no
            volume is shared between nodes), made from the image's folder. Empty: none.
        runtimes_path: where the runtimes folder is in the image.
        runtime_for: (endpoint, model) -> the script runtime the model's replicas run on; with
            a runtimes volume, a replica starts through `services.runtime.runtime_on_demand`,
            which builds that runtime in the container first when the volume lacks it.
    """

    docker_url: str = "unix:///var/run/docker.sock"
    image: str = ""
    network: str = ""
    control_address: str = ""
    endpoint_address: str = ""
    auth_token: str = ""
    extra_args: tuple[str, ...] = ()
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    python: str = "python"
    cpu_reservation: float = 0.0
    memory_reservation_mb: int = 0
    constraints: tuple[str, ...] = ()
    spread: bool = True
    control_lost_exit_s: float = 120.0
    # (endpoint, replica id, model) -> the replica's own token; None gives it `auth_token`.
    issue_token: Callable[[str, str, str], str] | None = None
    runtimes_volume: str = ""
    runtimes_path: str = ""
    runtime_for: Callable[[str, str], str] | None = None


# ----------------------------------------------------------------- the service, as values


def placement_constraints(
    replicas_per_node: Mapping[str, int], ready_nodes: Sequence[str], configured: Sequence[str]
) -> list[str]:
    """The configured constraints, plus `node.id!=N` for every ready node N running more of
    the endpoint's replicas than the least loaded ready node.

    Args:
        replicas_per_node: node id -> how many of the endpoint's live replicas run there.
        ready_nodes: ids of the nodes the swarm may place tasks on now (ready, active).
        configured: the operator's constraints, kept first and unchanged.
    """
    if not ready_nodes:
        return list(configured)
    fewest = min(replicas_per_node.get(node, 0) for node in ready_nodes)
    crowded = sorted(node for node in ready_nodes if replicas_per_node.get(node, 0) > fewest)
    return [*configured, *(f"node.id!={node}" for node in crowded)]


def node_loads(replicas: Iterable[tuple[str, bool]]) -> Counter[str]:
    """How much of an endpoint each node carries, from its replicas' (node id, live) pairs
    (a replica still stopping is not live; one not placed yet has no node id).

    A stopping replica weighs double: it was removed because it failed or drains, and its node
    may be the one going away before the swarm noticed.
    """
    loads: Counter[str] = Counter()
    for node_id, live in replicas:
        if node_id:
            loads[node_id] += 1 if live else _STOPPING_WEIGHT
    return loads


def task_template(
    settings: SwarmBackendSettings,
    image: str,
    command: list[str],
    environment: Mapping[str, str],
    constraints: Sequence[str],
    name: str,
) -> docker.types.TaskTemplate:
    """The replica service's task: its container, reservations, placement and network."""
    drain_ns = int(settings.supervision.drain_timeout_s * NANO)
    container = docker.types.ContainerSpec(
        image,
        command=command,
        hostname=name,
        # Through the environment, not argv, so the token never shows in `ps`.
        env=dict(environment),
        init=True,  # reaps the orphans of the user's scripts
        stop_grace_period=drain_ns,
        # Not the image's HEALTHCHECK: the swarm would replace an unhealthy task behind the
        # supervisor, which probes the replica itself and decides.
        healthcheck=docker.types.Healthcheck(test=["NONE"]),
        mounts=[
            docker.types.Mount(settings.runtimes_path, settings.runtimes_volume, read_only=True)
        ]
        if settings.runtimes_volume and settings.runtimes_path
        else None,
    )
    resources = docker.types.Resources(
        cpu_reservation=int(settings.cpu_reservation * NANO) or None,
        mem_reservation=settings.memory_reservation_mb * MIB or None,
    )
    placement = docker.types.Placement(
        constraints=list(constraints) or None,
        preferences=[docker.types.PlacementPreference("spread", "node.id")]
        if settings.spread
        else None,
    )
    return docker.types.TaskTemplate(
        container,
        resources=resources,
        # The supervisor replaces replicas itself; the swarm must not restart one behind it.
        restart_policy=docker.types.RestartPolicy(condition="none"),
        placement=placement,
        networks=[settings.network],
    )


def replica_command_on_runtime(
    settings: SwarmBackendSettings, command: list[str], spec: ReplicaSpec
) -> tuple[list[str], str]:
    """`command` through the runtime launcher on the model's script runtime, and its name:
    `python -m services.runtime.runtime_on_demand ... NAME -- <command's arguments>` builds
    NAME in the container when the node's volume lacks it (from the volume's wheelhouse, within
    the replica start timeout), then runs the replica on it. Without a runtimes volume or
    `runtime_for`, or on the image's own runtime (`command`'s python): `command` and ""."""
    if not (settings.runtimes_volume and settings.runtimes_path and settings.runtime_for):
        return command, ""
    runtime = settings.runtime_for(spec.endpoint_name, spec.model_name)
    if command[0] == f"{settings.runtimes_path.rstrip('/')}/{runtime}/bin/python":
        return command, ""
    launcher = ["python", "-m", "services.runtime.runtime_on_demand"]
    dirs = ["--runtimes-dir", settings.runtimes_path, "--build-dir", REPLICA_BUILD_DIR]
    return [*launcher, *dirs, runtime, "--", *command[1:]], runtime


def latest_task(tasks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The service's newest task (the swarm may keep older ones of the same slot)."""
    if not tasks:
        return None
    return max(tasks, key=lambda task: (str(task.get("CreatedAt", "")), str(task.get("ID"))))


def task_exit_code(task: Mapping[str, Any], node_down: bool) -> int | None:
    """The exit code of a task that ended, -1 when it ended without one or its node is down;
    None while it is pending, starting or running on a live node."""
    status = task.get("Status", {})
    if status.get("State") in ENDED_TASK_STATES:
        code = status.get("ContainerStatus", {}).get("ExitCode")
        return int(code) if isinstance(code, int) else -1
    return -1 if node_down else None


# ----------------------------------------------------------------- running services


@dataclass(frozen=True)
class _FixedAddress:
    """The Address every endpoint reports; nothing to hold."""

    address: str

    def release(self) -> None:
        """Nothing to free."""


class _SwarmClient:
    """The manager's Engine API, with what the replica services need from it."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def tasks(self, service_id: str = "", task_id: str = "") -> list[Mapping[str, Any]]:
        """The service's tasks, or the one task `task_id` (still listed after its service was
        removed, until the swarm forgot it); empty once gone."""
        filters = {"id": task_id} if task_id else {"service": service_id}
        try:
            return list(self.client.api.tasks(filters=filters))  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return []

    def node_down(self, node_id: str) -> bool:
        """True when the node left or its engine is lost (the swarm says down or unknown)."""
        if not node_id:
            return False
        try:
            node = self.client.nodes.get(node_id)
        except docker.errors.NotFound:
            return True
        return str(node.attrs.get("Status", {}).get("State", "")) in ("down", "unknown")

    def ready_nodes(self) -> list[str]:
        """Ids of the nodes the swarm may place new tasks on."""
        return [
            str(node.id)
            for node in self.client.nodes.list()
            if node.attrs.get("Status", {}).get("State") == "ready"
            and node.attrs.get("Spec", {}).get("Availability") == "active"
        ]

    def remove(self, service_id: str) -> None:
        """Removes the service (its task is stopped: SIGTERM, SIGKILL after the grace)."""
        try:
            self.client.api.remove_service(service_id)  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            log.warning("cannot remove service %s: %s", service_id, err)


class _ReplicaService:
    """A replica's one-task service, as `RunningReplica`."""

    def __init__(self, swarm: _SwarmClient, service_id: str, name: str) -> None:
        self._swarm = swarm
        self._service_id = service_id
        self._name = name
        self._exit_code: int | None = None
        self._removed = False
        self._task_id = ""
        self.node_id = ""  # where the swarm placed its task, once it did

    @property
    def handle(self) -> str:
        return self._service_id

    @property
    def label(self) -> str:
        return f"service {self._name}"

    @property
    def live(self) -> bool:
        """Neither removed nor exited: it holds its node's share of the endpoint."""
        return not self._removed and self._exit_code is None

    @property
    def stopping(self) -> bool:
        """Removed, and its task not known to have ended yet."""
        return self._removed and self._exit_code is None

    def addresses(self) -> tuple[str, str]:
        return f"{self._name}:{GRPC_PORT}", f"{self._name}:{METRICS_PORT}"

    def poll(self) -> int | None:
        if self._exit_code is not None:
            return self._exit_code
        try:
            if self._removed:
                # The service is gone; its task is listed until it stopped and was reaped.
                found = self._swarm.tasks(task_id=self._task_id) if self._task_id else []
            else:
                found = self._swarm.tasks(service_id=self._service_id)
            task = latest_task(found)
            if task is None:
                # Before removal: not scheduled yet. After: the swarm forgot it (it ended).
                self._exit_code = -1 if self._removed else None
                return self._exit_code
            self._task_id = str(task.get("ID", ""))
            self.node_id = str(task.get("NodeID", ""))
            self._exit_code = task_exit_code(task, self._swarm.node_down(self.node_id))
        except docker.errors.DockerException as err:
            log.warning("cannot inspect %s: %s", self._name, err)
        return self._exit_code

    def terminate(self) -> None:
        self._remove()

    def kill(self) -> None:
        # The swarm has no signal call for a task on another node: removing the service
        # stops the task, with SIGKILL after the stop grace period.
        self._remove()

    def failure_text(self) -> str:
        return ""  # the failure file is on the task's node; see the module docstring

    def log_tail(self) -> str:
        try:
            chunks = self._swarm.client.api.service_logs(
                self._service_id, stdout=True, stderr=True, tail=str(_LOG_TAIL_LINES)
            )
            output = b"".join(chunks).decode(errors="replace")
        except docker.errors.DockerException as err:
            return f"(cannot read the logs of {self._name}: {err})"
        lines = [line for line in output.splitlines() if line.strip()]
        return " | ".join(lines) or "(nothing)"

    def release(self) -> None:
        self._remove()

    def _remove(self) -> None:
        if not self._removed:
            self._removed = True
            self._swarm.remove(self._service_id)


@dataclass
class _LeftoverService:
    """A replica service a previous control run left, being removed."""

    swarm: _SwarmClient
    service_id: str
    replica_id: str
    label: str

    def is_gone(self) -> bool:
        try:
            tasks = self.swarm.tasks(self.service_id)
            return all(
                task_exit_code(task, self.swarm.node_down(str(task.get("NodeID", "")))) is not None
                for task in tasks
            )
        except docker.errors.DockerException as err:
            log.warning("cannot inspect leftover %s: %s", self.label, err)
            return False


class SwarmServices:
    """`ReplicaRuntime` of one-task swarm services created through a manager's Engine API.

    The client connects on first use, so a control whose manager is unreachable still serves
    everything but endpoints (whose replicas fail with the reason).
    """

    def __init__(self, settings: SwarmBackendSettings) -> None:
        """Runs replicas as `settings` say; nothing is contacted yet."""
        self._settings = settings
        self._swarm: _SwarmClient | None = None
        self._image = settings.image
        # Tells this run's services from those a previous control left.
        self._run_id = uuid.uuid4().hex
        self._services: dict[str, list[_ReplicaService]] = {}
        self.tell: Callable[[str, str], None] = lambda endpoint, message: None  # events

    def claim_address(self, endpoint: str, wanted: str) -> tuple[EndpointAddress, str]:
        """Every endpoint reports the configured address (callers go through the gateway)."""
        return _FixedAddress(self._settings.endpoint_address), ""

    def ready_to_launch(self, endpoint: str, model: str) -> bool:
        """Always: a replica gets its model's script runtime on its own node (see
        `replica_command_on_runtime`), where the control cannot build it beforehand."""
        return True

    def launch(self, spec: ReplicaSpec) -> _ReplicaService:
        """Creates the replica's service; the swarm places and starts its task."""
        swarm = self._connect()
        name = container_name(self._settings.network, spec.endpoint_name, spec.replica_id)
        environment = {}
        if self._settings.auth_token:
            # The service's environment is the model code's to read: it gets a token that
            # can read its own model only, and a digest of the callers' token.
            own = (
                self._settings.issue_token(spec.endpoint_name, spec.replica_id, spec.model_name)
                if self._settings.issue_token
                else self._settings.auth_token
            )
            environment = {
                "SKMAKER_INFERENCE_AUTH_TOKEN": own,
                "SKMAKER_INFERENCE_AUTH_TOKEN_SHA256": token_digest(self._settings.auth_token),
            }
        command, runtime = replica_command_on_runtime(
            self._settings,
            replica_command(
                spec,
                self._settings.control_address,
                self._settings.supervision.shutdown_grace_s,
                self._settings.extra_args,
                self._settings.python,
                self._settings.control_lost_exit_s,
            ),
            spec,
        )
        try:
            constraints = self._constraints(swarm, spec.endpoint_name)
            template = task_template(
                self._settings, self._image, command, environment, constraints, name
            )
            created = swarm.client.api.create_service(  # type: ignore[no-untyped-call]
                template,
                name=name,
                labels=replica_labels(self._settings.network, spec, self._run_id),
                mode=docker.types.ServiceMode("replicated", replicas=1),
                endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            )
        except docker.errors.DockerException as err:
            raise LaunchError(f"creating service {name}: {err}") from err
        replica = _ReplicaService(swarm, str(created["ID"]), name)
        if runtime:
            self.tell(
                spec.endpoint_name,
                f"replica {spec.replica_id} runs on runtime {runtime}: on a node whose runtimes "
                "volume lacks it, it builds it in its container first (its log shows the build)",
            )
        # Kept until their tasks ended: a stopping replica still weighs on its node.
        kept = [r for r in self._services.get(spec.endpoint_name, []) if r.live or r.stopping]
        self._services[spec.endpoint_name] = [*kept, replica]
        return replica

    def _constraints(self, swarm: _SwarmClient, endpoint: str) -> list[str]:
        """The configured constraints, plus the spread across nodes (see the module)."""
        if not self._settings.spread:
            return list(self._settings.constraints)
        known = self._services.get(endpoint, [])
        live = [replica for replica in known if replica.live]
        # Replicas launched a moment ago (the same pass) are spread too: the scheduler assigns
        # a task within milliseconds, so wait for that briefly rather than place blind.
        end = time.monotonic() + _ASSIGN_WAIT_S
        while any(not r.node_id for r in live) and time.monotonic() < end:
            time.sleep(0.05)
            for replica in live:
                if not replica.node_id:
                    replica.poll()
        for replica in known:
            if replica.stopping:
                replica.poll()  # the supervisor may have let go of it already
        per_node = node_loads(
            (replica.node_id, replica.live) for replica in known if replica.live or replica.stopping
        )
        return placement_constraints(per_node, swarm.ready_nodes(), self._settings.constraints)

    def stop_leftovers(
        self, endpoint: str, recorded: Sequence[RecordedReplica], kill_after_s: float
    ) -> list[Leftover]:
        """Removes the endpoint's services on this network that an earlier run created
        (found by label, recorded or not); their tasks get the stop grace period."""
        try:
            swarm = self._connect()
            found = swarm.client.services.list(
                filters=leftover_filters(self._settings.network, endpoint)
            )
        except (docker.errors.DockerException, LaunchError) as err:
            log.warning("cannot look for services an earlier control left: %s", err)
            return []
        stopping: list[Leftover] = []
        for service in found:
            labels = service.attrs.get("Spec", {}).get("Labels", {})
            if labels.get(LABEL_RUN) == self._run_id or labels.get(LABEL_ENDPOINT) != endpoint:
                continue
            swarm.remove(str(service.id))
            stopping.append(
                _LeftoverService(
                    swarm,
                    str(service.id),
                    labels.get(LABEL_REPLICA, "?"),
                    f"service {service.name}",
                )
            )
        return stopping

    def _connect(self) -> _SwarmClient:
        """The manager's Engine API client, with the image settled.

        Raises:
            LaunchError: the manager cannot be reached, or a setting is missing.
        """
        if self._swarm is not None:
            return self._swarm
        if not (self._settings.network and self._settings.control_address):
            raise LaunchError(
                "the swarm backend needs --docker-network (the stack's overlay network) and "
                "--docker-control-address (e.g. control:50051)"
            )
        try:
            client = docker.DockerClient(base_url=self._settings.docker_url, timeout=_API_TIMEOUT_S)
            client.swarm.reload()
            if not client.swarm.attrs.get("ID"):
                raise LaunchError(f"the engine at {self._settings.docker_url} is no swarm manager")
        except docker.errors.DockerException as err:
            raise LaunchError(
                f"cannot reach a swarm manager at {self._settings.docker_url} ({err}); is the "
                "socket mounted, does the control run on a manager node, and is it in the "
                "socket's group?"
            ) from err
        if not self._image:
            self._image = _own_image(client)
        self._swarm = _SwarmClient(client)
        return self._swarm


def _own_image(client: docker.DockerClient) -> str:
    """The image reference the control's own container was created from."""
    try:
        own = client.containers.get(socket.gethostname())
    except docker.errors.DockerException as err:
        raise LaunchError(
            f"the control does not run in a container this engine knows ({err}): set --docker-image"
        ) from err
    return str(own.attrs.get("Config", {}).get("Image") or own.attrs["Image"])


class SwarmReplicaBackend(ReplicaSupervisor):
    """`ReplicaBackend` running replicas as swarm services; see the module docstring."""

    def __init__(
        self, settings: SwarmBackendSettings, ledger: ReplicaLedger, on_event: EventSink
    ) -> None:
        """Prepares the backend; the manager is contacted when the first replica starts."""
        services = SwarmServices(settings)
        super().__init__(BACKEND_NAME, services, settings.supervision, ledger, on_event)
        services.tell = self._event
