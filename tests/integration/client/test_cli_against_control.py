"""The `skmaker` command run as a user runs it, against a real control with a trainer.

Each test runs `python -m skmaker.cli --address <control> ...` and checks its stdout, stderr
and exit status. Argument parsing alone is checked in tests/unit/client/test_client_cli.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
from live_control import closed_port, wait_until, write_code

from skmaker import Session, SKLearn
from tests.harness import ServiceProcess, run_service, script_visible_dir

pytestmark = pytest.mark.integration

# The CLI sees no skmaker settings but what a test passes.
CLI_ENV = {
    name: value
    for name, value in os.environ.items()
    if name not in {"SKMAKER_ADDRESS", "SKMAKER_TOKEN", "SKMAKER_TLS_CA"}
}


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The embedded control (`--local`: one trainer child), shared by the module."""
    workdir = tmp_path_factory.mktemp("control")
    service = run_service("control", workdir, ["--local", "--data-dir", str(workdir / "data")])
    yield service
    service.stop()


@pytest.fixture(scope="module")
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address, token="") as client:
        yield client


@pytest.fixture(scope="module")
def trained(session: Session, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A job that ran to completion, printing two lines."""
    code = write_code(
        tmp_path_factory.mktemp("trained"),
        {"train.py": "print('hello from the script')\nprint('done')\n"},
    )
    SKLearn(entry_point="train.py", source_dir=code, session=session).fit(
        job_name="cli-job", logs=False
    )
    return "cli-job"


def _command(address: str, *args: str) -> list[str]:
    """`skmaker --address <address> <args>`."""
    return [sys.executable, "-m", "skmaker.cli", "--address", address, *args]


def _cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs `skmaker --address <address> <args>` to the end, capturing its output."""
    return subprocess.run(
        _command(address, *args),
        capture_output=True,
        text=True,
        env=CLI_ENV,
        timeout=60,
        check=False,
    )


def _waiting_job(session: Session, folder: Path, name: str, release: Path) -> None:
    """Starts a job that prints "waiting", runs until `release` exists, then prints "released"."""
    script = f"""
        import os, time
        print("waiting", flush=True)
        while not os.path.exists({str(release)!r}):
            time.sleep(0.02)
        print("released", flush=True)
    """
    code = write_code(folder, {"train.py": script})
    SKLearn(entry_point="train.py", source_dir=code, session=session).fit(wait=False, job_name=name)
    wait_until(
        lambda: session.describe_training_job(name)["SecondaryStatus"] == "Training",
        f"{name} running",
    )


def test_describe_prints_json(control: ServiceProcess, trained: str) -> None:
    result = _cli(control.address, "training-jobs", "describe", trained)

    assert (result.returncode, result.stderr) == (0, "")
    description = json.loads(result.stdout)
    assert description["TrainingJobName"] == trained
    assert description["TrainingJobStatus"] == "Completed"
    created = datetime.fromisoformat(description["CreationTime"])
    assert timedelta(0) <= datetime.now(UTC) - created < timedelta(minutes=10)


def test_list_prints_a_table(control: ServiceProcess, trained: str) -> None:
    result = _cli(control.address, "training-jobs", "list", "--name-prefix", "cli-")

    assert (result.returncode, result.stderr) == (0, "")
    header, row = result.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "STATUS", "SECONDARY"]
    assert row.split()[:3] == [trained, "Completed", "Completed"]


def test_logs_print_the_lines(control: ServiceProcess, trained: str) -> None:
    result = _cli(control.address, "training-jobs", "logs", trained)

    assert (result.returncode, result.stderr) == (0, "")
    assert "\nhello from the script\ndone\n" in result.stdout


def test_logs_follow_prints_until_the_job_ends(
    control: ServiceProcess, session: Session, tmp_path: Path
) -> None:
    release = script_visible_dir() / "release"
    _waiting_job(session, tmp_path / "code", "followed-job", release)
    command = _command(control.address, "training-jobs", "logs", "followed-job", "--follow")
    lines: list[str] = []

    def read(stream: IO[str]) -> None:
        for line in stream:
            lines.append(line)

    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=CLI_ENV) as follower:
        assert follower.stdout is not None
        reader = threading.Thread(target=read, args=(follower.stdout,), daemon=True)
        reader.start()
        try:
            wait_until(lambda: "waiting\n" in lines, "the follower printed the first line")
        finally:
            release.touch()  # the job goes on only now, while the command follows it
        assert follower.wait(timeout=60) == 0
        reader.join(10)

    assert lines.index("waiting\n") < lines.index("released\n")


def test_stop_prints_the_new_status(
    control: ServiceProcess, session: Session, tmp_path: Path
) -> None:
    _waiting_job(session, tmp_path / "code", "stopped-job", script_visible_dir() / "never")

    result = _cli(control.address, "training-jobs", "stop", "stopped-job")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "stopped-job: Stopping\n"
    assert session.wait_for_job("stopped-job", poll_s=0.2)["TrainingJobStatus"] == "Stopped"


def test_errors_print_one_line_and_exit_1(control: ServiceProcess) -> None:
    result = _cli(control.address, "training-jobs", "describe", "absent")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "error: training job 'absent' not found\n"


def test_an_unreachable_control_is_one_line_and_exit_1() -> None:
    with closed_port() as port:
        # stop is not retried, so it fails at once; list and describe retry for a few seconds.
        result = _cli(f"127.0.0.1:{port}", "training-jobs", "stop", "some-job")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: skmaker at 127.0.0.1:{port} is unavailable: ")
    assert result.stderr.count("\n") == 1
