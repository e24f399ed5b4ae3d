"""The Swarm backend's pure parts: spreading an endpoint's replicas, task states, the task spec.

The Engine API and a real two-node swarm are exercised by `make test-swarm` (tests/swarm/).
"""

from __future__ import annotations

from services.control.backends.containers import replica_command
from services.control.backends.replica_runtime import ReplicaSpec, SupervisionSettings
from services.control.backends.swarm import (
    NANO,
    SwarmBackendSettings,
    latest_task,
    node_loads,
    placement_constraints,
    replica_command_on_runtime,
    task_exit_code,
    task_template,
)


def test_a_new_replica_is_kept_off_nodes_that_already_run_more_of_the_endpoint() -> None:
    constraints = placement_constraints({"node-a": 1}, ["node-a", "node-b"], [])

    assert constraints == ["node.id!=node-a"]


def test_replicas_spread_evenly_then_any_node_may_take_the_next() -> None:
    assert placement_constraints({"node-a": 1, "node-b": 1}, ["node-a", "node-b"], []) == []


def test_a_node_that_is_not_ready_is_neither_excluded_nor_counted_as_least_loaded() -> None:
    # node-b is down: its replica is gone, so the only ready node takes the replacement.
    constraints = placement_constraints({"node-a": 1, "node-b": 1}, ["node-a"], [])

    assert constraints == []


def test_the_operators_constraints_come_first_and_unchanged() -> None:
    constraints = placement_constraints(
        {"node-a": 2, "node-b": 1}, ["node-a", "node-b", "node-c"], ["node.labels.serving==yes"]
    )

    assert constraints == ["node.labels.serving==yes", "node.id!=node-a", "node.id!=node-b"]


def test_the_replacement_of_a_failed_replica_avoids_the_node_it_is_still_stopping_on() -> None:
    # r-1 serves on node-a; r-2 failed its health checks on node-b, whose engine is going away
    # but the swarm still calls ready: the replacement must not land there.
    loads = node_loads([("node-a", True), ("node-b", False)])

    assert placement_constraints(loads, ["node-a", "node-b"], []) == ["node.id!=node-b"]


def test_replicas_not_placed_yet_weigh_on_no_node() -> None:
    assert node_loads([("", True), ("node-a", True)]) == {"node-a": 1}


def test_a_running_task_on_a_live_node_has_not_exited() -> None:
    task = {"Status": {"State": "running"}}

    assert task_exit_code(task, node_down=False) is None


def test_a_task_on_a_node_that_went_down_counts_as_exited() -> None:
    task = {"Status": {"State": "running"}}

    assert task_exit_code(task, node_down=True) == -1


def test_an_ended_task_reports_its_containers_exit_code() -> None:
    task = {"Status": {"State": "failed", "ContainerStatus": {"ExitCode": 3}}}

    assert task_exit_code(task, node_down=False) == 3


def test_a_task_that_ended_without_a_container_reports_minus_one() -> None:
    assert task_exit_code({"Status": {"State": "rejected"}}, node_down=False) == -1


def test_the_newest_task_of_a_service_is_the_one_watched() -> None:
    old = {"ID": "t1", "CreatedAt": "2026-12-06T21:00:00.1Z"}
    new = {"ID": "t2", "CreatedAt": "2026-12-06T21:00:05.1Z"}

    assert latest_task([new, old]) is new
    assert latest_task([]) is None


def test_the_task_reserves_resources_spreads_by_node_and_never_restarts() -> None:
    settings = SwarmBackendSettings(
        network="skmaker",
        cpu_reservation=0.5,
        memory_reservation_mb=256,
        supervision=SupervisionSettings(shutdown_grace_s=5.0, kill_margin_s=5.0),
    )

    template = task_template(
        settings, "sha256:abc", ["python"], {"K": "V"}, ["node.id!=x"], "skmaker-iris-r-1"
    )

    assert template["Resources"]["Reservations"] == {
        "NanoCPUs": NANO // 2,
        "MemoryBytes": 256 * 1024 * 1024,
    }
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["Placement"]["Constraints"] == ["node.id!=x"]
    assert template["Placement"]["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.id"}}]
    assert template["Networks"] == [{"Target": "skmaker"}]
    container = template["ContainerSpec"]
    assert container["Env"] == ["K=V"]
    assert container["Init"] is True
    assert container["Healthcheck"]["Test"] == ["NONE"]
    # The swarm SIGKILLs a draining replica after the drain timeout, as the supervisor would.
    assert container["StopGracePeriod"] == 10 * NANO


def test_without_spread_or_reservations_the_task_has_neither() -> None:
    settings = SwarmBackendSettings(network="skmaker", spread=False)

    template = task_template(settings, "img", ["python"], {}, [], "n")

    assert "Preferences" not in template.get("Placement", {})
    assert not template.get("Resources")


class _Address:
    address = "gateway:50051"

    def release(self) -> None:
        pass


def _spec() -> ReplicaSpec:
    return ReplicaSpec("iris", "old-model", "r-1", "control:50051", _Address())


def test_a_replica_mounts_its_nodes_runtimes_volume_read_only() -> None:
    settings = SwarmBackendSettings(
        network="skmaker", runtimes_volume="skmaker-runtimes", runtimes_path="/opt/skmaker-runtimes"
    )

    container = task_template(settings, "img", ["python"], {}, [], "n")["ContainerSpec"]

    # A named volume: each node has its own, made from the image's folder on first mount;
    # read-only, as the handlers a replica runs are untrusted code.
    assert container["Mounts"] == [
        {
            "Target": "/opt/skmaker-runtimes",
            "Source": "skmaker-runtimes",
            "Type": "volume",
            "ReadOnly": True,
        }
    ]
    assert (
        "Mounts"
        not in task_template(SwarmBackendSettings(), "img", [], {}, [], "n")["ContainerSpec"]
    )


def test_a_replica_starts_through_the_launcher_on_its_models_runtime() -> None:
    asked: list[tuple[str, str]] = []

    def runtime_for(endpoint: str, model: str) -> str:
        asked.append((endpoint, model))
        return "sklearn-1.2"

    settings = SwarmBackendSettings(
        runtimes_volume="skmaker-runtimes",
        runtimes_path="/opt/skmaker-runtimes",
        runtime_for=runtime_for,
    )
    command = replica_command(_spec(), "control:50051", 5.0, (), "python")

    launched, runtime = replica_command_on_runtime(settings, command, _spec())

    assert asked == [("iris", "old-model")] and runtime == "sklearn-1.2"
    assert launched[:8] == [
        "python",
        "-m",
        "services.runtime.runtime_on_demand",
        "--runtimes-dir",
        "/opt/skmaker-runtimes",
        # A runtime the volume lacks is built in the container's own work folder.
        "--build-dir",
        "/var/lib/skmaker/work/runtimes",
        "sklearn-1.2",
    ]
    # What follows `--` is the replica's own command line, without its interpreter.
    assert launched[8] == "--" and launched[9:] == command[1:]
    assert launched[9:11] == ["-m", "services.inference"]
    # Without a runtimes volume the replica runs on the image's own runtime, as before.
    assert replica_command_on_runtime(SwarmBackendSettings(), command, _spec()) == (command, "")
    # A model on the image's own runtime starts on its python directly.
    own = replica_command(
        _spec(), "control:50051", 5.0, (), "/opt/skmaker-runtimes/sklearn-1.2/bin/python"
    )
    assert replica_command_on_runtime(settings, own, _spec()) == (own, "")
