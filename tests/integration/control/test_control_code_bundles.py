"""Jobs own their code: a job runs the bundle it was created with, and nobody can replace it.

Real control, local trainers, the real client: two `fit(job_name=...)` calls race with
different code (several rounds, so the interleavings vary), a finished job's name is reused,
and a zip bomb is handed to CreateTrainingJob.
"""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import grpc
import pytest

from tests.archive_bombs import write_zero_bomb
from tests.harness import ServiceProcess, run_service

pytestmark = pytest.mark.integration

ROUNDS = 4


def _code(folder: Path, marker: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.py").write_text(f"print({marker!r}, flush=True)\n")
    return folder


def _log_text(session: object, job_name: str) -> str:
    out = io.StringIO()
    session.logs_for_job(job_name, wait=True, out=out)  # type: ignore[attr-defined]
    return out.getvalue()


def _download(control: ServiceProcess, uri: str) -> bytes:
    from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc

    stub = artifacts_pb2_grpc.ArtifactServiceStub(control.channel())
    parts = stub.DownloadArtifact(artifacts_pb2.DownloadArtifactRequest(uri=uri), timeout=10)
    return b"".join(part.chunk for part in parts if part.HasField("chunk"))


def _describe(control: ServiceProcess, name: str) -> object:
    from skmaker.v1 import training_pb2, training_pb2_grpc

    stub = training_pb2_grpc.TrainingServiceStub(control.channel())
    request = training_pb2.DescribeTrainingJobRequest(name=name)
    return stub.DescribeTrainingJob(request, timeout=5).training_job


def _race(session: object, tmp_path: Path, name: str) -> str:
    """Two fits of different code under `name` at once; returns the marker of the one created."""
    from skmaker import SKLearn
    from skmaker.errors import SkmakerClientError

    start = threading.Barrier(2)
    outcome: dict[str, BaseException | None] = {}

    def fit(marker: str) -> None:
        code = _code(tmp_path / name / marker, marker)
        estimator = SKLearn(entry_point="train.py", source_dir=str(code), session=session)
        start.wait(10)
        try:
            estimator.fit(job_name=name, wait=False)
            outcome[marker] = None
        except SkmakerClientError as err:
            outcome[marker] = err

    threads = [threading.Thread(target=fit, args=(marker,)) for marker in ("code-A", "code-B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    created = [marker for marker, error in outcome.items() if error is None]
    assert len(outcome) == 2 and len(created) == 1, outcome
    return created[0]


def test_racing_fits_each_run_their_own_code_and_a_finished_jobs_bundle_is_kept(
    tmp_path: Path,
) -> None:
    from skmaker import Session, SKLearn
    from skmaker.errors import SkmakerClientError

    control = run_service(
        "control", tmp_path, ["--local", "--local-trainers-max=2", f"--data-dir={tmp_path / 'd'}"]
    )
    try:
        with Session(control.address, token="") as session:
            winners: dict[str, str] = {}
            for round_ in range(ROUNDS):
                winners[f"same-name-{round_}"] = _race(session, tmp_path, f"same-name-{round_}")
            for name, winner in winners.items():
                log = _log_text(session, name)
                loser = "code-B" if winner == "code-A" else "code-A"
                assert winner in log and loser not in log, (name, winner, log)
                job = _describe(control, name)
                assert job.status == 2, job  # COMPLETED
                bundle = _download(control, job.spec.source_uri)
                assert hashlib.sha256(bundle).hexdigest() == job.spec.source_sha256
                described = session.describe_training_job(name)
                assert described["AlgorithmSpecification"]["SourceSha256"] == job.spec.source_sha256

            # Reusing a finished job's name is refused before its bundle could change.
            name = "same-name-0"
            before = _download(control, f"store://jobs/{name}/source/sourcedir.tar.gz")
            code = _code(tmp_path / "again", "code-C")
            again = SKLearn(entry_point="train.py", source_dir=str(code), session=session)
            with pytest.raises(SkmakerClientError, match="cannot be replaced"):
                again.fit(job_name=name, wait=False)
            after = _download(control, f"store://jobs/{name}/source/sourcedir.tar.gz")
            assert after == before
            assert hashlib.sha256(after).hexdigest() == _describe(control, name).spec.source_sha256
            # Nor can anyone but its trainer write where its model is.
            fake = tmp_path / "model.tar.gz"
            fake.write_bytes(b"not the model")
            with pytest.raises(SkmakerClientError, match="only its trainer writes"):
                session.upload_data(str(fake), bucket="skmaker", key_prefix=f"jobs/{name}/output")
    finally:
        control.stop()


def test_a_bundle_bomb_is_refused_at_create_naming_the_limit(tmp_path: Path) -> None:
    from skmaker import Session
    from skmaker.v1 import training_job_pb2, training_pb2, training_pb2_grpc

    bomb = tmp_path / "sourcedir.tar.gz"
    write_zero_bomb(bomb, 2 * 1024**3, member="train.py")
    control = run_service("control", tmp_path, [f"--data-dir={tmp_path / 'd'}"])
    try:
        with Session(control.address, token="") as session:
            uri = session.upload_data(str(bomb), bucket="skmaker", key_prefix="bomb")
        training = training_pb2_grpc.TrainingServiceStub(control.channel())
        spec = training_job_pb2.TrainingJobSpec(entry_point="train.py", source_uri=uri)
        request = training_pb2.CreateTrainingJobRequest(name="bomb", spec=spec)
        with pytest.raises(grpc.RpcError) as refused:
            training.CreateTrainingJob(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-archive-bytes" in str(refused.value.details())
        # A bundle asked for by a digest it does not have is refused too.
        wrong = training_job_pb2.TrainingJobSpec(
            entry_point="train.py", source_uri=uri, source_sha256="0" * 64
        )
        with pytest.raises(grpc.RpcError) as replaced:
            training.CreateTrainingJob(
                training_pb2.CreateTrainingJobRequest(name="bomb", spec=wrong), timeout=5
            )
        assert replaced.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        control.stop()
