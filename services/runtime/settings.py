"""Settings every skmaker process shares, and the one parser that builds them from flags and env.

Each service declares a frozen dataclass subclassing `ServiceSettings`; every field is a CLI
flag (`grpc_port` -> `--grpc-port`) with an environment variable behind it
(`SKMAKER_<SERVICE>_GRPC_PORT`). Precedence is flag, then environment, then default. Settings
are built once in `__main__` and passed down; nothing else reads `os.environ`.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import os
import re
import stat
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from services.runtime import tls
from services.runtime.auth import people_tokens

log = logging.getLogger(__name__)

S = TypeVar("S", bound="ServiceSettings")


def setting(default: Any, help: str, *, flags: Sequence[str] = (), secret: bool = False) -> Any:
    """Declares one setting: its default, its one-line description and extra flag spellings.

    A `secret` setting (a token) is never taken from the command line, where every local user
    can read it (`ps`, /proc/PID/cmdline): it comes from its environment variable, from the file
    named by the `<name>_file` setting, or from the inherited descriptor named by `<name>_fd`.
    """
    return field(default=default, metadata={"help": help, "flags": tuple(flags), "secret": secret})


@dataclass(frozen=True)
class ServiceSettings:
    """Knobs every service has: where it listens, how it shuts down, how it logs."""

    host: str = setting("127.0.0.1", "address the gRPC and metrics servers bind to")
    grpc_port: int = setting(0, "gRPC port; 0 picks a free one (see --port-file)")
    metrics_port: int = setting(0, "Prometheus /metrics HTTP port; 0 picks a free one")
    shutdown_grace_s: float = setting(5.0, "seconds in-flight RPCs get to finish on SIGTERM")
    log_level: str = setting("INFO", "logging level (DEBUG, INFO, WARNING, ERROR)")
    port_file: str = setting("", 'write {"grpc": port, "metrics": port} here once bound')
    max_workers: int = setting(32, "threads serving RPCs")
    auth_token: str = setting(
        "",
        "when set, every RPC must carry 'authorization: Bearer <token>'; "
        "from the environment or --auth-token-file only, never a flag",
        secret=True,
    )
    auth_token_file: str = setting("", "read the bearer token from this file (its first line)")
    auth_token_sha256: str = setting(
        "",
        "check callers against these sha256 digests (hex, comma-separated) of the accepted "
        "tokens rather than the tokens themselves",
    )
    auth_tokens_file: str = setting(
        "",
        "people's tokens, one 'name:token' a line ('#' comments); each caller's name is in "
        "the audit log; read at start",
    )
    auth_token_fd: int = setting(
        -1, "read the bearer token from this inherited descriptor (how the control passes it)"
    )
    metrics_token: str = setting(
        "",
        "when set, /metrics answers 401 without 'Authorization: Bearer <token>'; from the "
        "environment or --metrics-token-file only",
        secret=True,
    )
    metrics_token_file: str = setting("", "read the /metrics token from this file (first line)")
    tls_cert_file: str = setting(
        "", "serve gRPC and /metrics over TLS with this certificate (PEM; chain first)"
    )
    tls_key_file: str = setting("", "the private key (PEM) of --tls-cert-file")
    tls_client_ca_file: str = setting(
        "", "mutual TLS: callers must present a certificate signed by this CA (PEM)"
    )
    tls_ca_file: str = setting(
        "", "call other skmaker services over TLS, checking their certificates with this CA"
    )
    tls_server_name: str = setting(
        "", "check every called server's certificate against this name, not the address's host"
    )


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_type(settings_cls: type, f: dataclasses.Field[Any]) -> type:
    hints = typing.get_type_hints(settings_cls)
    hint = hints[f.name]
    if isinstance(hint, types.UnionType):  # e.g. `str | None`: parse as the non-None member
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint  # type: ignore[no-any-return]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def load(
    settings_cls: type[S],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None = None,
    *,
    env_prefix: str,
    prog: str | None = None,
) -> S:
    """Builds `settings_cls` from `argv` (flags), `environ` (`env_prefix` + NAME) and defaults.

    Args:
        settings_cls: a frozen dataclass subclassing `ServiceSettings`.
        argv: command-line arguments without the program name.
        environ: environment to read; `os.environ` when None (only `__main__` should pass None).
        env_prefix: e.g. "SKMAKER_CONTROL_".
        prog: program name for --help.

    Raises:
        SystemExit: on a bad flag or a malformed environment value (argparse's usual exit 2).
    """
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog=prog, description=settings_cls.__doc__, allow_abbrev=False
    )
    for f in dataclasses.fields(settings_cls):
        kind = _field_type(settings_cls, f)
        env_name = env_prefix + f.name.upper()
        flags = [_flag_name(f.name), *f.metadata.get("flags", ())]
        help_text = f"{f.metadata.get('help', '')} (env {env_name}; default {f.default!r})"
        if f.metadata.get("secret"):
            parser.add_argument(
                *flags, dest=f.name, action=_refuse_secret_flag(env_name), help=help_text
            )
        elif kind is bool:
            parser.add_argument(
                *flags,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(*flags, dest=f.name, type=kind, default=None, help=help_text)
    namespace = parser.parse_args(list(argv) if argv is not None else [])
    values: dict[str, Any] = {}
    for f in dataclasses.fields(settings_cls):
        given = getattr(namespace, f.name)
        if given is not None:
            values[f.name] = given
            continue
        env_name = env_prefix + f.name.upper()
        if env_name in environ:
            kind = _field_type(settings_cls, f)
            raw = environ[env_name]
            try:
                values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
            except ValueError as err:
                parser.error(f"{env_name}={raw!r}: {err}")
    for digest in filter(None, values.get("auth_token_sha256", "").split(",")):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest.strip()):
            parser.error(f"--auth-token-sha256 {digest!r} is not a sha256 in hex (64 characters)")
    for f in dataclasses.fields(settings_cls):
        if f.metadata.get("secret"):
            try:
                _resolve_secret(f.name, values, environ, env_prefix)
            except (OSError, ValueError) as err:
                parser.error(str(err))
    built = settings_cls(**values)
    try:
        tls.check(built)
        people_tokens(built.auth_token, built.auth_tokens_file, built.auth_token_sha256)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    return built


def _refuse_secret_flag(env_name: str) -> type[argparse.Action]:
    class RefuseSecretFlag(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
            flag = self.option_strings[0]
            parser.error(
                f"{flag} is not accepted on the command line, where every local user can read "
                f"it (ps, /proc/PID/cmdline): use {flag}-file PATH or the environment "
                f"variable {env_name}"
            )

    return RefuseSecretFlag


def _resolve_secret(
    name: str, values: dict[str, Any], environ: Mapping[str, str], env_prefix: str
) -> None:
    """Fills `values[name]` from its file or descriptor, then drops it from the environment.

    The variable is removed from `os.environ` (never from a mapping a test passed in) so that
    code this process runs later, and the children it starts, do not inherit the secret.

    Raises:
        ValueError: more than one source, or an empty file or descriptor.
        OSError: the file or descriptor cannot be read.
    """
    path = values.get(f"{name}_file", "")
    fd = values.get(f"{name}_fd", -1)
    given = [
        source
        for source, used in (("env", name in values), ("file", path), ("fd", fd >= 0))
        if used
    ]
    if len(given) > 1:
        raise ValueError(f"{name}: give it one way only, not {' and '.join(given)}")
    if path:
        values[name] = _read_secret_file(Path(path))
    elif fd >= 0:
        values[name] = _read_secret_fd(fd)
    if environ is os.environ:
        for suffix in ("", "_FD"):
            variable = env_prefix + name.upper() + suffix
            if os.environ.pop(variable, None) is not None and not suffix:
                _erase_initial_environment(variable)


def _erase_initial_environment(variable: str) -> None:
    """Overwrites `variable`'s value in the environment the process started with.

    Removing it from `os.environ` does not change /proc/self/environ, which shows the block the
    kernel laid out at exec: code running in this process (a model's) could read the token
    there. The block is this process's own memory, so its bytes can be zeroed in place.
    """
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        env_start = int(fields[47])  # field 50 of proc(5); the list starts at field 3
        with open("/proc/self/environ", "rb") as handle:
            block = handle.read()
    except (OSError, IndexError, ValueError):
        return
    if env_start == 0 or len(block) == 0:
        return  # the kernel did not say where the block is: leave it
    key = variable.encode() + b"="
    offset = 0
    for entry in block.split(b"\0"):
        if entry.startswith(key) and len(entry) > len(key):
            start = env_start + offset + len(key)
            ctypes.memset(start, 0, len(entry) - len(key))
        offset += len(entry) + 1


def _read_secret_file(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s can be read by other users (mode %o): chmod 600 it", path, mode & 0o777)
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{path} is empty")
    return text.splitlines()[0].strip()


def _read_secret_fd(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    text = b"".join(chunks).decode("utf-8").strip()
    if not text:
        raise ValueError(f"descriptor {fd} gave an empty token")
    return text


def pass_secret(secret: str) -> int:
    """A pipe's read end holding `secret`, for a child to inherit (`pass_fds`) and read once.

    The caller closes it after starting the child. Nothing is written to disk or to the
    child's environment or argv.
    """
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, secret.encode("utf-8"))  # far below a pipe's 64 KiB buffer
    finally:
        os.close(write_end)
    return read_end
