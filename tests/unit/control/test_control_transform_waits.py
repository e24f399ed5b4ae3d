"""Why a transform job's shards wait: its runtime is being built, its build failed, or no batch
worker on it asks for work; and the build such a job waits on is started.

A real scheduler and store; the runtime builds are `FakeBuilds` (tests/unit/control/
test_control_runtimes.py), which the test releases or fails.
"""

from __future__ import annotations

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
from services.control.transform.jobs import TransformJobs
from services.control.transform.servicer import TransformServicer
from services.control.transform.values import TransformJobSpec
from services.control.transform.waits import TransformWaits
from skmaker.v1 import transform_pb2
from tests.unit.control.helpers import FakeClock, put_bytes
from tests.unit.control.test_control_runtimes import FakeBuilds, _wait_until_built

TRANSFORM = [TaskKind.TRANSFORM]


@pytest.fixture
def builds() -> FakeBuilds:
    return FakeBuilds()


@pytest.fixture
def runtimes(tmp_path: Path, builds: FakeBuilds) -> ControlRuntimes:
    locks = tmp_path / "locks"
    locks.mkdir()
    for name, version in (("sklearn-1.2", "1.2.2"), ("sklearn-1.9", "1.9.1")):
        (locks / f"{name}.lock").write_text(f"scikit-learn=={version}\n")
    return ControlRuntimes(str(tmp_path / "built"), locks_dir=locks, build=builds)


@pytest.fixture
def transforms(
    store: ControlStore,
    scheduler: Scheduler,
    artifacts: LocalArtifactStore,
    metrics: Any,
    clock: FakeClock,
    runtimes: ControlRuntimes,
) -> TransformJobs:
    put_bytes(artifacts, "m/model.tar.gz", b"x")
    put_bytes(artifacts, "in/rows.csv", b"1,2\n3,4\n")
    models = ModelRegistry(store, artifacts, clock=clock, resolve_runtime=runtimes.resolve)
    models.create(Model("old", "store://m/model.tar.gz", "inference.py", framework_version="1.2"))
    models.create(Model("new", "store://m/model.tar.gz", "inference.py"))
    jobs = TransformJobs(
        store, scheduler, artifacts, models, metrics, clock=clock, resolve_runtime=runtimes.resolve
    )
    scheduler.register(TaskKind.TRANSFORM, jobs)
    for name, model in (("on-old", "old"), ("on-new", "new")):
        jobs.create(name, TransformJobSpec(model_name=model, input_uri="store://in"))
    return jobs


def test_a_transform_no_worker_takes_says_which_runtime_and_gets_it_built(
    transforms: TransformJobs,
    scheduler: Scheduler,
    runtimes: ControlRuntimes,
    builds: FakeBuilds,
    clock: FakeClock,
) -> None:
    waits = TransformWaits(scheduler, runtimes)
    # Just started, the control cannot know its workers yet: no verdict.
    assert waits.message(transforms.describe("on-old")) == ""
    clock.advance(61)
    # Only a worker on the newest runtime asks for work.
    assert scheduler.acquire("w19", TRANSFORM, 0, script_runtime="sklearn-1.9") is not None
    assert waits.message(transforms.describe("on-new")) == ""
    assert waits.message(transforms.describe("on-old")) == (
        "no batch worker serves runtime sklearn-1.2: none asked for its shards in the last 60 s "
        "(a batch worker takes the shards of its own runtime)"
    )
    # The loop starts the build the shards wait on, once.
    assert waits.step() == 1
    assert waits.step() == 0
    assert builds.calls == ["sklearn-1.2"]
    assert waits.message(transforms.describe("on-old")) == (
        "building runtime sklearn-1.2 (first use) before a batch worker can take the shards"
    )
    builds.release.set()
    _wait_until_built(runtimes, "sklearn-1.2")
    # Built, but no worker on it asked yet: still said; once one asks, the job no longer waits.
    assert waits.message(transforms.describe("on-old")).startswith(
        "no batch worker serves runtime sklearn-1.2: none asked"
    )
    assert scheduler.acquire("w12", TRANSFORM, 0, script_runtime="sklearn-1.2") is not None
    assert waits.message(transforms.describe("on-old")) == ""
    # A worker that stops asking stops counting after a minute.
    clock.advance(61)
    assert scheduler.acquire("w19", TRANSFORM, 0, script_runtime="sklearn-1.9") is None
    assert not scheduler.has_worker_for(TaskKind.TRANSFORM, "sklearn-1.2", 60)
    assert scheduler.has_worker_for(TaskKind.TRANSFORM, "sklearn-1.9", 60)


def test_a_failed_build_is_the_reason_shown(
    transforms: TransformJobs,
    scheduler: Scheduler,
    runtimes: ControlRuntimes,
    builds: FakeBuilds,
    clock: FakeClock,
) -> None:
    waits = TransformWaits(scheduler, runtimes)
    clock.advance(61)
    builds.fail = True
    builds.release.set()
    assert waits.step() == 2  # nobody serves either runtime: both builds start
    _wait_until_built(runtimes, "sklearn-1.2")
    assert waits.message(transforms.describe("on-old")) == (
        "no batch worker serves runtime sklearn-1.2: building script runtime sklearn-1.2 "
        "failed: no space left on device"
    )


def test_describe_carries_the_message_and_a_finished_job_has_none(
    transforms: TransformJobs,
    scheduler: Scheduler,
    runtimes: ControlRuntimes,
    clock: FakeClock,
) -> None:
    waits = TransformWaits(scheduler, runtimes)
    servicer = TransformServicer(transforms, waits.message)
    clock.advance(61)
    request = transform_pb2.DescribeTransformJobRequest(name="on-old")
    described = servicer.DescribeTransformJob(request, None).transform_job  # type: ignore[arg-type]
    assert described.status_message.startswith("no batch worker serves runtime sklearn-1.2")
    transforms.stop("on-old")
    described = servicer.DescribeTransformJob(request, None).transform_job  # type: ignore[arg-type]
    assert described.status_message == ""
