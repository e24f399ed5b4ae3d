"""ControlSettings: defaults, flags (with the --port alias) and SKMAKER_CONTROL_* variables."""

from __future__ import annotations

from services.control.config import ControlSettings
from services.runtime.settings import load


def test_defaults() -> None:
    settings = load(ControlSettings, [], {}, env_prefix="SKMAKER_CONTROL_")
    assert (settings.grpc_port, settings.host, settings.data_dir) == (
        50051,
        "127.0.0.1",
        "./.skmaker",
    )
    assert (settings.local, settings.local_trainers, settings.lease_s) == (False, 1, 10.0)
    assert (settings.max_attempts, settings.retry_backoff_s) == (3, 1.0)
    assert settings.max_upload_bytes == 10 * 1024**3


def test_flags_beat_environment() -> None:
    settings = load(
        ControlSettings,
        ["--port", "6000", "--local", "--lease-s", "1", "--trainer-args", "--x 1"],
        {"SKMAKER_CONTROL_GRPC_PORT": "7000", "SKMAKER_CONTROL_MAX_ATTEMPTS": "5"},
        env_prefix="SKMAKER_CONTROL_",
    )
    assert (settings.grpc_port, settings.local, settings.lease_s) == (6000, True, 1.0)
    assert (settings.max_attempts, settings.trainer_args) == (5, "--x 1")
