"""TrainingJobRun end to end over a directory-backed artifact store (no control needed)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tarfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from services.sagemaker.scripts import runner
from services.trainer.job import (
    ChannelSpec,
    JobEnvironment,
    JobOutcome,
    RuntimeBuildFailed,
    RuntimeUnavailable,
    TrainingAssignment,
    TrainingJobRun,
)


class DirectoryStore:
    """ArtifactAccess over a local folder: store://key -> root/key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, uri: str) -> Path:
        return self.root / uri.removeprefix("store://")

    def download_file(self, uri: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(uri), dest)

    def download_prefix(self, uri: str, dest_dir: Path) -> list[Path]:
        source = self._path(uri)
        if source.is_file():
            shutil.copyfile(source, dest_dir / source.name)
            return [dest_dir / source.name]
        written = []
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            target = dest_dir / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            written.append(target)
        return written

    def upload_file(self, path: Path, uri: str) -> str:
        target = self._path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return uri


class RecordingReporter:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.metrics: list[tuple[str, float]] = []
        self.statuses: list[str] = []
        self.script_ready = threading.Event()

    def log_line(self, stream: str, text: str, timestamp: float) -> None:
        self.lines.append((stream, text))
        if (stream, text) == ("stdout", "ready"):
            self.script_ready.set()

    def metric(self, name: str, value: float, timestamp: float) -> None:
        self.metrics.append((name, value))

    def secondary_status(self, status: str) -> None:
        self.statuses.append(status)


def _bundle(store: DirectoryStore, key: str, files: dict[str, str]) -> str:
    target = store.root / key
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return f"store://{key}"


def _run(
    tmp_path: Path, script: str, **overrides: object
) -> tuple[TrainingJobRun, DirectoryStore, RecordingReporter]:
    store = DirectoryStore(tmp_path / "store")
    (store.root / "data" / "train").mkdir(parents=True)
    (store.root / "data" / "train" / "rows.csv").write_text("1,2\n3,4\n")
    source_uri = _bundle(store, "jobs/j/source/sourcedir.tar.gz", {"train.py": script})
    fields: dict[str, object] = {
        "job_name": "j",
        "attempt": 1,
        "entry_point": "train.py",
        "source_uri": source_uri,
        "hyperparameters": {"epochs": "3", "sagemaker_program": '"train.py"'},
        "channels": [ChannelSpec("train", "store://data/train")],
        "metric_definitions": [("loss", r"loss=([0-9.]+)")],
        "environment": {},
        "max_runtime_s": 60.0,
    }
    fields.update(overrides)
    assignment = TrainingAssignment(**fields)  # type: ignore[arg-type]
    env = JobEnvironment(
        python=sys.executable,
        deps_root=tmp_path / "deps",
        base_environment={"PATH": "/usr/bin:/bin"},
        stop_grace_s=2.0,
    )
    reporter = RecordingReporter()
    run = TrainingJobRun(assignment, tmp_path / "ws", reporter, store, env)
    return run, store, reporter


def test_successful_job_uploads_model_and_output_archives(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "rows = open(os.path.join(os.environ['SM_CHANNEL_TRAIN'], 'rows.csv')).read()\n"
        "print('loss=0.25', sys.argv[1:])\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.txt'), 'w').write(rows)\n"
        "open(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'extra.txt'), 'w').write('x')\n"
    )
    run, store, reporter = _run(tmp_path, script)
    outcome = run.run()
    assert outcome.outcome == runner.SUCCEEDED, outcome.failure_reason
    assert outcome.model_artifact_uri == "store://jobs/j/output/model.tar.gz"
    with tarfile.open(store.root / "jobs/j/output/model.tar.gz") as tar:
        assert tar.getnames() == ["model.txt"]
        member = tar.extractfile("model.txt")
        assert member is not None and member.read() == b"1,2\n3,4\n"
    with tarfile.open(store.root / "jobs/j/output/output.tar.gz") as tar:
        assert tar.getnames() == ["extra.txt"]
    assert ("stdout", "loss=0.25 ['--epochs', '3']") in reporter.lines
    assert reporter.metrics == [("loss", 0.25)]
    assert reporter.statuses == ["Downloading", "Training", "Uploading"]
    assert outcome.versions is not None and outcome.versions.sklearn


def test_missing_entry_point_is_a_client_error(tmp_path: Path) -> None:
    run, _, _reporter = _run(tmp_path, "print('hi')\n", entry_point="nope.py")
    outcome = run.run()
    assert outcome.outcome == runner.FAILED
    assert outcome.failure_reason.startswith("ClientError: entry point 'nope.py'")


def test_a_bundle_that_is_not_the_one_the_job_is_bound_to_is_not_run(tmp_path: Path) -> None:
    # The kept copy holds other code than the digest the job is bound to.
    run, store, _reporter = _run(
        tmp_path,
        "open('/dev/null').close()\n",
        source_sha256="0" * 64,
        source_bundle_uri="store://code-bundles/sha256/x/sourcedir.tar.gz",
    )
    _bundle(store, "code-bundles/sha256/x/sourcedir.tar.gz", {"train.py": "print('other')\n"})
    outcome = run.run()
    assert outcome.outcome == runner.FAILED
    assert "is not the job's code" in outcome.failure_reason


def test_the_kept_bundle_with_the_bound_digest_is_the_one_run(tmp_path: Path) -> None:
    run, store, reporter = _run(
        tmp_path,
        "print('from jobs/')\n",
        source_bundle_uri="store://code-bundles/sha256/d/sourcedir.tar.gz",
    )
    _bundle(store, "code-bundles/sha256/d/sourcedir.tar.gz", {"train.py": "print('kept')\n"})
    kept = (store.root / "code-bundles/sha256/d/sourcedir.tar.gz").read_bytes()
    run = TrainingJobRun(
        replace(run.assignment, source_sha256=hashlib.sha256(kept).hexdigest()),
        tmp_path / "ws2",
        reporter,
        store,
        run.env,
    )
    outcome = run.run()
    assert outcome.outcome == runner.SUCCEEDED, outcome.failure_reason
    assert ("stdout", "kept") in reporter.lines


def test_missing_channel_data_is_a_client_error(tmp_path: Path) -> None:
    run, _, _reporter = _run(
        tmp_path, "print('hi')\n", channels=[ChannelSpec("train", "store://nothing")]
    )
    outcome = run.run()
    assert outcome.outcome == runner.FAILED
    assert "channel 'train'" in outcome.failure_reason
    assert outcome.failure_reason.startswith("ClientError: ")


def test_stop_ends_the_script_and_keeps_what_it_saved(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys, time\n"
        "def bye(*_):\n"
        "    open(os.path.join(os.environ['SM_MODEL_DIR'], 'partial.txt'), 'w').write('p')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    run, store, reporter = _run(tmp_path, script)
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(outcome=run.run()))
    thread.start()
    assert reporter.script_ready.wait(30), reporter.lines
    run.stop_requested.set()
    thread.join(30)
    outcome = result["outcome"]
    assert isinstance(outcome, JobOutcome)
    assert outcome.outcome == runner.STOPPED
    with tarfile.open(store.root / "jobs/j/output/model.tar.gz") as tar:
        assert tar.getnames() == ["partial.txt"]


def test_abandoned_attempt_uploads_nothing(tmp_path: Path) -> None:
    run, store, _reporter = _run(tmp_path, "import time; print('x', flush=True); time.sleep(60)\n")
    run.abandoned.set()
    outcome = run.run()
    assert outcome.outcome == runner.STOPPED
    assert not (store.root / "jobs/j/output").exists()


@pytest.mark.parametrize("hp_value", ['"a b"'])
def test_hyperparameters_json_is_the_encoded_map(tmp_path: Path, hp_value: str) -> None:
    script = (
        "import json, os\n"
        "cfg = os.path.join(os.environ['SM_INPUT_CONFIG_DIR'], 'hyperparameters.json')\n"
        "print(json.dumps(json.load(open(cfg)), sort_keys=True))\n"
    )
    run, _, reporter = _run(tmp_path, script, hyperparameters={"s": hp_value})
    outcome = run.run()
    assert outcome.outcome == runner.SUCCEEDED, outcome.failure_reason
    printed = [t for s, t in reporter.lines if s == "stdout"]
    assert json.loads(printed[-1]) == {"s": hp_value}


def test_links_a_script_plants_are_not_followed_with_the_trainers_rights(tmp_path: Path) -> None:
    # The script swaps model/ for a link to a folder it could not read itself, and its failure
    # file for a link to a secret: neither may end up in the archive or the failure reason.
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("s3cret")
    script = (
        "import os, shutil\n"
        "model = os.environ['SM_MODEL_DIR']\n"
        "shutil.rmtree(model)\n"
        f"os.symlink({str(secret)!r}, model)\n"
    )
    run, store, reporter = _run(tmp_path, script)
    outcome = run.run()
    assert outcome.outcome == runner.SUCCEEDED, outcome.failure_reason
    with tarfile.open(store.root / "jobs/j/output/model.tar.gz") as tar:
        assert tar.getnames() == []
    assert ("platform", "model/ is a link, not a folder: not packed") in reporter.lines

    failing = (
        "import os\n"
        "failure = os.path.join(os.path.dirname(os.environ['SM_MODEL_DIR']), 'output', 'failure')\n"
        f"os.symlink({str(secret / 'token')!r}, failure)\n"
        "raise SystemExit(3)\n"
    )
    run, _store, _reporter = _run(tmp_path / "second", failing)
    outcome = run.run()
    assert outcome.outcome == runner.FAILED
    assert "s3cret" not in outcome.failure_reason and "ExitCode 3" in outcome.failure_reason


def test_the_script_runs_on_its_jobs_runtime_announced_in_the_log(tmp_path: Path) -> None:
    # Another interpreter: a link to this one, so the test needs no runtime built.
    other = tmp_path / "runtimes" / "sklearn-1.2" / "bin" / "python"
    other.parent.mkdir(parents=True)
    other.symlink_to(sys.executable)
    asked: list[str] = []

    def python_for(name: str, progress: Callable[[str], None]) -> str:
        asked.append(name)
        progress(f"building runtime {name} (first use; later jobs reuse it) ...")
        return str(other)

    script = "import sys\nprint('python', sys.executable)\n"
    run, _, reporter = _run(tmp_path, script, script_runtime="sklearn-1.2")
    run.env = replace(run.env, python_for=python_for)
    outcome = run.run()
    assert outcome.outcome == runner.SUCCEEDED, outcome.failure_reason
    assert asked == ["sklearn-1.2"]
    assert ("stdout", f"python {other}") in reporter.lines
    platform = [text for stream, text in reporter.lines if stream == "platform"]
    assert platform[0] == "building runtime sklearn-1.2 (first use; later jobs reuse it) ..."
    assert platform[1] == f"script runtime sklearn-1.2: {other}"
    # While it was built the job said so: PreparingTrainingStack, then the usual statuses.
    assert reporter.statuses[:2] == ["PreparingTrainingStack", "Downloading"]


def test_a_runtime_already_built_goes_straight_to_downloading(tmp_path: Path) -> None:
    run, _, reporter = _run(tmp_path, "print('ran')\n", script_runtime="sklearn-1.2")
    run.env = replace(run.env, python_for=lambda name, progress: sys.executable)
    assert run.run().outcome == runner.SUCCEEDED
    assert "PreparingTrainingStack" not in reporter.statuses
    assert reporter.statuses[0] == "Downloading"


def test_a_runtime_build_failure_is_an_internal_error_with_the_builds_last_lines(
    tmp_path: Path,
) -> None:
    said = "building script runtime sklearn-1.2 failed (exit 1): ERROR: No matching distribution"

    def python_for(name: str, progress: Callable[[str], None]) -> str:
        progress(f"building runtime {name} (first use; later jobs reuse it) ...")
        raise RuntimeBuildFailed(said)

    run, _, reporter = _run(tmp_path, "print('ran')\n", script_runtime="sklearn-1.2")
    run.env = replace(run.env, python_for=python_for)
    outcome = run.run()
    assert outcome.outcome == runner.FAILED
    assert outcome.failure_reason == "InternalServerError: " + said
    assert ("stdout", "ran") not in reporter.lines
    assert ("platform", "InternalServerError: " + said) in reporter.lines


def test_a_runtime_the_worker_cannot_have_fails_the_job_before_the_script(
    tmp_path: Path,
) -> None:
    def python_for(name: str, progress: Callable[[str], None]) -> str:
        raise RuntimeUnavailable(f"unknown script runtime {name!r}; known: sklearn-1.9")

    run, _, reporter = _run(tmp_path, "print('ran')\n", script_runtime="sklearn-0.23")
    run.env = replace(run.env, python_for=python_for)
    outcome = run.run()
    assert outcome.outcome == runner.FAILED
    assert outcome.failure_reason.startswith("ClientError: unknown script runtime 'sklearn-0.23'")
    assert ("stdout", "ran") not in reporter.lines
