"""Acceptance of the S3 artifact store (issue 17): the iris walkthrough on a control whose
artifacts live in a real S3-compatible server (SeaweedFS), with no byte through the control.

`make test-s3` runs it (a few minutes: it trains, deploys, transforms and tunes). The control
runs `--local --artifact-store s3://<bucket>/<prefix>` with the server's endpoint and keys in
the standard AWS variables; the walkthrough (examples/iris/walkthrough.py, `make demo`'s) runs
every step through the client. Then: every artifact is an object in the bucket under the
prefix (listed with boto3); the control's data folder holds its database, its children's logs
and work folders, but no artifact or data file; and its /metrics say the artifact RPCs carried
0 bytes: the client, the trainers, the batch workers and the replicas moved every byte over
presigned URLs.
"""

from __future__ import annotations

import importlib.util
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from skmaker import Session
from tests.harness import REPO_ROOT, ServiceProcess, run_service
from tests.s3server import S3Server, start_s3_server

pytestmark = pytest.mark.integration

BUCKET = "skmaker-walkthrough"
PREFIX = "team/iris"


def _walkthrough() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "iris_walkthrough", REPO_ROOT / "examples" / "iris" / "walkthrough.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path / "s3", [BUCKET])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def control(s3: S3Server, tmp_path: Path) -> Iterator[ServiceProcess]:
    walkthrough = _walkthrough()
    service = run_service(
        "control",
        tmp_path / "control",
        [
            "--local",
            "--data-dir",
            str(tmp_path / "data"),
            "--local-trainers",
            str(walkthrough.LOCAL_TRAINERS),
            "--local-batch-workers-max",
            str(walkthrough.LOCAL_BATCH_WORKERS),
            "--artifact-store",
            f"s3://{BUCKET}/{PREFIX}",
        ],
        env=s3.env(),
        deadline_s=120,
    )
    try:
        yield service
    finally:
        service.stop()


def _artifact_rpc_bytes(control: ServiceProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{control.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    pattern = r'skmaker_control_artifact_rpc_bytes_total\{direction="(\w+)"\} (\S+)'
    return {direction: float(value) for direction, value in re.findall(pattern, text)}


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.timeout(900)
def test_the_iris_walkthrough_keeps_every_artifact_in_the_bucket(
    s3: S3Server,
    control: ServiceProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SKMAKER_TOKEN", raising=False)
    with Session(control.address) as session:
        assert session.default_bucket() == BUCKET
        tuned_accuracy = _walkthrough().run(session)
    assert tuned_accuracy >= 0.9, control.logs()

    printed = capsys.readouterr().out
    root = f"s3://{BUCKET}/{PREFIX}"
    assert f"training data: {root}/scikit-iris/data\n" in printed
    assert re.search(rf"model artifact: {re.escape(root)}/\S+/output/model\.tar\.gz\n", printed)
    assert re.search(rf"batch transform \S+ wrote {re.escape(root)}/transform-jobs/\S+\n", printed)
    assert "batch accuracy on 30 held-out rows: 1.000" in printed

    # Every artifact is an object of the bucket, under the store's prefix.
    paginator = s3.client().get_paginator("list_objects_v2")
    keys = [
        item["Key"]
        for page in paginator.paginate(Bucket=BUCKET)
        for item in page.get("Contents", [])
    ]
    assert keys and all(key.startswith(f"{PREFIX}/") for key in keys), keys
    stored = [key[len(PREFIX) + 1 :] for key in keys]
    assert "scikit-iris/data/iris.csv" in stored
    assert "scikit-iris/batch/setosa.csv" in stored
    outputs = sorted(key.rsplit("/", 1)[-1] for key in stored if key.endswith(".out"))
    assert outputs == ["setosa.csv.out", "versicolor.csv.out", "virginica.csv.out"], stored
    models = [key for key in stored if key.endswith("/output/model.tar.gz")]
    code = [key for key in stored if key.endswith("/source/sourcedir.tar.gz")]
    # A training job and six tuning trials, each with its model; the trials share one bundle.
    assert (len(models), len(code)) == (7, 2), stored
    assert not [key for key in stored if ".skmaker-" in key], "staged shard outputs are gone"

    # The control's data folder keeps its state, not artifacts; no byte went through it.
    data_files = _files_under(tmp_path / "data")
    assert "control.db" in data_files
    # Besides the database and the children's logs: only what the --local workers keep in
    # their own work folders (the models a batch worker loaded), as they would on any machine.
    kept = [name for name in data_files if not name.startswith(("control.db", "logs/"))]
    assert all(name.startswith("work/") for name in kept), kept
    data = [name for name in kept if name.endswith((".tar.gz", ".csv", ".out", ".errors"))]
    assert not data, "no artifact or data file is left under the data folder"
    assert _artifact_rpc_bytes(control) == {"upload": 0.0, "download": 0.0}
