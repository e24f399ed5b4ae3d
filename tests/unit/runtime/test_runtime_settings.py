"""Every service's command line: exact flags only (no argparse prefix matching), `--port`."""

from __future__ import annotations

import logging

import pytest

from services.batch.config import BatchSettings
from services.control.config import ControlSettings
from services.gateway.config import GatewaySettings
from services.inference.config import InferenceSettings
from services.runtime import healthcheck, lifecycle
from services.runtime.settings import ServiceSettings, load
from services.trainer.config import TrainerSettings

ALL_SETTINGS = [BatchSettings, ControlSettings, GatewaySettings, InferenceSettings, TrainerSettings]


@pytest.mark.parametrize("settings_cls", ALL_SETTINGS, ids=lambda cls: cls.__name__)
def test_an_abbreviated_flag_is_refused(
    settings_cls: type[ServiceSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    # `--port-f` is a unique prefix of --port-file; argparse's default would accept it.
    with pytest.raises(SystemExit) as exited:
        load(settings_cls, ["--port-f", "/tmp/ports.json"], {}, env_prefix="SKMAKER_X_")
    assert exited.value.code == 2
    assert "unrecognized arguments: --port-f" in capsys.readouterr().err


def test_gateway_port_is_the_grpc_port_not_the_port_file() -> None:
    settings = load(GatewaySettings, ["--port", "53101"], {}, env_prefix="SKMAKER_GATEWAY_")
    assert (settings.grpc_port, settings.port_file) == (53101, "")


def test_healthcheck_refuses_an_abbreviated_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        healthcheck.main(["127.0.0.1:1", "--serv", "x"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --serv" in capsys.readouterr().err


def test_the_log_names_the_port_callers_use(caplog: pytest.LogCaptureFixture) -> None:
    # A front process (the gateway's HAProxy) owns the callers' port; the server listens
    # on a loopback port of its own, which callers must not be pointed at.
    service = lifecycle.Service(name="fronted", servicers=[], grpc_address="127.0.0.1:0")
    service.advertised_grpc_port = 53101
    settings = ServiceSettings(shutdown_grace_s=0.1)
    with caplog.at_level(logging.INFO, logger=lifecycle.__name__):
        running = lifecycle.start(service, settings)
    try:
        line = next(r.getMessage() for r in caplog.records if "listening" in r.getMessage())
        assert f"grpc=53101 metrics={running.metrics_port} internal={running.grpc_port}" in line
        assert running.address == "127.0.0.1:53101"
    finally:
        running.stop()
