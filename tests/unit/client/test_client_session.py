"""Session against the in-process fake control: data transfer, job calls, retries, metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_control_server import FakeControl

from skmaker import FailedPrecondition, NotFound, Session, SKLearn, Unavailable
from skmaker import session as session_module


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "RETRY_FIRST_BACKOFF_S", 0.001)


def _train(session: Session, tmp_path: Path, name: str) -> None:
    script = tmp_path / "train.py"
    script.write_text("")
    SKLearn(entry_point=str(script), session=session).fit(wait=False, job_name=name)


def test_address_and_token_come_from_the_environment(
    fake_control: FakeControl, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SKMAKER_ADDRESS", fake_control.address)
    monkeypatch.setenv("SKMAKER_TOKEN", "s3cret")
    monkeypatch.delenv("SKMAKER_TLS_CA", raising=False)
    with Session() as session:
        assert session.address == fake_control.address
        _train(session, tmp_path, "job-a")
    assert fake_control.metadata_seen
    assert {m.get("authorization") for m in fake_control.metadata_seen} == {"Bearer s3cret"}


def test_default_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKMAKER_ADDRESS", raising=False)
    with Session() as session:
        assert session.address == "localhost:50051"
        assert session.default_bucket() == "skmaker"


def test_upload_file_lands_under_the_prefix(session: Session, fake_control: FakeControl) -> None:
    path = Path(__file__)
    uri = session.upload_data(path, bucket="ignored", key_prefix="some/prefix/")

    assert uri == f"store://some/prefix/{path.name}"
    assert fake_control.objects[f"some/prefix/{path.name}"] == path.read_bytes()


def test_upload_folder_keeps_the_layout_and_returns_the_prefix(
    session: Session, fake_control: FakeControl, tmp_path: Path
) -> None:
    (tmp_path / "data" / "nested").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("1,2\n")
    (tmp_path / "data" / "nested" / "b.csv").write_text("3,4\n")

    uri = session.upload_data(tmp_path / "data", key_prefix="scikit-iris/data")

    assert uri == "store://scikit-iris/data"
    assert sorted(fake_control.objects) == [
        "scikit-iris/data/a.csv",
        "scikit-iris/data/nested/b.csv",
    ]


def test_upload_of_a_missing_path_raises(session: Session, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        session.upload_data(tmp_path / "absent")


def test_download_restores_what_was_uploaded(session: Session, tmp_path: Path) -> None:
    (tmp_path / "data" / "nested").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("1,2\n")
    (tmp_path / "data" / "nested" / "b.csv").write_text("3,4\n")
    uri = session.upload_data(tmp_path / "data", key_prefix="d")

    written = session.download_data(tmp_path / "out", uri)
    single = session.download_data(tmp_path / "one", "store://d/a.csv")

    assert written == [str(tmp_path / "out" / "a.csv"), str(tmp_path / "out" / "nested" / "b.csv")]
    assert (tmp_path / "out" / "nested" / "b.csv").read_text() == "3,4\n"
    assert single == [str(tmp_path / "one" / "a.csv")]


def test_download_of_nothing_is_not_found(session: Session, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nothing stored"):
        session.download_data(tmp_path, "store://absent")


def test_describe_is_shaped_like_boto3(session: Session, tmp_path: Path) -> None:
    _train(session, tmp_path, "job-b")

    description = session.describe_training_job("job-b")

    assert description["TrainingJobName"] == "job-b"
    assert description["TrainingJobStatus"] == "Completed"
    assert description["ModelArtifacts"] == {
        "S3ModelArtifacts": "store://job-b/output/model.tar.gz"
    }
    assert description["TrainingTimeInSeconds"] == 3
    assert description["CreationTime"].tzinfo is not None
    assert "FailureReason" not in description


def test_describe_retries_unavailable(
    session: Session, fake_control: FakeControl, tmp_path: Path
) -> None:
    _train(session, tmp_path, "job-c")
    fake_control.unavailable_describes = 2
    fake_control.describe_calls = 0

    assert session.describe_training_job("job-c")["TrainingJobName"] == "job-c"
    assert fake_control.describe_calls == 3


def test_describe_gives_up_after_the_retries(
    session: Session, fake_control: FakeControl, tmp_path: Path
) -> None:
    _train(session, tmp_path, "job-d")
    fake_control.unavailable_describes = 100
    fake_control.describe_calls = 0

    with pytest.raises(Unavailable, match="draining"):
        session.describe_training_job("job-d")
    assert fake_control.describe_calls == session_module.RETRY_ATTEMPTS


def test_unknown_job_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound, match="absent"):
        session.describe_training_job("absent")


def test_stopping_a_finished_job_is_a_failed_precondition(session: Session, tmp_path: Path) -> None:
    _train(session, tmp_path, "job-e")
    with pytest.raises(FailedPrecondition):
        session.stop_training_job("job-e")


def test_list_pages_and_filters(session: Session, tmp_path: Path) -> None:
    for index in range(5):
        _train(session, tmp_path, f"job-{index}")
    _train(session, tmp_path, "other")

    names = [s["TrainingJobName"] for s in session.list_training_jobs(name_contains_prefix="job-")]
    first_two = session.list_training_jobs(max_results=2)
    completed = session.list_training_jobs(status_equals="Completed")
    in_progress = session.list_training_jobs(status_equals="InProgress")

    assert names == ["job-4", "job-3", "job-2", "job-1", "job-0"]
    assert [s["TrainingJobName"] for s in first_two] == ["other", "job-4"]
    assert len(completed) == 6
    assert in_progress == []


def test_unknown_status_filter_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="unknown training job status"):
        session.list_training_jobs(status_equals="Running")


def test_log_stream_resumes_after_unavailable_without_repeating(
    session: Session, fake_control: FakeControl, tmp_path: Path
) -> None:
    _train(session, tmp_path, "job-f")
    fake_control.logs["job-f"] = [f"line {i}" for i in range(5)]
    fake_control.log_batches_before_unavailable = 3

    lines = list(session.training_job_log_lines("job-f", follow=True))

    assert [line.text for line in lines] == [f"line {i}" for i in range(5)]
    assert [line.sequence for line in lines] == list(range(5))
