"""`--local`: trainer children start, a dead one is restarted, SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import run_service, script_visible_dir

pytestmark = pytest.mark.integration


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process from /proc, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may hold spaces; state and ppid follow it.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _state_and_parent(int(entry.name))
            if info is not None and info[1] == pid and info[0] != "Z":
                found.add(int(entry.name))
    return found


def _wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


def test_local_trainers_are_supervised_and_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    control = run_service(
        "control", tmp_path, ["--local", "--local-trainers", "2", "--data-dir", str(data_dir)]
    )
    try:
        _wait_until(lambda: len(_children(control.process.pid)) == 2)
        for index in (0, 1):
            assert (data_dir / "logs" / f"trainer-{index}.log").exists()
        victim = min(_children(control.process.pid))
        os.kill(victim, signal.SIGKILL)
        _wait_until(
            lambda: (
                victim not in _children(control.process.pid)
                and len(_children(control.process.pid)) == 2
            )
        )
        survivors = _children(control.process.pid)
    finally:
        control.stop()
    for pid in survivors:
        info = _state_and_parent(pid)
        assert info is None or info[0] == "Z", f"trainer {pid} outlived the control"


def test_kill_9_of_the_control_stops_its_trainers_and_a_restart_runs_as_many(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    args = ["--local", "--local-trainers", "2", "--data-dir", str(data_dir)]
    control = run_service("control", tmp_path / "first", args)
    try:
        _wait_until(lambda: len(_children(control.process.pid)) == 2)
        first = _children(control.process.pid)
    finally:
        control.kill_leader_only()  # kill -9 of the control alone: its children get no signal
    # Their lifeline to the control broke: they drain and exit by themselves.
    _wait_until(lambda: not any(_is_live(pid) for pid in first), timeout_s=15)

    restarted = run_service("control", tmp_path / "second", args)
    try:
        _wait_until(lambda: len(_children(restarted.process.pid)) == 2)
        assert len(_trainers_working_in(data_dir)) == 2
    finally:
        restarted.stop()


def _is_live(pid: int) -> bool:
    info = _state_and_parent(pid)
    return info is not None and info[0] != "Z"


def _trainers_working_in(data_dir: Path) -> set[int]:
    """Live trainer processes with a work dir under `data_dir`, whoever their parent is."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if entry.name.isdigit() and _is_live(int(entry.name)) and "services.trainer" in args:
            if any(arg.startswith(str(data_dir)) for arg in args):
                found.add(int(entry.name))
    return found


# Waits until as many trials as `--expect` have started (each leaves a file in --barrier), so
# it only completes when the jobs really run side by side.
BARRIER_SCRIPT = """\
import argparse, os, sys, time, uuid
parser = argparse.ArgumentParser()
parser.add_argument("--barrier")
parser.add_argument("--expect", type=int)
args, _ = parser.parse_known_args()
open(os.path.join(args.barrier, uuid.uuid4().hex), "w").close()
deadline = time.monotonic() + 30
while len(os.listdir(args.barrier)) < args.expect:
    if time.monotonic() > deadline:
        sys.exit("the other job never started alongside this one")
    time.sleep(0.05)
"""


def test_trainers_follow_the_training_tasks(tmp_path: Path) -> None:
    from skmaker import Session, SKLearn

    data_dir = tmp_path / "data"
    barrier = script_visible_dir()  # the scripts (the job user) leave their files here
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(BARRIER_SCRIPT)
    control = run_service(
        "control",
        tmp_path,
        [
            "--local",
            "--local-trainers=1",
            "--local-trainers-max=2",
            "--local-trainers-idle-s=0.5",
            f"--data-dir={data_dir}",
        ],
    )
    try:
        _wait_until(lambda: len(_children(control.process.pid)) == 1)
        with Session(control.address, token="") as session:
            jobs = []
            for index in (1, 2):
                estimator = SKLearn(
                    entry_point="train.py",
                    source_dir=str(code),
                    hyperparameters={"barrier": str(barrier), "expect": 2},
                    session=session,
                )
                estimator.fit(wait=False, job_name=f"side-by-side-{index}")
                jobs.append(estimator.latest_training_job)
            for job in jobs:
                assert job is not None
                assert job.wait(logs=False)["TrainingJobStatus"] == "Completed"
        assert (data_dir / "logs" / "trainer-1.log").exists()
        # Without work the extra trainer goes; the minimum of one stays.
        _wait_until(lambda: len(_children(control.process.pid)) == 1)
    finally:
        control.stop()
