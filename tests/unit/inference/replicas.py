"""Helpers and fixtures for the replica's servicer tests: an iris tree and in-process replicas.

`start_replica` builds the real service (`services.inference.app.build`) in standalone mode and
starts it with `lifecycle.start` on 127.0.0.1:0, so the tests go through the real servicers,
interceptors and serialization with real stubs. Loading user code edits `sys.path` and
`sys.modules`; `isolated_user_code` undoes that for a test. The fixtures reach the tests through
this folder's conftest.py.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from services.inference import app
from services.inference.config import InferenceSettings
from services.runtime import lifecycle

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]

MODEL_FN = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


@dataclass
class InProcessReplica:
    """A replica started in this process, a channel to it and what it was built from."""

    running: lifecycle.RunningService
    channel: grpc.Channel
    settings: InferenceSettings
    environ: dict[str, str]
    _stopped: list[bool] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.running.address

    def stop(self) -> None:
        if not self._stopped:
            self._stopped.append(True)
            self.channel.close()
            self.running.stop()


@pytest.fixture(scope="session")
def iris_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder holding `model.joblib`: a DecisionTreeClassifier fitted on iris."""
    directory = tmp_path_factory.mktemp("iris-model")
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)
    joblib.dump(model, directory / "model.joblib")
    return directory


@pytest.fixture(scope="session")
def iris_model(iris_model_dir: Path) -> Any:
    return joblib.load(iris_model_dir / "model.joblib")


def expected_labels(model: Any, rows: list[list[float]]) -> list[int]:
    """What the model itself predicts for `rows` (as float32, as the codecs decode them)."""
    return [int(label) for label in model.predict(np.array(rows, dtype=np.float32))]


def write_script(folder: Path, name: str, source: str) -> Path:
    """Writes an entry-point script into `folder` (created) and returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(source))
    return folder


def forget_user_modules(root: Path) -> None:
    """Drops modules imported from under `root`, as a fresh replica process would not have them."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).is_relative_to(root):
            del sys.modules[name]


def build_settings(model_dir: Path, code_dir: Path, entry_point: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 1.0,
        "model_dir": str(model_dir),
        "code_dir": str(code_dir),
        "entry_point": entry_point,
        "endpoint_name": "iris-endpoint",
        "model_name": "iris-model",
        "replica_id": "replica-1",
        "work_dir": str(code_dir.parent / "work"),
    }
    values.update(overrides)
    return InferenceSettings(**values)


def start_replica(
    model_dir: Path,
    code_dir: Path,
    entry_point: str,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> InProcessReplica:
    """Builds and starts a standalone replica; returns once it is SERVING.

    `environ` stands in for the process environment (the model's variables are written there).
    """
    settings = build_settings(model_dir, code_dir, entry_point, **overrides)
    settings.check()
    environ = {} if environ is None else environ
    running = lifecycle.start(app.build(settings, environ), settings)
    channel = grpc.insecure_channel(running.address)
    return InProcessReplica(running, channel, settings, environ)


StartReplica = Callable[..., InProcessReplica]


@pytest.fixture(scope="module")
def module_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartReplica]:
    """Starts replicas that live for a whole test module (stopped, and their code forgotten)."""
    started: list[InProcessReplica] = []
    root = tmp_path_factory.mktemp("replicas")
    saved_path = list(sys.path)

    def start(
        model_dir: Path,
        script: str,
        entry_point: str = "serve.py",
        environ: dict[str, str] | None = None,
        **overrides: Any,
    ) -> InProcessReplica:
        code_dir = write_script(root / f"code-{len(started)}", entry_point, script)
        replica = start_replica(model_dir, code_dir, entry_point, environ, **overrides)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()
    sys.path[:] = saved_path
    forget_user_modules(root)


@pytest.fixture
def isolated_user_code(tmp_path: Path) -> Iterator[Path]:
    """A folder for one test's user code; sys.path and user modules are restored after it."""
    saved_path = list(sys.path)
    yield tmp_path
    sys.path[:] = saved_path
    forget_user_modules(tmp_path)
