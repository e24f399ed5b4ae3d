"""Tokens come from a file, a descriptor or the environment, never argv, and do not linger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.runtime import settings
from services.runtime.auth import BearerTokenInterceptor
from services.runtime.settings import ServiceSettings, pass_secret

PREFIX = "SKMAKER_TESTSVC_"


def _load(argv: list[str], environ: dict[str, str] | None = None) -> ServiceSettings:
    return settings.load(ServiceSettings, argv, environ or {}, env_prefix=PREFIX)


def test_a_token_on_the_command_line_is_refused_with_the_alternatives(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _load(["--auth-token", "s3cret"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "--auth-token-file" in message and f"{PREFIX}AUTH_TOKEN" in message


def test_the_token_is_read_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    assert _load([f"--auth-token-file={token_file}"]).auth_token == "s3cret"


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    with pytest.raises(SystemExit):
        _load([f"--auth-token-file={token_file}"])


def test_the_token_is_read_once_from_an_inherited_pipe() -> None:
    fd = pass_secret("s3cret")
    assert _load([], {f"{PREFIX}AUTH_TOKEN_FD": str(fd)}).auth_token == "s3cret"
    with pytest.raises(OSError):
        os.fstat(fd)  # read and closed: nothing else in the process can read it again


def test_two_sources_are_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("a")
    with pytest.raises(SystemExit):
        _load([f"--auth-token-file={token_file}"], {f"{PREFIX}AUTH_TOKEN": "b"})


def test_a_token_from_the_environment_is_removed_from_it_once_read() -> None:
    # In a child process, as a service's __main__ runs it: the variable is gone from
    # os.environ afterwards, so neither later code nor the children it starts can see it, and
    # its value is gone from /proc/self/environ, where model code in a replica would look.
    code = (
        "import os\n"
        "from services.runtime import settings\n"
        "s = settings.load(settings.ServiceSettings, [], env_prefix='SKMAKER_TESTSVC_')\n"
        "initial = open('/proc/self/environ', 'rb').read()\n"
        "print(s.auth_token, 'SKMAKER_TESTSVC_AUTH_TOKEN' in os.environ, b's3cret' in initial)\n"
    )
    env = {**os.environ, f"{PREFIX}AUTH_TOKEN": "s3cret"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    # Not even in /proc/self/environ, the block the process started with.
    assert out.split() == ["s3cret", "False", "False"]


def test_the_interceptor_keeps_no_copy_of_the_token() -> None:
    interceptor = BearerTokenInterceptor("s3cret")
    assert all("s3cret" not in repr(value) for value in vars(interceptor).values())


def test_a_service_process_cannot_be_read_by_processes_of_its_user() -> None:
    # In a child process: being not dumpable is what keeps same-user processes (a replica's
    # model code) out of its /proc/PID/mem and /proc/PID/environ.
    code = (
        "import ctypes\n"
        "from services.runtime.lifecycle import hide_process_memory\n"
        "libc = ctypes.CDLL(None)\n"
        "before = libc.prctl(3, 0, 0, 0, 0)\n"
        "print(hide_process_memory(), before, libc.prctl(3, 0, 0, 0, 0))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["True", "1", "0"]
