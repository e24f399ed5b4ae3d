"""The local replica backend: inference replicas as processes on this machine (`--local`).

Replicas are started by `local_process.launch_replica` in their own sessions, and all bind the
endpoint's stable port P (reserved by the control, see `shared_ports`) once their model loaded;
each also binds its own port, which it reports in its port file and which is health-checked.
`supervisor.ReplicaSupervisor` decides when replicas start, get replaced and drain; this module
only runs them. Started replicas are recorded (id, pid) in the `ReplicaLedger`, so a restarted
control stops those its predecessor left (`local_process.stop_leftover`).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from services.control.backends import EventSink, RecordedReplica, ReplicaLedger
from services.control.backends.local_process import (
    LocalBackendSettings,
    ReplicaFiles,
    ReplicaLaunch,
    ReplicaProcess,
    launch_replica,
    remove_files_of_gone_replicas,
    stop_leftover,
)
from services.control.backends.replica_runtime import (
    EndpointAddress,
    Leftover,
    ReplicaSpec,
    port_of,
    python_ready,
    replica_python,
)
from services.control.backends.shared_ports import reserve_shared_port
from services.control.backends.supervisor import ReplicaSupervisor

BACKEND_NAME = "local"


class _SharedPort:
    """An endpoint's stable address: a port reserved on the host, shared by its replicas."""

    def __init__(self, host: str, reservation: socket.socket) -> None:
        self.port = int(reservation.getsockname()[1])
        self.address = f"{host}:{self.port}"
        self._reservation: socket.socket | None = reservation

    def release(self) -> None:
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None


@dataclass(frozen=True)
class _LocalReplica:
    """A replica process, as `RunningReplica`."""

    started: ReplicaProcess
    host: str

    @property
    def handle(self) -> str:
        return str(self.started.process.pid)

    @property
    def label(self) -> str:
        return f"pid {self.started.process.pid}"

    def addresses(self) -> tuple[str, str]:
        ports = self.started.read_ports()
        if not ports.get("grpc"):
            return "", ""
        metrics = ports.get("metrics", 0)
        return f"{self.host}:{ports['grpc']}", f"{self.host}:{metrics}" if metrics else ""

    def poll(self) -> int | None:
        return self.started.process.poll()

    def terminate(self) -> None:
        self.started.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.started.process.kill()

    def failure_text(self) -> str:
        return self.started.failure_text()

    def log_tail(self) -> str:
        return self.started.log_tail()

    def release(self) -> None:
        """Removes its work dir, port file and failure file (the process was reaped by `poll`,
        and the supervisor read its failure text)."""
        self.started.files.remove()


class LocalProcesses:
    """`ReplicaRuntime` of local processes sharing a reserved port per endpoint."""

    def __init__(self, settings: LocalBackendSettings) -> None:
        """Runs replicas as `settings` say (their files under its data folder)."""
        self._settings = settings
        self._data_dir = settings.data_dir.resolve()
        # What a killed control left behind, but the folders of replicas still draining.
        remove_files_of_gone_replicas(self._data_dir)

    def claim_address(self, endpoint: str, wanted: str) -> tuple[EndpointAddress, str]:
        """Reserves the endpoint's port (`wanted`'s again when it is still free)."""
        host = self._settings.host
        try:
            owner = self._settings.run_as
            return _SharedPort(host, reserve_shared_port(host, port_of(wanted), owner)), ""
        except OSError as err:
            # Another program took the port while no replica held it: moving beats not
            # serving, and the new address is in DescribeEndpoint and the events.
            moved = _SharedPort(host, reserve_shared_port(host, 0, self._settings.run_as))
            return moved, (
                f"stable address {wanted} is no longer free ({err.strerror}); "
                f"the endpoint moved to port {moved.port}"
            )

    def ready_to_launch(self, endpoint: str, model: str) -> bool:
        """False while the model's script runtime is being built."""
        return python_ready(self._settings.python_for, endpoint, model)

    def launch(self, spec: ReplicaSpec) -> _LocalReplica:
        """Starts `python -m services.inference` for `spec` (see `launch_replica`)."""
        assert isinstance(spec.endpoint_address, _SharedPort)
        python = replica_python(self._settings.python_for, spec, self._settings.python)
        token, caller_digest = self._settings.replica_tokens(
            spec.endpoint_name, spec.replica_id, spec.model_name
        )
        started = launch_replica(
            ReplicaLaunch(
                data_dir=self._data_dir,
                control_address=spec.control_address,
                endpoint_name=spec.endpoint_name,
                model_name=spec.model_name,
                replica_id=spec.replica_id,
                host=self._settings.host,
                shared_port=spec.endpoint_address.port,
                shutdown_grace_s=self._settings.supervision.shutdown_grace_s,
                auth_token=token,
                caller_token_sha256=caller_digest,
                extra_args=self._settings.extra_args,
                python=python,
                environment=self._settings.environment,
                run_as=self._settings.run_as,
            )
        )
        return _LocalReplica(started, self._settings.host)

    def stop_leftovers(
        self, endpoint: str, recorded: Sequence[RecordedReplica], kill_after_s: float
    ) -> list[Leftover]:
        """SIGTERMs the recorded replicas whose pids still run them."""
        stopping: list[Leftover] = []
        for replica in recorded:
            files = ReplicaFiles(self._data_dir, endpoint, replica.replica_id)
            leftover = stop_leftover(
                endpoint, replica.replica_id, replica.handle, kill_after_s, files
            )
            if leftover is not None:
                stopping.append(leftover)
        return stopping


class LocalReplicaBackend(ReplicaSupervisor):
    """`ReplicaBackend` running replicas as local processes; see the module docstring."""

    def __init__(
        self, settings: LocalBackendSettings, ledger: ReplicaLedger, on_event: EventSink
    ) -> None:
        """Prepares the backend; no replica starts before `start()`."""
        super().__init__(
            BACKEND_NAME, LocalProcesses(settings), settings.supervision, ledger, on_event
        )
