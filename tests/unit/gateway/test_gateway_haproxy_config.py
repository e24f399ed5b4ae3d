"""The HAProxy configuration the gateway writes: HAProxy itself (`haproxy -c`) must accept it."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from services.gateway.config import GatewaySettings
from services.gateway.haproxy import HaproxyOptions, render_config

HAPROXY = shutil.which("haproxy")


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (make test installs it)")
@pytest.mark.parametrize("token", ["", "t$k{en}%[x]#1"])
def test_haproxy_accepts_the_configuration(tmp_path: Path, token: str) -> None:
    assert HAPROXY is not None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        options = HaproxyOptions(
            listen_fd=listener.fileno(),
            fallback_port=1,
            endpoint_slots=3,
            replica_slots=2,
            auth_token=token,
            retries=2,
            server_timeout_s=60.0,
            hard_stop_after_s=5.0,
        )
        map_path = tmp_path / "endpoints.map"
        map_path.write_text("")
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            render_config(options, map_path=map_path, socket_path=tmp_path / "admin.sock")
        )
        checked = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(config)],
            pass_fds=(listener.fileno(),),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert checked.returncode == 0, checked.stderr
    text = config.read_text()
    assert "backend ep2" in text and "server-template r 1-2" in text
    if token:
        assert f"'Bearer {token}'" in text, "the token stands verbatim"


def test_a_token_haproxy_cannot_quote_is_refused_up_front() -> None:
    settings = GatewaySettings(routes="e=127.0.0.1:1", data_plane="auto", auth_token="it's")
    if not settings.uses_haproxy:
        pytest.skip("haproxy is not installed: the Python data plane takes any token")
    with pytest.raises(ValueError, match="auth token"):
        settings.check()
    GatewaySettings(routes="e=127.0.0.1:1", data_plane="python", auth_token="it's").check()
