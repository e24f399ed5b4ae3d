"""The swarm backend's settings, from the control's (the docker backend's flags plus the
swarm_* ones)."""

from __future__ import annotations

from collections.abc import Callable

from services.control.backends.replica_runtime import SupervisionSettings
from services.control.backends.swarm import SwarmBackendSettings
from services.control.config import ControlSettings


def swarm_settings(
    settings: ControlSettings,
    supervision: SupervisionSettings,
    extra_args: tuple[str, ...],
    python: str,
    issue_token: Callable[[str, str, str], str] | None,
    runtime_for: Callable[[str, str], str] | None = None,
    runtimes_path: str = "",
) -> SwarmBackendSettings:
    """The swarm backend's settings: the docker backend's flags plus the swarm_* ones."""
    return SwarmBackendSettings(
        docker_url=settings.docker_url,
        image=settings.docker_image,
        network=settings.docker_network,
        control_address=settings.docker_control_address,
        endpoint_address=settings.docker_endpoint_address,
        auth_token=settings.auth_token,
        extra_args=extra_args,
        supervision=supervision,
        python=python,
        cpu_reservation=settings.swarm_cpu_reservation,
        memory_reservation_mb=settings.swarm_memory_reservation_mb,
        constraints=tuple(c.strip() for c in settings.swarm_constraints.split(",") if c.strip()),
        spread=settings.swarm_spread,
        issue_token=issue_token,
        control_lost_exit_s=settings.replica_control_lost_exit_s,
        runtimes_volume=settings.docker_runtimes_volume,
        runtimes_path=runtimes_path,
        runtime_for=runtime_for,
    )
