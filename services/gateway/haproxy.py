"""The gateway's HAProxy data plane: its configuration, its process and its runtime API.

With `--data-plane haproxy` the port callers use belongs to an HAProxy child process. HAProxy
reads the endpoint name out of each Predict / V2 model call (field 1 of the first message: its
own `ungrpc` reader, or `grpc_route.lua` when the message is larger than its buffer), looks it
up in a map of endpoint -> backend, and forwards the HTTP/2 stream to
the least busy server of that backend, in C, on connections it keeps open: a Python hop costs
about as much as the model itself for an iris row. Everything else goes to the Python gateway,
which listens on a loopback port of its own: health and reflection, ServerLive/Ready/Metadata,
calls without a valid bearer token (it refuses them with the usual message), calls whose
endpoint HAProxy does not route (unknown, no serving replica yet, compressed messages) —
answered exactly as with `--data-plane python`.

The Python side keeps HAProxy's map and servers equal to the routing table through the runtime
API (`haproxy_routes`); HAProxy is never reloaded. Backends cannot be created at run time, so
the configuration declares `endpoint_slots` empty ones (`ep0`, `ep1`, ...) and an endpoint
takes a free slot while it is in the table.

The listening socket is bound by Python (so port 0 works and the port file is right before
HAProxy starts) and handed to HAProxy as an inherited file descriptor (`bind fd@N`).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from services.gateway.forwarder import FORWARDED_METHODS

log = logging.getLogger(__name__)

LUA_SCRIPT = Path(__file__).with_name("grpc_route.lua")
FALLBACK_BACKEND = "python"
_SERVER_PREFIX = "r"
_LEVELS = {"[ALERT]": logging.ERROR, "[WARNING]": logging.WARNING, "[NOTICE]": logging.INFO}
# One line per proxy at every stop, and per server the runtime API enables or parks.
_ROUTINE = re.compile(
    r"Proxy \S+ stopped|Stopping (frontend|backend|proxy)|(leaving|entering) forced maintenance"
    r"|haproxy version is|path to executable is"
)


def slot_backend(slot: int) -> str:
    """The name of endpoint slot `slot`'s backend."""
    return f"ep{slot}"


def replica_server(number: int) -> str:
    """The name of server `number` (from 1) of an endpoint backend."""
    return f"{_SERVER_PREFIX}{number}"


@dataclass(frozen=True)
class HaproxyOptions:
    """What the generated configuration depends on.

    Attributes:
        listen_fd: the inherited listening socket's file descriptor.
        fallback_port: the Python gateway's loopback gRPC port.
        endpoint_slots: how many endpoints HAProxy can route at once (the rest go via Python).
        replica_slots: how many replicas of one endpoint HAProxy can route to.
        header_digests: hex sha256 of each `Bearer <token>` callers may send; empty: no
            token is asked for.
        retries: how many times a call whose connection failed or was refused is sent again.
        server_timeout_s: the longest a replica may take to answer.
        hard_stop_after_s: how long a soft stop may last before HAProxy closes what is left.
        max_message_bytes: a routed call whose first message is longer is answered
            RESOURCE_EXHAUSTED by HAProxy itself (0: no check). A replica's gRPC server refuses
            such a message too, but HAProxy turns that refusal into CANCELLED for the caller.
        max_message_reason: what the refusal adds after the sizes (which setting sets it).
        tls: TLS on the callers' port and towards replicas; None: plaintext.
    """

    listen_fd: int
    fallback_port: int
    endpoint_slots: int
    replica_slots: int
    header_digests: tuple[str, ...]
    retries: int
    server_timeout_s: float
    hard_stop_after_s: float
    max_message_bytes: int = 0
    max_message_reason: str = ""
    tls: HaproxyTls | None = None


@dataclass(frozen=True)
class HaproxyTls:
    """HAProxy's TLS: its certificate, who may call it, how it checks the replicas.

    Attributes:
        cert_file: the gateway's certificate (PEM), shown to callers and, under mutual TLS,
            to replicas and the Python gateway.
        key_file: its private key; HAProxy reads both from one file `HaproxyProcess` writes.
        client_ca_file: mutual TLS: callers must show a certificate signed by this CA.
        ca_file: the CA replicas' certificates are checked with (their links are TLS then).
        server_name: the name replicas' certificates are checked against; empty: the chain
            alone (replicas are reached by IP address).
    """

    cert_file: str
    key_file: str
    client_ca_file: str = ""
    ca_file: str = ""
    server_name: str = ""


def max_connections(ceiling: int = 10_000) -> int:
    """HAProxy's `maxconn`: `ceiling`, or less when the open-file limit allows less.

    Without it HAProxy sizes itself from the open-file limit (about a million under Docker:
    tables for half a million connections a gateway never holds); with a fixed one above what
    the limit allows it refuses to start. Each connection may take two descriptors (caller and
    replica), and some are kept for listeners and the runtime API.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return ceiling
    return max(64, min(ceiling, (hard - 256) // 2))


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _tls_words(options: HaproxyOptions, pem_path: Path) -> tuple[str, str, str]:
    """(bind, replica server, Python gateway server) TLS words of the configuration."""
    tls = options.tls
    if tls is None:
        return "", "", ""
    bind = f" ssl crt {pem_path} alpn h2"
    if tls.client_ca_file:
        bind += f" ca-file {tls.client_ca_file} verify required"
    own = f" crt {pem_path}" if tls.client_ca_file else ""
    replicas = ""
    if tls.ca_file:
        replicas = f" ssl alpn h2 ca-file {tls.ca_file} verify required{own}"
        if tls.server_name:
            replicas += f" verifyhost {tls.server_name}"
    # The Python gateway on loopback serves with the same certificate; it is this process.
    fallback = f" ssl alpn h2 verify none{own}"
    return bind, replicas, fallback


def render_config(
    options: HaproxyOptions,
    *,
    map_path: Path,
    socket_path: Path,
    tokens_path: Path | None = None,
    pem_path: Path | None = None,
) -> str:
    """HAProxy's configuration for `options` (see the module docstring for its shape).

    `tokens_path` is the file of `options.header_digests` (one a line, upper-case hex),
    `pem_path` the certificate and key in one file (with `options.tls`).
    """
    routed_paths = " ".join(FORWARDED_METHODS)
    token_condition = ""
    tls_bind, tls_replicas, tls_fallback = _tls_words(options, pem_path or Path("-"))
    lines = [
        "global",
        f"  stats socket {socket_path} mode 600 level admin",
        f"  lua-load {LUA_SCRIPT}",
        f"  hard-stop-after {_ms(options.hard_stop_after_s)}",
        f"  maxconn {max_connections()}",
        "",
        "defaults",
        "  mode http",
        "  timeout connect 2s",
        # An idle caller connection is closed (GOAWAY) after this; gRPC reconnects by itself.
        "  timeout client 5m",
        f"  timeout server {_ms(options.server_timeout_s)}",
        "  timeout http-request 30s",
        f"  retries {options.retries}",
        # Only what cannot have reached the model: Predict is retried on another replica when
        # the connection failed or closed before any answer (a replica going away).
        "  retry-on conn-failure empty-response",
        "  option redispatch 1",
        "  http-reuse always",
        "",
        "frontend grpc",
        f"  bind fd@{options.listen_fd} proto h2{tls_bind}",
        f"  acl routed path {routed_paths}",
    ]
    if options.header_digests:
        # A call without a person's token goes to the Python gateway, which refuses it
        # (UNAUTHENTICATED). HAProxy holds digests only: the header's sha256 is looked up.
        lines.append(
            f"  acl authenticated req.hdr(authorization),sha2(256),hex -m str -f {tokens_path}"
        )
        token_condition = " authenticated"
    lines += [
        # The endpoint name is in the body: wait for the first message (not for streams).
        f"  http-request wait-for-body time 10s if routed{token_condition}",
        # HAProxy's own gRPC reader first (it needs the whole message in its buffer; Lua costs
        # about 3% of a one-row call), then the Lua one for a message larger than the buffer.
        # Both take the first field 1 where protobuf says the last wins: a message carrying
        # the name twice (two serialized messages concatenated) may reach a replica of the
        # first name, which refuses a call for another endpoint (NOT_FOUND), never answers it.
        *_message_limit_rules(options, f"routed{token_condition}"),
        f"  http-request set-var(txn.endpoint) req.body,ungrpc(1) if routed{token_condition}",
        f"  http-request set-var(txn.endpoint) lua.skmaker_endpoint if routed{token_condition}"
        " !{ var(txn.endpoint) -m found }",
        # No name, or a name not in the map: the Python gateway answers.
        f"  use_backend %[var(txn.endpoint),map({map_path},{FALLBACK_BACKEND})]",
        f"  default_backend {FALLBACK_BACKEND}",
        "",
        f"backend {FALLBACK_BACKEND}",
        f"  server gateway 127.0.0.1:{options.fallback_port} proto h2{tls_fallback}",
    ]
    servers = f"{_SERVER_PREFIX} 1-{options.replica_slots}"
    for slot in range(options.endpoint_slots):
        # Servers start in maintenance at an unused address; the runtime API points them at
        # the endpoint's replicas (see haproxy_routes).
        lines += [
            "",
            f"backend {slot_backend(slot)}",
            # Outstanding calls: with HTTP/2 to the replica, HAProxy counts streams, not
            # connections.
            "  balance leastconn",
            f"  server-template {servers} 127.0.0.1:1 proto h2 disabled{tls_replicas}",
        ]
    return "\n".join(lines) + "\n"


def _message_limit_rules(options: HaproxyOptions, condition: str) -> list[str]:
    """Rules answering RESOURCE_EXHAUSTED for a first message over `max_message_bytes`.

    The length is the 4-byte big-endian field after the compressed-flag byte that starts every
    gRPC message, read from the buffered start of the body. Nothing is forwarded: the Lua
    service `skmaker_too_large` (grpc_route.lua) reads and drops the body and answers with a
    trailers-only gRPC response (HTTP 200, grpc-status 8 in the headers).
    """
    if options.max_message_bytes <= 0:
        return []
    reason = options.max_message_reason.replace('"', "'")
    too_large = f"{{ var(txn.message_bytes) -m int gt {options.max_message_bytes} }}"
    return [
        f"  http-request set-var(txn.message_bytes) req.body,bytes(1,4),hex,hex2i if {condition}",
        '  http-request set-var-fmt(txn.message_refusal) "the request message is'
        f" %[var(txn.message_bytes)] bytes; the limit is {options.max_message_bytes} bytes"
        f'{reason}" if {condition} {too_large}',
        f"  http-request use-service lua.skmaker_too_large if {condition} {too_large}",
    ]


class HaproxyCommandError(RuntimeError):
    """HAProxy's runtime API refused a command (the message is HAProxy's answer)."""


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """`command` run so that it gets SIGTERM when the gateway dies, even by SIGKILL.

    util-linux's setpriv sets the signal and execs the command. It is not done in Python
    (`preexec_fn`) because that forces a real fork(), and gRPC's fork handlers abort a child
    forked while other threads are inside gRPC; without `preexec_fn`, subprocess uses vfork.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return command
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


class HaproxyProcess:
    """One HAProxy child: started on an inherited socket, driven through its runtime API.

    Args:
        binary: the haproxy executable.
        folder: a private folder for the configuration, the map and the API socket.
    """

    def __init__(self, binary: str, folder: Path) -> None:
        self._binary = binary
        self.folder = folder
        self.config_path = folder / "haproxy.cfg"
        self.map_path = folder / "endpoints.map"
        self.socket_path = folder / "admin.sock"
        self.tokens_path = folder / "tokens.sha256"
        self.pem_path = folder / "gateway.pem"
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._api_lock = threading.Lock()
        self._alerts: collections.deque[str] = collections.deque(maxlen=5)

    def start(
        self,
        options: HaproxyOptions,
        *,
        ready_timeout_s: float,
        on_unexpected_exit: Callable[[int], None],
    ) -> None:
        """Writes the configuration, starts HAProxy and returns once its runtime API answers.

        `on_unexpected_exit` is called (from a watcher thread) with the exit code if HAProxy
        ever exits before `stop`.

        Raises:
            RuntimeError: HAProxy exited at start (its own message is on stderr) or did not
                answer within `ready_timeout_s`.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self.map_path.write_text("")
        self.tokens_path.write_text("".join(f"{d.upper()}\n" for d in options.header_digests))
        if options.tls is not None:
            self.pem_path.touch(mode=0o600)
            self.pem_path.write_bytes(
                Path(options.tls.cert_file).read_bytes().rstrip(b"\n")
                + b"\n"
                + Path(options.tls.key_file).read_bytes()
            )
        self.config_path.write_text(
            render_config(
                options,
                map_path=self.map_path,
                socket_path=self.socket_path,
                tokens_path=self.tokens_path,
                pem_path=self.pem_path,
            )
        )
        binary = shutil.which(self._binary) or self._binary
        process = subprocess.Popen(
            _with_parent_death_signal([binary, "-db", "-f", str(self.config_path)]),
            pass_fds=(options.listen_fd,),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # A signal to the gateway's process group (Ctrl-C, kill -- -PGID) must not stop
            # HAProxy at once: the gateway soft-stops it while draining.
            start_new_session=True,
        )
        self._process = process
        assert process.stderr is not None
        reader = threading.Thread(
            target=self._relay_messages, args=(process.stderr,), name="haproxy-log", daemon=True
        )
        reader.start()
        deadline = time.monotonic() + ready_timeout_s
        while True:
            code = process.poll()
            if code is not None:
                reader.join(timeout=1)
                alerts = "; ".join(self._alerts) or "no message"
                raise RuntimeError(f"haproxy exited with code {code} at start: {alerts}")
            try:
                self.command("show info")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop(0)
                    raise RuntimeError(
                        f"haproxy's runtime API did not answer within {ready_timeout_s} s"
                    ) from None
                time.sleep(0.02)
        threading.Thread(
            target=self._watch,
            args=(process, on_unexpected_exit),
            name="haproxy-watch",
            daemon=True,
        ).start()
        log.info("haproxy started: %s (pid %d)", binary, process.pid)

    def _relay_messages(self, stream: IO[bytes]) -> None:
        """HAProxy's stderr into the gateway's log, at HAProxy's level; routine lines at DEBUG."""
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            level = next((lvl for tag, lvl in _LEVELS.items() if line.startswith(tag)), None)
            if level is None or _ROUTINE.search(line):
                level = logging.DEBUG
            if level >= logging.ERROR:
                self._alerts.append(line.split(":", 1)[-1].strip())
            log.log(level, "haproxy: %s", line)

    def _watch(self, process: subprocess.Popen[bytes], on_exit: Callable[[int], None]) -> None:
        code = process.wait()
        if not self._stopping.is_set():
            log.error("haproxy exited unexpectedly with code %d", code)
            on_exit(code)

    def command(self, line: str, timeout_s: float = 5.0) -> str:
        """Runs one runtime API command; returns HAProxy's answer (stripped).

        Raises:
            OSError: the API could not be reached.
        """
        with self._api_lock, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as api:
            api.settimeout(timeout_s)
            api.connect(str(self.socket_path))
            api.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := api.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").strip()

    def stop(self, grace_s: float) -> None:
        """Soft stop: no new connection, calls in flight finish (up to `grace_s`), then exit."""
        self._stopping.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGUSR1)
        try:
            process.wait(timeout=grace_s + 1)
        except subprocess.TimeoutExpired:
            log.warning("haproxy did not stop within %.1f s; killing it", grace_s + 1)
            process.kill()
            process.wait()


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket at host:port (port 0: any free one), inheritable by HAProxy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    os.set_inheritable(listener.fileno(), True)
    return listener
