"""Training scripts in their box, run by a real `--local` control and its trainer (as root).

What an unkind script would try: read the token from /proc or its environment, allocate without
bound, leave a `setsid` grandchild behind, print a gigabyte. The trainer runs as root here (as
in CI), so scripts run as the dedicated job user.
"""

from __future__ import annotations

import json
import os
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from skmaker import Session, SKLearn, UnexpectedStatusException
from tests.harness import ServiceProcess, is_running, run_service, script_visible_dir
from tests.integration.client.live_control import wait_until, write_code

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the job user needs a root trainer"),
]

TOKEN = "tok-" + secrets.token_hex(16)
MEMORY_MB = 256
JOB_LOG_BYTES = 8 * 1024 * 1024  # the default is 64 MiB; less keeps the test quick

# Reads every /proc/*/environ and /proc/*/cmdline it can, its own environment and the token
# file, and saves it all in the model, which the test searches for the token.
SCANNING_SCRIPT = """
    import os, sys, json
    found = {"uid": os.getuid(), "environ": {}, "cmdline": {}, "own": dict(os.environ)}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{part}", "rb") as handle:
                    found[part][pid] = handle.read().decode("utf-8", "replace")
            except OSError:
                pass
    for path in sys.argv[2::2]:  # --name path pairs
        try:
            found[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
        except OSError as err:
            found[path] = f"unreadable: {err.strerror}"
    model_dir = os.environ["SM_MODEL_DIR"]
    with open(os.path.join(model_dir, "scan.json"), "w") as handle:
        json.dump(found, handle)
    print("scanned", len(found["environ"]), "environ files")
"""

GREEDY_SCRIPT = """
    import os
    hoard = []
    while True:
        hoard.append(os.urandom(1) * (16 * 1024 * 1024))  # touched pages, not just reserved
"""

SETSID_SCRIPT = """
    import os, subprocess, sys
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "grandchild.pid"), "w") as handle:
        handle.write(str(child.pid))
    print("left", child.pid, "behind")
"""

CHATTY_SCRIPT = """
    import os, sys
    line = b"x" * (1024 * 1024 - 1) + b"\\n"          # big chunks keep the test fast
    out = sys.stdout.buffer
    for _ in range(1024):                              # 1 GiB in all
        out.write(line)
    out.flush()
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as handle:
        handle.write("kept")
"""


def _control(workdir: Path, data_dir: Path, trainer_args: str) -> ServiceProcess:
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    return run_service(
        "control",
        workdir,
        [
            "--local",
            f"--data-dir={data_dir}",
            f"--auth-token-file={token_file}",
            f"--trainer-args=--job-memory-mb {MEMORY_MB} --max-job-log-bytes {JOB_LOG_BYTES} "
            + trainer_args,
        ],
    )


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    # A data folder the job user can pass through, as in a real install (/srv/skmaker): the
    # trainer keeps workspaces below it, and the control's own files must stay closed.
    service = _control(tmp_path_factory.mktemp("sandboxed"), script_visible_dir() / "data", "")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address, token=TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def rlimit_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """A trainer that may not use cgroups: rlimits and /proc tracking instead."""
    workdir = tmp_path_factory.mktemp("rlimited")
    service = _control(workdir, workdir / "data", "--no-job-cgroups")
    try:
        with Session(service.address, token=TOKEN) as client:
            yield client
    finally:
        service.stop()


def _flag(service: ServiceProcess, flag: str) -> str:
    args = [str(arg) for arg in service.process.args]  # type: ignore[union-attr]
    return next(arg.split("=", 1)[1] for arg in args if arg.startswith(f"{flag}="))


def _estimator(session: Session, folder: Path, script: str, **kwargs: object) -> SKLearn:
    code = write_code(folder, {"train.py": script})
    return SKLearn(entry_point="train.py", source_dir=code, session=session, **kwargs)


def _fit(session: Session, folder: Path, script: str, **kwargs: object) -> SKLearn:
    estimator = _estimator(session, folder, script, **kwargs)
    estimator.fit(logs=False)
    return estimator


def _model_member(session: Session, estimator: SKLearn, name: str, scratch: Path) -> bytes:
    session.download_data(scratch, estimator.model_data)
    with tarfile.open(scratch / "model.tar.gz") as archive:
        member = archive.extractfile(name)
        assert member is not None
        return member.read()


def test_a_script_scanning_proc_and_its_environment_finds_no_credential(
    session: Session, control: ServiceProcess, tmp_path: Path
) -> None:
    token_file = Path(control.stdout_path).parent / "token"
    data_dir = Path(_flag(control, "--data-dir"))
    probes = {
        "token-file": str(token_file),
        "database": str(data_dir / "control.db"),
        "artifacts": str(data_dir / "artifacts"),
        "logs": str(data_dir / "logs"),
    }
    planted = "planted-" + secrets.token_hex(8)
    estimator = _fit(
        session,
        tmp_path / "code",
        SCANNING_SCRIPT,
        environment={"PLANTED": planted},
        hyperparameters=probes,
    )
    scan = _model_member(session, estimator, "scan.json", tmp_path / "out").decode()

    assert TOKEN not in scan
    found = json.loads(scan)
    assert found["uid"] != 0
    # The scan does see what it can read: its own environment, with the job's variables.
    assert planted in scan and found["own"]["PLANTED"] == planted
    assert not any(name.startswith("SKMAKER_") for name in found["own"])
    # Its workspace is below the control's data folder; the control's files are closed to it.
    assert found["own"]["SM_MODEL_DIR"].startswith(str(data_dir))
    for path in probes.values():
        assert found[path] == "unreadable: Permission denied", path
    # The control's own process is visible, its environment is not.
    assert str(control.process.pid) in found["cmdline"]
    assert str(control.process.pid) not in found["environ"]


@pytest.mark.parametrize("box", ["cgroup", "rlimits"])
def test_a_script_allocating_without_bound_is_stopped_by_its_limit(
    box: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    session = request.getfixturevalue("session" if box == "cgroup" else "rlimit_session")
    estimator = _estimator(session, tmp_path / "code", GREEDY_SCRIPT)
    with pytest.raises(UnexpectedStatusException):
        estimator.fit(logs=False)
    assert estimator.latest_training_job is not None
    described = session.describe_training_job(estimator.latest_training_job.name)
    assert described["TrainingJobStatus"] == "Failed"
    assert "OutOfMemory" in described["FailureReason"]
    assert f"{MEMORY_MB} MiB" in described["FailureReason"]


@pytest.mark.parametrize("box", ["cgroup", "rlimits"])
def test_a_setsid_grandchild_is_gone_after_the_job(
    box: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    session = request.getfixturevalue("session" if box == "cgroup" else "rlimit_session")
    estimator = _fit(session, tmp_path / "code", SETSID_SCRIPT)
    pid = int(_model_member(session, estimator, "grandchild.pid", tmp_path / "out"))
    wait_until(lambda: not is_running(pid), "the setsid grandchild to be gone", 10.0)


def test_a_script_printing_a_gigabyte_completes_with_its_model(
    session: Session, tmp_path: Path
) -> None:
    estimator = _fit(session, tmp_path / "code", CHATTY_SCRIPT)
    assert _model_member(session, estimator, "model.txt", tmp_path / "out") == b"kept"
    assert estimator.latest_training_job is not None
    lines = list(session.training_job_log_lines(estimator.latest_training_job.name))
    assert any("log truncated" in line.text for line in lines)
    assert sum(len(line.text) for line in lines) <= JOB_LOG_BYTES + 4096


def test_a_stopped_job_leaves_no_setsid_grandchild(session: Session, tmp_path: Path) -> None:
    script = SETSID_SCRIPT + "\n    import time\n    time.sleep(600)\n"
    estimator = _estimator(session, tmp_path / "code", script)
    estimator.fit(wait=False, logs=False)
    assert estimator.latest_training_job is not None
    name = estimator.latest_training_job.name
    pid = 0
    for line in session.training_job_log_lines(name, follow=True):
        if line.text.startswith("left "):
            pid = int(line.text.split()[1])
            break
    assert is_running(pid)
    session.stop_training_job(name)
    wait_until(
        lambda: session.describe_training_job(name)["TrainingJobStatus"] == "Stopped",
        "the job to stop",
        30.0,
    )
    wait_until(lambda: not is_running(pid), "the setsid grandchild to be gone", 10.0)
