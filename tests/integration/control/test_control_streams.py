"""Long streams cannot starve the control: Describe stays fast and leases stay alive.

A real control with local trainers runs a job while 200 clients follow its log and 50 uploads
sit after their header; Describe is timed, and the job must end Completed on its first attempt
(a starved heartbeat would have let its 3 s lease expire and re-run it). A second control with
tiny limits shows the refusals: RESOURCE_EXHAUSTED naming the limit, and an idle upload ended
with DEADLINE_EXCEEDED without leaving its partial data behind.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.harness import run_service, script_visible_dir

pytestmark = pytest.mark.integration

FOLLOWERS = 200
STALLED_UPLOADS = 50

# Prints a line, then waits until the test drops the release file (bounded by a deadline).
WAITING_SCRIPT = """\
import os, sys, time
release = os.path.join(sys.argv[sys.argv.index("--release") + 1], "go")
print("waiting for the release file", flush=True)
deadline = time.monotonic() + 120
while not os.path.exists(release):
    if time.monotonic() > deadline:
        sys.exit("never released")
    time.sleep(0.05)
print("released", flush=True)
"""


def _wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


def _stalled_upload(uri: str, released: threading.Event) -> Iterator[object]:
    """An upload that sends its header and then nothing until `released`."""
    from skmaker.v1 import artifacts_pb2

    header = artifacts_pb2.UploadHeader(uri=uri, size=1024, sha256="0" * 64)
    yield artifacts_pb2.UploadArtifactRequest(header=header)
    released.wait(120)


def _p99_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_followers_and_stalled_uploads_leave_describe_fast_and_leases_alive(
    tmp_path: Path,
) -> None:
    from skmaker import Session, SKLearn
    from skmaker.v1 import artifacts_pb2_grpc, training_job_pb2, training_pb2, training_pb2_grpc

    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(WAITING_SCRIPT)
    release = script_visible_dir()
    control = run_service(
        "control",
        tmp_path,
        [
            "--local",
            f"--data-dir={tmp_path / 'data'}",
            "--lease-s=3",
            "--heartbeat-interval-s=0.5",
            f"--max-streams={FOLLOWERS + STALLED_UPLOADS}",
            f"--max-streams-per-caller={FOLLOWERS + STALLED_UPLOADS}",
        ],
    )
    released = threading.Event()
    calls: list[grpc.Future] = []
    try:
        with Session(control.address, token="") as session:
            estimator = SKLearn(
                entry_point="train.py",
                source_dir=str(code),
                hyperparameters={"release": str(release)},
                session=session,
            )
            estimator.fit(wait=False, job_name="held-open")
        training = training_pb2_grpc.TrainingServiceStub(control.channel())

        def describe() -> training_job_pb2.TrainingJob:
            request = training_pb2.DescribeTrainingJobRequest(name="held-open")
            return training.DescribeTrainingJob(request, timeout=5).training_job

        _wait_until(lambda: describe().secondary_status == "Training")
        # Spread over several connections, as many clients would be.
        follower_stubs = [
            training_pb2_grpc.TrainingServiceStub(control.channel()) for _ in range(8)
        ]
        followers = [
            follower_stubs[i % 8].GetTrainingJobLogs(
                training_pb2.GetTrainingJobLogsRequest(name="held-open", follow=True)
            )
            for i in range(FOLLOWERS)
        ]
        upload_stubs = [artifacts_pb2_grpc.ArtifactServiceStub(control.channel()) for _ in range(2)]
        calls = [
            upload_stubs[i % 2].UploadArtifact.future(
                _stalled_upload(f"store://stalled/{i}", released)
            )
            for i in range(STALLED_UPLOADS)
        ]
        # Every follower is served: each receives the job's first lines.
        for follower in followers:
            assert next(follower).lines[0].sequence == 0

        latencies = []
        for _ in range(300):
            started = time.perf_counter()
            assert describe().status == training_job_pb2.TRAINING_JOB_STATUS_IN_PROGRESS
            latencies.append(time.perf_counter() - started)
        p99 = _p99_ms(latencies)
        print(
            f"Describe under {FOLLOWERS} followers + {STALLED_UPLOADS} stalled uploads: "
            f"p50 {1000 * sorted(latencies)[150]:.1f} ms, p99 {p99:.1f} ms"
        )
        assert p99 < 100, f"Describe p99 {p99:.1f} ms under the streams"
        assert not any(call.done() for call in calls), "a stalled upload ended early"

        (release / "go").touch()
        _wait_until(lambda: describe().status == training_job_pb2.TRAINING_JOB_STATUS_COMPLETED)
        job = describe()
        assert job.attempts == 1, "the job was re-run: its lease expired under the streams"
        assert not any("lost" in t.message for t in job.secondary_status_transitions)
        for follower in followers:
            follower.cancel()
    finally:
        released.set()
        for call in calls:
            call.cancel()
        control.stop()


def test_streams_beyond_the_limits_are_refused_and_idle_uploads_ended(tmp_path: Path) -> None:
    from skmaker.v1 import artifacts_pb2, artifacts_pb2_grpc, training_pb2, training_pb2_grpc

    data_dir = tmp_path / "data"
    control = run_service(
        "control",
        tmp_path,
        [
            f"--data-dir={data_dir}",
            "--max-streams=3",
            "--max-streams-per-caller=2",
            "--stream-idle-timeout-s=5",
        ],
    )
    released = threading.Event()
    try:
        artifacts = artifacts_pb2_grpc.ArtifactServiceStub(control.channel())
        held = [
            artifacts.UploadArtifact.future(_stalled_upload(f"store://stalled/{i}", released))
            for i in range(2)
        ]
        _wait_until(
            lambda: list((data_dir / "artifacts" / "objects").glob("stalled/.skmaker-*")) != []
        )
        with pytest.raises(grpc.RpcError) as refused:
            artifacts.UploadArtifact(_stalled_upload("store://stalled/third", released), timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams-per-caller=2" in str(refused.value.details())
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{control.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        assert 'skmaker_control_long_calls{call_class="stream"} 2.0' in metrics
        refusals = (
            'skmaker_control_long_calls_refused_total{call_class="stream",limit="per caller"}'
        )
        assert f"{refusals} 1.0" in metrics
        # A log follow is a stream of the same caller: refused too.
        training = training_pb2_grpc.TrainingServiceStub(control.channel())
        with pytest.raises(grpc.RpcError) as follow_refused:
            list(training.GetTrainingJobLogs(training_pb2.GetTrainingJobLogsRequest(name="x")))
        assert follow_refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Unary calls are not limited: a listing answers while both streams are held.
        listing = artifacts.ListArtifacts(
            artifacts_pb2.ListArtifactsRequest(uri_prefix=""), timeout=2
        )
        assert list(listing.artifacts) == []

        # The two stalled uploads are ended after 5 s without a message...
        for call in held:
            with pytest.raises(grpc.RpcError) as ended:
                call.result(timeout=10)
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "--stream-idle-timeout-s" in str(ended.value.details())
        # ... their partial files are gone, and their slots are free again.
        _wait_until(lambda: not list((data_dir / "artifacts" / "objects").rglob(".skmaker-*")))
        content = b"now it fits"
        digest = hashlib.sha256(content).hexdigest()
        header = artifacts_pb2.UploadHeader(uri="store://fits", size=len(content), sha256=digest)
        answers: list[artifacts_pb2.UploadArtifactResponse] = []

        def upload_fits() -> bool:
            # A handler frees its slot just after it removed its partial file: poll for it.
            try:
                answers.append(
                    artifacts.UploadArtifact(
                        iter(
                            [
                                artifacts_pb2.UploadArtifactRequest(header=header),
                                artifacts_pb2.UploadArtifactRequest(chunk=content),
                            ]
                        ),
                        timeout=5,
                    )
                )
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return False
            return True

        _wait_until(upload_fits, timeout_s=10.0)
        assert answers[-1].artifact.sha256 == digest
        # With the slots free again, a follow is served (a missing job is NOT_FOUND).
        with pytest.raises(grpc.RpcError) as missing:
            list(training.GetTrainingJobLogs(training_pb2.GetTrainingJobLogsRequest(name="nope")))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        released.set()
        control.stop()
