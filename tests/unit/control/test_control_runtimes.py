"""The control's script runtimes: what each resource records, which worker gets which task,
and the on-demand build replicas and batch workers wait for.

Real locks are replaced by small lock folders; building a real runtime is the integration
tests' business (tests/e2e/test_framework_versions.py).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.dispatch.scheduler import Scheduler
from services.control.dispatch.tasks import TaskKind
from services.control.hosting.model_registry import ModelRegistry
from services.control.hosting.model_values import Model
from services.control.runtimes import ControlRuntimes
from services.control.state import ControlStore
from services.control.training.jobs import TrainingJobs
from services.control.training.values import TrainingJobSpec
from services.control.transform.jobs import TransformJobs
from services.control.transform.values import TransformJobSpec
from services.runtime import script_runtimes
from services.runtime.errors import InvalidArgument
from tests.unit.control.conftest import FakeClock, put_bytes


class FakeBuilds:
    """Stands in for `script_runtimes.ensure_built`: leaves a stamped runtime when released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.fail = False

    def __call__(self, rt: script_runtimes.ScriptRuntime, **_: Any) -> Path:
        self.calls.append(rt.name)
        self.release.wait(10)
        if self.fail:
            raise OSError("no space left on device")
        (rt.root / "bin").mkdir(parents=True)
        rt.python.write_text("")
        stamp = {"name": rt.name, "lock_sha256": script_runtimes._sha256(rt.lock)}
        (rt.root / script_runtimes.STAMP_FILE).write_text(json.dumps(stamp))
        return rt.python


def _wait_until_built(runtimes: ControlRuntimes, name: str, deadline_s: float = 10.0) -> None:
    """Polls, under a deadline, until the background build of `name` has ended."""
    ended = time.monotonic() + deadline_s
    while runtimes.is_building(name):
        assert time.monotonic() < ended, f"the build of {name} did not end"
        threading.Event().wait(0.02)


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    folder = tmp_path / "locks"
    folder.mkdir()
    for name, version in (("sklearn-1.2", "1.2.2"), ("sklearn-1.9", "1.9.1")):
        (folder / f"{name}.lock").write_text(f"scikit-learn=={version}\n")
    return folder


@pytest.fixture
def builds() -> FakeBuilds:
    return FakeBuilds()


@pytest.fixture
def runtimes(tmp_path: Path, locks: Path, builds: FakeBuilds) -> ControlRuntimes:
    return ControlRuntimes(str(tmp_path / "built"), locks_dir=locks, build=builds)


def test_resolve_names_the_runtime_or_refuses_with_invalid_argument(
    runtimes: ControlRuntimes,
) -> None:
    assert runtimes.resolve("1.2-1") == "sklearn-1.2"
    assert runtimes.resolve("") == "sklearn-1.9"
    with pytest.raises(InvalidArgument, match=r"'0\.23-1'.*available: 1\.2-1 \(scikit-learn"):
        runtimes.resolve("0.23-1")


def test_the_operators_default_runtime_is_what_no_version_selects(
    tmp_path: Path, locks: Path
) -> None:
    runtimes = ControlRuntimes(str(tmp_path / "built"), "sklearn-1.2", locks_dir=locks)
    assert runtimes.resolve("") == "sklearn-1.2"
    assert runtimes.resolve("1.9") == "sklearn-1.9"


def test_a_runtime_is_built_once_in_the_background(
    runtimes: ControlRuntimes, builds: FakeBuilds
) -> None:
    heard: list[tuple[str, str]] = []
    runtimes.add_listener(lambda name, text: heard.append((name, text)))
    assert runtimes.python_if_ready("sklearn-1.2") is None  # starts the build
    assert runtimes.python_if_ready("sklearn-1.2") is None  # waits for the same one
    assert runtimes.is_building("sklearn-1.2")
    assert [s.state for s in runtimes.states()] == ["building", "not built"]
    builds.release.set()
    _wait_until_built(runtimes, "sklearn-1.2")
    python = runtimes.python_if_ready("sklearn-1.2")
    assert python is not None and python.endswith("sklearn-1.2/bin/python")
    assert builds.calls == ["sklearn-1.2"]
    assert heard[0] == ("sklearn-1.2", "building runtime sklearn-1.2 (first use) ...")
    assert heard[-1][1].startswith("runtime sklearn-1.2 ready in")


def test_a_failed_build_is_reported_then_retried_after_a_delay(
    tmp_path: Path, locks: Path, builds: FakeBuilds
) -> None:
    clock = FakeClock(100.0)
    runtimes = ControlRuntimes(
        str(tmp_path / "built"), locks_dir=locks, build=builds, retry_after_s=60, clock=clock
    )
    builds.fail = True
    builds.release.set()
    assert runtimes.python_if_ready("sklearn-1.2") is None
    _wait_until_built(runtimes, "sklearn-1.2")
    for _ in range(2):  # whoever asks (the launch check, the launch) hears why
        with pytest.raises(RuntimeError, match="no space left on device"):
            runtimes.python_if_ready("sklearn-1.2")
    clock.advance(60)
    assert runtimes.python_if_ready("sklearn-1.2") is None  # a new attempt
    assert builds.calls == ["sklearn-1.2", "sklearn-1.2"]


def test_build_now_streams_progress_and_ends_built(
    runtimes: ControlRuntimes, builds: FakeBuilds
) -> None:
    builds.release.set()
    lines = list(runtimes.build_now("1.2-1"))
    assert lines[-1].startswith("runtime sklearn-1.2 is built (")
    assert [s.state for s in runtimes.states()] == ["built", "not built"]
    with pytest.raises(InvalidArgument):
        list(runtimes.build_now("1.0-1"))


def test_jobs_and_models_record_their_runtime(
    store: ControlStore,
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    metrics: Any,
    clock: FakeClock,
    spec: TrainingJobSpec,
    runtimes: ControlRuntimes,
) -> None:
    jobs = TrainingJobs(
        store, scheduler, artifacts, metrics, clock=clock, resolve_runtime=runtimes.resolve
    )
    scheduler.register(TaskKind.TRAINING, jobs)
    old = jobs.create("old", replace(spec, framework_version="1.2-1"))
    new = jobs.create("new", spec)
    assert (old.spec.script_runtime, new.spec.script_runtime) == ("sklearn-1.2", "sklearn-1.9")
    with pytest.raises(InvalidArgument, match=r"1\.0-1"):
        jobs.create("bad", replace(spec, framework_version="1.0-1"))
    assert not store.training_job_exists("bad")

    put_bytes(artifacts, "m/model.tar.gz", b"x")
    models = ModelRegistry(store, artifacts, clock=clock, resolve_runtime=runtimes.resolve)

    def model(name: str, **changes: str) -> Model:
        return models.create(Model(name, "store://m/model.tar.gz", "inference.py", **changes))

    # A model keeps its training job's runtime, not the newest.
    assert model("from-old", training_job_name="old").script_runtime == "sklearn-1.2"
    # Asked for another: that one (the endpoint's events then say what differs).
    moved = model("moved", training_job_name="old", framework_version="1.9")
    assert moved.script_runtime == "sklearn-1.9"
    assert model("plain").script_runtime == "sklearn-1.9"
    with pytest.raises(InvalidArgument):
        model("bad", framework_version="0.23-1")
    # What is stored is read back after a restart.
    assert ModelRegistry(store, artifacts).describe("from-old").script_runtime == "sklearn-1.2"
    assert jobs.describe("old").spec.framework_version == "1.2-1"


def test_a_worker_on_a_runtime_gets_only_that_runtimes_tasks(scheduler: Scheduler) -> None:
    class Handler:
        def payload(self, task: Any) -> None:
            return None

        def on_leased(self, task: Any, now: float) -> None:
            pass

    scheduler.register(TaskKind.TRANSFORM, Handler())  # type: ignore[arg-type]
    old = scheduler.enqueue(TaskKind.TRANSFORM, "t-old", script_runtime="sklearn-1.2")
    new = scheduler.enqueue(TaskKind.TRANSFORM, "t-new", script_runtime="sklearn-1.9")
    anyone = scheduler.enqueue(TaskKind.TRANSFORM, "t-any")
    lease = scheduler.acquire("w19", [TaskKind.TRANSFORM], 0, script_runtime="sklearn-1.9")
    assert lease is not None and lease.task.task_id == new.task_id
    lease = scheduler.acquire("w19", [TaskKind.TRANSFORM], 0, script_runtime="sklearn-1.9")
    assert lease is not None and lease.task.task_id == anyone.task_id
    assert scheduler.acquire("w19", [TaskKind.TRANSFORM], 0, script_runtime="sklearn-1.9") is None
    lease = scheduler.acquire("w12", [TaskKind.TRANSFORM], 0, script_runtime="sklearn-1.2")
    assert lease is not None and lease.task.task_id == old.task_id


def test_a_transform_scores_on_its_models_runtime_or_the_one_asked_for(
    store: ControlStore,
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    metrics: Any,
    clock: FakeClock,
    runtimes: ControlRuntimes,
) -> None:
    put_bytes(artifacts, "m/model.tar.gz", b"x")
    put_bytes(artifacts, "in/rows.csv", b"1,2\n3,4\n")
    models = ModelRegistry(store, artifacts, clock=clock, resolve_runtime=runtimes.resolve)
    models.create(Model("old", "store://m/model.tar.gz", "inference.py", framework_version="1.2"))
    transforms = TransformJobs(
        store, scheduler, artifacts, models, metrics, clock=clock, resolve_runtime=runtimes.resolve
    )
    scheduler.register(TaskKind.TRANSFORM, transforms)
    spec = TransformJobSpec(model_name="old", input_uri="store://in", split_type="Line")
    transforms.create("as-trained", spec)
    transforms.create("moved", replace(spec, framework_version="1.9-1"))
    assert transforms.wanted_workers() == {"sklearn-1.2": 1, "sklearn-1.9": 1}
    assert transforms.describe("moved").model.script_runtime == "sklearn-1.9"
    lease = scheduler.acquire("w12", [TaskKind.TRANSFORM], 0, script_runtime="sklearn-1.2")
    assert lease is not None and lease.task.job_name == "as-trained"
    assert scheduler.acquire("w12", [TaskKind.TRANSFORM], 0, script_runtime="sklearn-1.2") is None
    with pytest.raises(InvalidArgument, match=r"0\.23"):
        transforms.create("bad", replace(spec, framework_version="0.23-1"))
