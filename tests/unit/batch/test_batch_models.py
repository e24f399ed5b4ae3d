"""ModelCache: a model is loaded once per process, environments are applied before every shard,
and the least recently used model is dropped past the capacity."""

from __future__ import annotations

import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest

from services.batch.control_link import ControlLink, ShardAssignment
from services.batch.metrics import BatchMetrics
from services.batch.models import ModelCache, batch_environment
from services.batch.worker import BatchWorker
from services.runtime import native_threads
from services.sagemaker.serving.model_loader import ModelLoadFailed, ModelSpec


class FolderSource:
    """A ModelSource serving archives from a local folder, counting downloads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.downloads: list[str] = []

    def describe_model(self, name: str) -> ModelSpec:
        raise AssertionError("the cache never describes: the task carries the model")

    def download(self, uri: str, dest: Path) -> None:
        self.downloads.append(uri)
        source = self.folder / uri.removeprefix("store://")
        if not source.exists():
            raise ModelLoadFailed(f"no artifact at {uri}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, dest)

    def trained_sklearn_version(self, training_job_name: str) -> str | None:
        return None


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Iterator[None]:
    # Loading a model puts its code folder on sys.path, as a replica does.
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@pytest.fixture
def source(tmp_path: Path, iris_model_dir: Path) -> FolderSource:
    archive = tmp_path / "store" / "m.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(iris_model_dir / "model.joblib", "model.joblib")
        tar.add(iris_model_dir / "code" / "batch_iris_default.py", "code/batch_iris_default.py")
        tar.add(iris_model_dir / "code" / "batch_iris_jsonl.py", "code/batch_iris_jsonl.py")
    return FolderSource(tmp_path / "store")


def _model(name: str, entry_point: str = "batch_iris_default.py", **environment: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        model_data_uri="store://m.tar.gz",
        entry_point=entry_point,
        environment=environment,
    )


def test_loaded_once_with_the_environment_applied_every_time(
    tmp_path: Path, source: FolderSource
) -> None:
    environ: dict[str, str] = {}
    cache = ModelCache(tmp_path / "work", tmp_path / "deps", environ, capacity=2)
    job_env = batch_environment(
        max_payload_mb=6, strategy="SingleRecord", max_concurrent=2, job_environment={"J": "1"}
    )
    first = cache.handler(_model("a", SPEED="slow"), job_env, source)
    assert environ["SAGEMAKER_BATCH"] == "true"
    assert environ["SAGEMAKER_BATCH_STRATEGY"] == "SINGLE_RECORD"
    assert (environ["SAGEMAKER_MAX_PAYLOAD_IN_MB"], environ["J"]) == ("6", "1")
    assert environ["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] == "2"
    assert environ["SPEED"] == "slow"
    second = cache.handler(_model("b", SPEED="fast"), job_env, source)
    assert environ["SPEED"] == "fast"
    # A cached model gets its own environment back, without a second download.
    assert cache.handler(_model("a", SPEED="slow"), job_env, source) is first
    assert environ["SPEED"] == "slow"
    assert source.downloads == ["store://m.tar.gz"] * 2
    assert first is not second
    assert first.invoke("5.1,3.5,1.4,0.2", "text/csv", "text/csv")[0] == b"0\n"


def test_a_jobs_variables_do_not_leak_into_the_next_job(
    tmp_path: Path, source: FolderSource
) -> None:
    environ = {"HOME": "/home/worker", "SLOW_S": "worker-default"}
    cache = ModelCache(tmp_path / "work", tmp_path / "deps", environ, capacity=2)
    cache.handler(_model("a"), {"SLOW_S": "5", "ONLY_FIRST": "x"}, source)
    assert (environ["SLOW_S"], environ["ONLY_FIRST"]) == ("5", "x")
    cache.handler(_model("a"), {"OTHER": "y"}, source)
    assert "ONLY_FIRST" not in environ
    assert environ["SLOW_S"] == "worker-default"  # the worker's own value is back
    assert (environ["OTHER"], environ["HOME"]) == ("y", "/home/worker")


def test_the_least_recently_used_model_is_dropped(tmp_path: Path, source: FolderSource) -> None:
    cache = ModelCache(tmp_path / "work", tmp_path / "deps", {}, capacity=1)
    cache.handler(_model("a"), {}, source)
    cache.handler(_model("b"), {}, source)
    cache.handler(_model("a"), {}, source)
    assert len(source.downloads) == 3


def test_a_missing_archive_fails_the_load(tmp_path: Path, source: FolderSource) -> None:
    cache = ModelCache(tmp_path / "work", tmp_path / "deps", {})
    missing = ModelSpec("c", "store://nope.tar.gz", "batch_iris_default.py")
    with pytest.raises(ModelLoadFailed, match="no artifact"):
        cache.handler(missing, {}, source)


# Counts its calls in the module.
EXECUTION_PARAMETERS_SCRIPT = """
import os

import joblib

CALLS = []


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def execution_parameters_fn():
    CALLS.append(1)
    return '{"BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 2}'
"""


def test_execution_parameters_fn_is_asked_once_per_loaded_model(
    tmp_path: Path, source: FolderSource, iris_model_dir: Path
) -> None:
    with tarfile.open(source.folder / "p.tar.gz", "w:gz") as tar:
        tar.add(iris_model_dir / "model.joblib", "model.joblib")
        script = tmp_path / "params.py"
        script.write_text(EXECUTION_PARAMETERS_SCRIPT)
        tar.add(script, "code/params.py")
    model = ModelSpec(name="p", model_data_uri="store://p.tar.gz", entry_point="params.py")
    environ: dict[str, str] = {}
    cache = ModelCache(tmp_path / "work", tmp_path / "deps", environ, capacity=1)
    # A job that set none of the knobs: only SAGEMAKER_BATCH is set (contract §4.2).
    unset = batch_environment(
        max_payload_mb=None, strategy=None, max_concurrent=None, job_environment={}
    )
    assert unset == {"SAGEMAKER_BATCH": "true"}
    handler = cache.handler(model, unset, source)
    assert not {key for key in environ if key.startswith("SAGEMAKER_MAX")}
    assert "SAGEMAKER_BATCH_STRATEGY" not in environ
    module = handler.module
    assert module is not None
    first = cache.execution_parameters(model)
    assert (first.batch_strategy, first.max_payload_mb, first.max_concurrent_transforms) == (
        "SingleRecord",
        2,
        None,
    )
    assert cache.execution_parameters(model) == first
    cache.handler(model, unset, source)
    assert cache.execution_parameters(model) == first
    assert module.CALLS == [1]
    # Dropped from the cache, loaded again: asked again.
    cache.handler(_model("a"), unset, source)
    reloaded = cache.handler(model, unset, source)
    assert cache.execution_parameters(model) == first
    assert reloaded.module is not None and reloaded.module.CALLS == [1]
    assert reloaded is not handler


@pytest.mark.parametrize(
    ("entry_point", "environment", "parallel"),
    [
        ("batch_iris_default.py", {}, True),
        # The user's input_fn and output_fn run per request: one mini-batch at a time.
        ("batch_iris_jsonl.py", {}, False),
        # scikit-learn serves (fast path off): as MaxConcurrentTransforms says.
        ("batch_iris_default.py", {"SKMAKER_FAST_PATH": "0"}, False),
    ],
)
def test_a_fast_path_model_without_user_handlers_is_scored_on_every_core(
    tmp_path: Path,
    source: FolderSource,
    entry_point: str,
    environment: dict[str, str],
    parallel: bool,
) -> None:
    cache = ModelCache(tmp_path / "work", tmp_path / "deps", {})
    model = _model("a", entry_point, **environment)
    handler = cache.handler(model, {}, source)
    assert cache.predict_path(model).is_fast == (not environment)
    worker = BatchWorker(
        ControlLink("127.0.0.1:1", "test/1", control_timeout_s=0.1),
        cache,
        tmp_path / "work",
        BatchMetrics.create(prometheus_client.CollectorRegistry()),
    )
    shard = ShardAssignment(
        task_id="t", attempt=1, heartbeat_interval_s=1.0, job_name="j", model=model,
        input_uri="store://in.csv", shard_index=0, start=0, end=10, output_uri="store://out",
        is_first_shard=True,
    )  # fmt: skip
    expected = native_threads.available_cpus() if parallel else 0
    assert worker._scoring_threads(shard, handler, "MultiRecord") == expected
    # One-record calls are mostly Python (the GIL): one at a time.
    assert worker._scoring_threads(shard, handler, "SingleRecord") == 0
