"""The HAProxy configuration the gateway writes: HAProxy itself (`haproxy -c`) must accept it."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from services.gateway.haproxy import HaproxyOptions, HaproxyTls, render_config
from tests.certificates import make_certificates

HAPROXY = shutil.which("haproxy")
TOKEN = "t$k{en}%[x]#1 'quoted'"


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (make test installs it)")
@pytest.mark.parametrize("mode", ["plain", "token", "tls", "mutual-tls"])
def test_haproxy_accepts_the_configuration(tmp_path: Path, mode: str) -> None:
    assert HAPROXY is not None
    certs = make_certificates(tmp_path / "certs")
    pem = tmp_path / "gateway.pem"
    pem.write_bytes(certs.cert.read_bytes() + certs.key.read_bytes())
    digest = hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()
    tls = None
    if mode.endswith("tls"):
        tls = HaproxyTls(
            cert_file=str(certs.cert),
            key_file=str(certs.key),
            client_ca_file=str(certs.ca) if mode == "mutual-tls" else "",
            ca_file=str(certs.ca),
        )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        options = HaproxyOptions(
            listen_fd=listener.fileno(),
            fallback_port=1,
            endpoint_slots=3,
            replica_slots=2,
            header_digests=(digest,) if mode != "plain" else (),
            retries=2,
            server_timeout_s=60.0,
            hard_stop_after_s=5.0,
            tls=tls,
        )
        map_path = tmp_path / "endpoints.map"
        map_path.write_text("")
        tokens = tmp_path / "tokens.sha256"
        tokens.write_text(digest.upper() + "\n")
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            render_config(
                options,
                map_path=map_path,
                socket_path=tmp_path / "admin.sock",
                tokens_path=tokens,
                pem_path=pem,
            )
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
    assert TOKEN not in text, "HAProxy holds digests of the tokens, never a token"
    assert ("sha2(256)" in text) == (mode != "plain")
    assert (" ssl crt " in text) == (tls is not None)
    assert ("verify required" in text) == (tls is not None)
    assert (f"ca-file {certs.ca} verify required crt" in text) == (mode == "mutual-tls")
