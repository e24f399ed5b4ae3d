"""The Docker backend's pure parts: replica container names, labels, command, exit states.

The Engine API itself is exercised for real by `make test-compose` (tests/compose/).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from services.control.backends.containers import (
    FAILURE_FILE,
    LABEL_ENDPOINT,
    LABEL_MANAGED,
    LABEL_NETWORK,
    LABEL_REPLICA,
    LABEL_RUN,
    TLS_DIR,
    container_name,
    exit_code_of,
    leftover_filters,
    replica_command,
    replica_labels,
    tls_files,
)
from services.control.backends.replica_runtime import ReplicaSpec, port_of
from services.inference.config import ENV_PREFIX, InferenceSettings
from services.runtime.settings import load
from tests.certificates import make_certificates


class _Address:
    address = "gateway:50051"

    def release(self) -> None:
        pass


SPEC = ReplicaSpec("iris", "iris-model", "r-3", "127.0.0.1:41000", _Address())


def test_container_name_is_prefix_endpoint_replica() -> None:
    assert container_name("skmaker", "iris", "r-3") == "skmaker-iris-r-3"


def test_long_names_fit_one_dns_label_and_stay_distinct() -> None:
    long_a = "a" * 60
    long_b = "a" * 59 + "b"
    name_a = container_name("skmaker", long_a, "r-12")
    name_b = container_name("skmaker", long_b, "r-12")
    assert len(name_a) <= 63 and len(name_b) <= 63
    assert name_a != name_b
    assert name_a.endswith("-r-12")


def test_labels_tie_the_container_to_deployment_endpoint_replica_and_run() -> None:
    labels = replica_labels("skmaker", SPEC, "run-1")
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_NETWORK] == "skmaker"
    assert labels[LABEL_ENDPOINT] == "iris"
    assert labels[LABEL_REPLICA] == "r-3"
    assert labels[LABEL_RUN] == "run-1"
    # The leftover filter selects exactly what these labels say, whatever the run.
    assert set(leftover_filters("skmaker", "iris")["label"]) <= {
        f"{key}={value}" for key, value in labels.items()
    }


def test_command_is_an_inference_replica_the_inference_settings_accept() -> None:
    argv = replica_command(SPEC, "control:50051", 5.0, ["--max-payload-bytes", "1000"])
    assert argv[:3] == ["python", "-m", "services.inference"]
    settings = load(InferenceSettings, argv[3:], {}, env_prefix=ENV_PREFIX)
    assert settings.control == "control:50051"
    assert (settings.endpoint_name, settings.model_name, settings.replica_id) == (
        "iris",
        "iris-model",
        "r-3",
    )
    assert (settings.host, settings.grpc_port, settings.metrics_port) == ("0.0.0.0", 50051, 8000)
    assert settings.failure_file == FAILURE_FILE
    assert settings.max_payload_bytes == 1000
    assert not any("token" in arg for arg in argv)  # the token goes through the environment


def test_command_runs_on_the_script_runtimes_python_in_the_image() -> None:
    python = "/opt/skmaker-runtimes/sklearn-1.9/bin/python"
    argv = replica_command(SPEC, "control:50051", 5.0, [], python)
    assert argv[:3] == [python, "-m", "services.inference"]


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ({"Status": "running", "ExitCode": 0}, None),
        ({"Status": "created", "ExitCode": 0}, None),
        ({"Status": "restarting", "ExitCode": 1}, None),
        ({"Status": "exited", "ExitCode": 0}, 0),
        ({"Status": "exited", "ExitCode": 137}, 137),
        ({"Status": "dead", "ExitCode": 1}, 1),
    ],
)
def test_exit_code_comes_from_the_inspected_state(
    state: dict[str, object], code: int | None
) -> None:
    assert exit_code_of(state) == code


def test_port_of() -> None:
    assert port_of("control:50051") == 50051
    assert port_of("gateway") == 0


def test_tls_files_go_into_the_container_and_the_replica_settings_find_them(
    tmp_path: Path,
) -> None:
    certs = make_certificates(tmp_path)
    environment, archive = tls_files(
        {
            "tls_cert_file": str(certs.cert),
            "tls_key_file": str(certs.key),
            "tls_ca_file": str(certs.ca),
            "tls_client_ca_file": "",
            "tls_server_name": "skmaker",
        }
    )
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert tar.extractfile(members["skmaker-tls/key.pem"]).read() == certs.key.read_bytes()  # type: ignore[union-attr]
    assert members["skmaker-tls"].mode == 0o700 and members["skmaker-tls/key.pem"].mode == 0o600
    assert environment["SKMAKER_INFERENCE_TLS_KEY_FILE"] == f"{TLS_DIR}/key.pem"
    assert environment["SKMAKER_INFERENCE_TLS_SERVER_NAME"] == "skmaker"
    assert environment["SKMAKER_HEALTHCHECK_TLS_CA_FILE"] == f"{TLS_DIR}/ca.pem"
    assert "SKMAKER_INFERENCE_TLS_CLIENT_CA_FILE" not in environment
    assert certs.key.read_text() not in repr(environment), "paths only, never key material"
    assert tls_files({"tls_cert_file": "", "tls_ca_file": ""}) == ({}, b"")
