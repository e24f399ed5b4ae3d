"""Certificates tests make for TLS and mutual TLS (trustme: a throwaway CA per call).

`make_certificates(folder)` writes PEM files of one CA and one leaf that serves as both the
services' server certificate (127.0.0.1, localhost, skmaker) and their client certificate,
a second leaf for people's clients, and a leaf from an unrelated CA (refused everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files `make_certificates` wrote."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path

    def server_args(self, *, mutual: bool) -> list[str]:
        """Flags that make a service serve (mutual) TLS and call others over TLS."""
        args = [
            f"--tls-cert-file={self.cert}",
            f"--tls-key-file={self.key}",
            f"--tls-ca-file={self.ca}",
        ]
        return [*args, f"--tls-client-ca-file={self.ca}"] if mutual else args


def make_certificates(folder: Path) -> Certificates:
    """Writes a CA, a service certificate, a client certificate and a stranger's."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    service = authority.issue_cert("127.0.0.1", "localhost", "skmaker")
    client = authority.issue_cert("alice@example.com")
    stranger = trustme.CA().issue_cert("127.0.0.1", "localhost")
    files = Certificates(
        ca=folder / "ca.pem",
        cert=folder / "service.pem",
        key=folder / "service.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        stranger_cert=folder / "stranger.pem",
        stranger_key=folder / "stranger.key",
    )
    authority.cert_pem.write_to_path(str(files.ca))
    for leaf, cert, key in (
        (service, files.cert, files.key),
        (client, files.client_cert, files.client_key),
        (stranger, files.stranger_cert, files.stranger_key),
    ):
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return files
