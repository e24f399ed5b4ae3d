"""Settings every skmaker process shares, and the one parser that builds them from flags and env.

Each service declares a frozen dataclass subclassing `ServiceSettings`; every field is a CLI
flag (`grpc_port` -> `--grpc-port`) with an environment variable behind it
(`SKMAKER_<SERVICE>_GRPC_PORT`). Precedence is flag, then environment, then default. Settings
are built once in `__main__` and passed down; nothing else reads `os.environ`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

S = TypeVar("S", bound="ServiceSettings")


def setting(default: Any, help: str, *, flags: Sequence[str] = ()) -> Any:
    """Declares one setting: its default, its one-line description and extra flag spellings."""
    return field(default=default, metadata={"help": help, "flags": tuple(flags)})


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
    auth_token: str = setting("", "when set, every RPC must carry 'authorization: Bearer <token>'")


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
        if kind is bool:
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
    return settings_cls(**values)
