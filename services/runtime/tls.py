"""TLS for skmaker: what a server presents, how a process checks the servers it calls.

A service serves TLS when it has `--tls-cert-file` and `--tls-key-file` (PEM); with
`--tls-client-ca-file` too, every caller must present a certificate signed by that CA
(mutual TLS). Health checks then need TLS as well: a plaintext caller cannot even start.

A service calls other services (workers and replicas call the control, the gateway calls the
control and the replicas, the control checks and drains its replicas) over TLS when it has
`--tls-ca-file`: the CA that signed their certificates. It then shows its own certificate
(`--tls-cert-file`/`--tls-key-file`) to servers that ask for one. `--tls-server-name` checks
every server's certificate against one name rather than each address's host (replica
containers have names nobody can list in a certificate in advance).

Only file paths travel between processes (`child_environment`); key material is read from
the files, never passed on argv or in the environment.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

TLS_FIELDS = (
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "tls_ca_file",
    "tls_server_name",
)


class TlsSettingsLike(Protocol):
    """The TLS fields of `ServiceSettings` (kept structural so tools can pass their own)."""

    @property
    def tls_cert_file(self) -> str: ...
    @property
    def tls_key_file(self) -> str: ...
    @property
    def tls_client_ca_file(self) -> str: ...
    @property
    def tls_ca_file(self) -> str: ...
    @property
    def tls_server_name(self) -> str: ...


def check(settings: TlsSettingsLike) -> None:
    """Refuses TLS settings that cannot work, naming the flag.

    Raises:
        ValueError: a certificate without its key (or the other way round), a client CA
            without a server certificate, or a file that cannot be read.
    """
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ValueError("--tls-cert-file and --tls-key-file go together: give both or neither")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        raise ValueError("--tls-client-ca-file (mutual TLS) needs --tls-cert-file/--tls-key-file")
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_ca_file"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            raise ValueError(f"--{name.replace('_', '-')} {path}: no such file")


def server_credentials(settings: TlsSettingsLike) -> grpc.ServerCredentials | None:
    """The gRPC server's TLS credentials; None when the service serves plaintext."""
    if not settings.tls_cert_file:
        return None
    key = Path(settings.tls_key_file).read_bytes()
    chain = Path(settings.tls_cert_file).read_bytes()
    client_ca = (
        Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def server_ssl_context(settings: TlsSettingsLike) -> ssl.SSLContext | None:
    """An SSL context for an HTTPS server (/metrics) with the same rules as the gRPC server."""
    if not settings.tls_cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file:
        context.load_verify_locations(settings.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(frozen=True)
class ClientTls:
    """How this process checks the servers it calls and what certificate it shows them.

    Attributes:
        root_certificates: PEM of the CA that signed the servers' certificates.
        certificate_chain: PEM of this process's own certificate (mutual TLS), or None.
        private_key: PEM of its key, or None.
        server_name: the name every server's certificate is checked against; empty: the host
            of each address.
        files: the paths these came from (for HTTPS clients, which read files themselves).
    """

    root_certificates: bytes
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str = ""
    files: tuple[str, str, str] = ("", "", "")

    @classmethod
    def from_settings(cls, settings: TlsSettingsLike) -> ClientTls | None:
        """The settings' client side; None when links are plaintext (no `--tls-ca-file`)."""
        if not settings.tls_ca_file:
            return None
        own = bool(settings.tls_cert_file and settings.tls_key_file)
        return cls(
            root_certificates=Path(settings.tls_ca_file).read_bytes(),
            certificate_chain=Path(settings.tls_cert_file).read_bytes() if own else None,
            private_key=Path(settings.tls_key_file).read_bytes() if own else None,
            server_name=settings.tls_server_name,
            files=(
                settings.tls_ca_file,
                settings.tls_cert_file if own else "",
                settings.tls_key_file if own else "",
            ),
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """Channel options that check the server's certificate against `server_name`."""
        if not self.server_name:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context for HTTPS calls (scraping /metrics) with the same rules."""
        ca_file, cert_file, key_file = self.files
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
        if self.server_name:
            # The name is checked below (`server_hostname`), not against the URL's host.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def open_channel(
    address: str, options: Sequence[tuple[str, Any]] = (), tls: ClientTls | None = None
) -> grpc.Channel:
    """A channel to `address`: TLS when `tls` is given, plaintext otherwise."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(
        address, tls.credentials(), options=[*options, *tls.channel_options()]
    )


def child_environment(prefix: str, settings: TlsSettingsLike) -> dict[str, str]:
    """The TLS settings as environment variables of a child service (`prefix` + NAME).

    Paths are made absolute, since the child may run elsewhere; only paths are passed.
    """
    values: dict[str, str] = {}
    for name in TLS_FIELDS:
        value = str(getattr(settings, name))
        if value:
            values[prefix + name.upper()] = (
                value if name == "tls_server_name" else str(Path(value).resolve())
            )
    return values
