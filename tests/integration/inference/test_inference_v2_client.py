"""A V2 client skmaker did not write (tritonclient[grpc]) against a real replica process.

tritonclient needs protobuf < 7 while skmaker pins 7, so it lives in its own venv,
`.venv-v2client`, made by `make v2client` (a prerequisite of `make test`); the client runs there
as a subprocess (`v2_client_script.py`). The test skips when that venv is missing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from tests.harness import REPO_ROOT, ServiceProcess, run_service

pytestmark = pytest.mark.integration

V2_PYTHON = REPO_ROOT / ".venv-v2client" / "bin" / "python"
CLIENT_SCRIPT = Path(__file__).with_name("v2_client_script.py")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 4.9, 1.5]]
MODEL_FN = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[tuple[ServiceProcess, Any]]:
    model_dir, code_dir = tmp_path / "model", tmp_path / "code"
    model_dir.mkdir()
    code_dir.mkdir()
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)
    joblib.dump(model, model_dir / "model.joblib")
    (code_dir / "serve.py").write_text(MODEL_FN)
    process = run_service(
        "inference",
        tmp_path,
        [
            f"--model-dir={model_dir}",
            f"--code-dir={code_dir}",
            "--entry-point=serve.py",
            "--endpoint-name=iris",
            f"--work-dir={tmp_path / 'work'}",
        ],
    )
    yield process, model
    process.stop()


@pytest.mark.skipif(
    not V2_PYTHON.exists(), reason="no .venv-v2client: run `make v2client` (part of `make test`)"
)
def test_tritonclient_gets_the_same_predictions(replica: tuple[ServiceProcess, Any]) -> None:
    process, model = replica
    result = subprocess.run(
        [str(V2_PYTHON), str(CLIENT_SCRIPT), process.address, "iris", json.dumps(ROWS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    assert answer["server"]["name"] == "skmaker"
    assert answer["metadata"]["platform"] == "sklearn"
    assert answer["metadata"]["inputs"][0]["shape"] == ["-1", "4"]
    labels = model.predict(np.array(ROWS, dtype=np.float32)).tolist()
    assert answer["predict"] == labels
