"""`Session` against a real control: data transfer, job calls, tokens, restarts of the control.

Most tests share one control without trainers (jobs stay queued); the ones that kill the
control -9 get their own and restart it on the same port, as a supervisor would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from live_control import RestartableControl, upload_bundle, write_code

from skmaker import (
    FailedPrecondition,
    NotFound,
    Session,
    SKLearn,
    Unauthenticated,
    Unavailable,
)
from skmaker import session as session_module
from tests.harness import ServiceProcess, run_service, script_visible_dir

pytestmark = pytest.mark.integration

TOKEN = "s3cret"
SCRIPT = {"train.py": "print('hello from the script')\n"}


@pytest.fixture(autouse=True)
def no_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions see only what a test sets: no address, token or CA from the environment."""
    for name in ("SKMAKER_ADDRESS", "SKMAKER_TOKEN", "SKMAKER_TLS_CA"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A control without trainers, shared by the module: created jobs stay queued."""
    workdir = tmp_path_factory.mktemp("control")
    service = run_service("control", workdir, ["--data-dir", str(workdir / "data")])
    yield service
    service.stop()


@pytest.fixture
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address, timeout_s=10) as client:
        yield client


@pytest.fixture(scope="module")
def guarded_control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A control that wants `authorization: Bearer s3cret` on every call."""
    workdir = tmp_path_factory.mktemp("guarded")
    token_file = workdir / "token"
    token_file.write_text(f"{TOKEN}\n")
    token_file.chmod(0o600)
    service = run_service(
        "control",
        workdir,
        ["--data-dir", str(workdir / "data"), f"--auth-token-file={token_file}"],
    )
    yield service
    service.stop()


@pytest.fixture
def patient_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries UNAVAILABLE for about 30 s instead of the default 10 s.

    A control restart takes about a second on an idle machine but over three on two busy
    cores; the tests that restart the control check that retries reach it once it is back,
    not how fast this machine starts a process.
    """
    monkeypatch.setattr(session_module, "RETRY_ATTEMPTS", 17)


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[RestartableControl]:
    """A control of the test's own, which it may kill -9 and restart on the same port."""
    control = RestartableControl(tmp_path / "control")
    yield control
    control.stop()


def _queue_job(session: Session, tmp_path: Path, name: str) -> None:
    """Creates a job (it stays queued: the control has no trainer)."""
    code = write_code(tmp_path / "code", SCRIPT)
    SKLearn(entry_point="train.py", source_dir=code, session=session).fit(wait=False, job_name=name)


def _make_data(folder: Path) -> Path:
    (folder / "nested").mkdir(parents=True)
    (folder / "a.csv").write_text("1,2\n")
    (folder / "nested" / "b.csv").write_text("3,4\n")
    return folder


# -- tokens and addresses --------------------------------------------------------------------


def test_address_and_token_come_from_the_environment(
    guarded_control: ServiceProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SKMAKER_ADDRESS", guarded_control.address)
    monkeypatch.setenv("SKMAKER_TOKEN", TOKEN)

    with Session() as session:
        assert session.address == guarded_control.address
        _queue_job(session, tmp_path, "env-job")  # an upload and a create
        assert session.describe_training_job("env-job")["TrainingJobStatus"] == "InProgress"
        assert [s["TrainingJobName"] for s in session.list_training_jobs()] == ["env-job"]


@pytest.mark.parametrize("token", ["", "wrong"], ids=["no-token", "wrong-token"])
def test_calls_without_the_right_token_are_unauthenticated(
    guarded_control: ServiceProcess, token: str, tmp_path: Path
) -> None:
    (tmp_path / "rows.csv").write_text("1\n")
    with Session(guarded_control.address, token=token) as session:
        with pytest.raises(Unauthenticated, match="bearer token"):
            session.list_training_jobs()
        with pytest.raises(Unauthenticated):
            session.describe_training_job("some-job")
        with pytest.raises(Unauthenticated):
            session.upload_data(tmp_path / "rows.csv")
        with pytest.raises(Unauthenticated):
            list(session.training_job_log_lines("some-job"))


# -- data ------------------------------------------------------------------------------------


def test_upload_file_lands_under_the_prefix(session: Session, tmp_path: Path) -> None:
    path = Path(__file__)
    uri = session.upload_data(path, bucket=session.default_bucket(), key_prefix="some/prefix/")

    assert uri == f"store://some/prefix/{path.name}"
    # Another bucket is not the store: refused before anything is sent.
    with pytest.raises(ValueError, match="bucket 'elsewhere'"):
        session.upload_data(path, bucket="elsewhere", key_prefix="some/prefix/")
    (written,) = session.download_data(tmp_path / "back", uri)
    assert Path(written).read_bytes() == path.read_bytes()


def test_upload_folder_keeps_the_layout_and_returns_the_prefix(
    session: Session, tmp_path: Path
) -> None:
    uri = session.upload_data(_make_data(tmp_path / "data"), key_prefix="scikit-iris/data")

    assert uri == "store://scikit-iris/data"
    written = session.download_data(tmp_path / "back", uri)
    assert [Path(p).relative_to(tmp_path / "back").as_posix() for p in written] == [
        "a.csv",
        "nested/b.csv",
    ]


def test_download_restores_what_was_uploaded(session: Session, tmp_path: Path) -> None:
    uri = session.upload_data(_make_data(tmp_path / "data"), key_prefix="d")

    written = session.download_data(tmp_path / "out", uri)
    single = session.download_data(tmp_path / "one", "store://d/a.csv")

    assert written == [str(tmp_path / "out" / "a.csv"), str(tmp_path / "out" / "nested" / "b.csv")]
    assert (tmp_path / "out" / "a.csv").read_text() == "1,2\n"
    assert (tmp_path / "out" / "nested" / "b.csv").read_text() == "3,4\n"
    assert single == [str(tmp_path / "one" / "a.csv")]


def test_download_of_nothing_is_not_found(session: Session, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nothing stored"):
        session.download_data(tmp_path, "store://absent")


# -- training jobs ---------------------------------------------------------------------------


def test_describe_is_shaped_like_boto3(session: Session, tmp_path: Path) -> None:
    before = time.time()
    _queue_job(session, tmp_path, "job-b")

    description = session.describe_training_job("job-b")

    assert description["TrainingJobName"] == "job-b"
    assert description["TrainingJobStatus"] == "InProgress"
    assert description["AlgorithmSpecification"]["EntryPoint"] == "train.py"
    assert description["AlgorithmSpecification"]["SourceUri"] == (
        "store://jobs/job-b/source/sourcedir.tar.gz"
    )
    assert description["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert description["CreationTime"].tzinfo is not None
    assert before - 1 <= description["CreationTime"].timestamp() <= time.time() + 1
    assert "FailureReason" not in description
    assert "ModelArtifacts" not in description  # nothing trained yet


def test_unknown_job_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound, match="absent"):
        session.describe_training_job("absent")


def test_a_queued_job_stops_at_once_and_stopping_it_again_is_a_failed_precondition(
    session: Session, tmp_path: Path
) -> None:
    _queue_job(session, tmp_path, "job-e")

    assert session.stop_training_job("job-e")["TrainingJobStatus"] == "Stopped"
    with pytest.raises(FailedPrecondition, match="already ended"):
        session.stop_training_job("job-e")


def test_list_pages_and_filters(session: Session, tmp_path: Path) -> None:
    # More jobs than the control puts in one page (50), so listing them all takes two pages.
    source_uri = upload_bundle(session, tmp_path, SCRIPT, key_prefix="paging")
    names = [f"page-{index:03}" for index in range(55)]
    for name in names:
        session.create_training_job(
            name, entry_point="train.py", source_uri=source_uri, hyperparameters={}, channels={}
        )
    session.stop_training_job("page-007")

    listed = session.list_training_jobs(name_contains_prefix="page-")
    first_two = session.list_training_jobs(name_contains_prefix="page-", max_results=2)
    stopped = session.list_training_jobs(name_contains_prefix="page-", status_equals="Stopped")
    queued = session.list_training_jobs(name_contains_prefix="page-", status_equals="InProgress")
    completed = session.list_training_jobs(name_contains_prefix="page-", status_equals="Completed")

    assert [s["TrainingJobName"] for s in listed] == names[::-1]  # newest first
    assert [s["TrainingJobName"] for s in first_two] == ["page-054", "page-053"]
    assert [s["TrainingJobName"] for s in stopped] == ["page-007"]
    assert len(queued) == 54
    assert completed == []


# -- a control that restarts -----------------------------------------------------------------


def _describe_job(session: Session, tmp_path: Path) -> Callable[[], Any]:
    _queue_job(session, tmp_path, "survivor")
    return lambda: session.describe_training_job("survivor")["TrainingJobName"]


def _download_data(session: Session, tmp_path: Path) -> Callable[[], Any]:
    uri = session.upload_data(_make_data(tmp_path / "data"), key_prefix="kept")
    return lambda: [Path(p).read_text() for p in session.download_data(tmp_path / "back", uri)]


@pytest.mark.parametrize(
    ("arrange", "expected"),
    [(_describe_job, "survivor"), (_download_data, ["1,2\n", "3,4\n"])],
    ids=["describe", "download"],
)
@pytest.mark.usefixtures("patient_retries")
def test_reading_calls_ride_out_a_control_restart(
    restartable: RestartableControl,
    tmp_path: Path,
    arrange: Callable[[Session, Path], Callable[[], Any]],
    expected: Any,
) -> None:
    with Session(restartable.address) as session:
        call = arrange(session, tmp_path)
        restartable.kill()
        restartable.restart_in_background()
        assert len(restartable.runs) == 1  # still down when the call starts

        assert call() == expected

        restartable.join_restart()
        assert len(restartable.runs) == 2


def test_reading_calls_give_up_when_the_control_stays_down(
    restartable: RestartableControl, tmp_path: Path
) -> None:
    # The default retry budget: about four seconds.
    with Session(restartable.address) as session:
        _queue_job(session, tmp_path, "orphan")
        restartable.kill()

        started = time.monotonic()
        with pytest.raises(Unavailable, match="Connection refused"):
            session.describe_training_job("orphan")
        assert 5 < time.monotonic() - started < 15  # retried for about 10 s, not forever


def test_create_is_not_retried(restartable: RestartableControl, tmp_path: Path) -> None:
    with Session(restartable.address) as session:
        source_uri = upload_bundle(session, tmp_path, SCRIPT, key_prefix="code")
        restartable.kill()

        started = time.monotonic()
        with pytest.raises(Unavailable):
            session.create_training_job(
                "once",
                entry_point="train.py",
                source_uri=source_uri,
                hyperparameters={},
                channels={},
            )
        assert time.monotonic() - started < 1  # at once: no retry could create it twice

        restartable.restart()
        with pytest.raises(NotFound):
            session.describe_training_job("once")


@pytest.mark.usefixtures("patient_retries")
def test_followed_log_resumes_after_a_control_restart_without_loss_or_repeat(
    tmp_path: Path,
) -> None:
    # The script prints lines 0-4, then "tick" lines until the test releases it, then lines
    # 5-9: the test kills the control -9 on the first tick and releases the script, so lines
    # 5-9 are written while the control is down and reach the follower after the restart.
    # Ticks are left out of the check. The control stores a heartbeat's lines again when the
    # trainer re-sends them after losing the answer (a heartbeat carries no position to tell a
    # re-send by), so the batch in flight at the kill may show up twice; killing on a tick,
    # printed only after line 4 was stored and answered, makes that batch ticks alone.
    shared = script_visible_dir()
    ticking, release = shared / "ticking", shared / "release"
    script = f"""
        import os, time
        def wait_for(path, tick=False):
            while not os.path.exists(path):
                if tick:
                    print("tick", flush=True)
                time.sleep(0.05)
        for i in range(5):
            print(f"line {{i}}", flush=True)
        wait_for({str(ticking)!r})
        wait_for({str(release)!r}, tick=True)
        for i in range(5, 10):
            print(f"line {{i}}", flush=True)
            time.sleep(0.02)
    """
    control = RestartableControl(
        tmp_path / "control", ["--heartbeat-interval-s=0.2"], own_trainer=True
    )
    try:
        with Session(control.address) as session:
            estimator = SKLearn(
                entry_point="train.py",
                source_dir=write_code(tmp_path / "code", {"train.py": script}),
                session=session,
            )
            estimator.fit(wait=False, job_name="chatty")
            followed = []
            for line in session.training_job_log_lines("chatty", follow=True):
                followed.append(line)
                if line.text == "line 4":
                    ticking.touch()
                elif line.text == "tick" and not release.exists():
                    control.kill_control_only()  # the trainer keeps running the job
                    release.touch()
                    control.restart_in_background()
            control.join_restart()
            final_status = session.describe_training_job("chatty")["TrainingJobStatus"]
    finally:
        control.stop()

    sequences = [line.sequence for line in followed]
    assert sequences == list(range(len(followed)))  # every line once, in order, no gap
    script_lines = [line.text for line in followed if line.stream == "stdout"]
    assert [text for text in script_lines if text != "tick"] == [f"line {i}" for i in range(10)]
    assert len(control.runs) == 2
    assert final_status == "Completed"
