"""Fixtures of the batch tests: an iris decision tree served through real `ModelHandler`s."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from services.sagemaker.serving.handler import ModelHandler

MODEL_FN = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""

# A SageMaker-style script for JSON Lines: each line an object with the features under
# "features"; each output line a JSON number. Unique module names keep the tests' user
# modules apart from other suites'.
JSON_LINES_HANDLERS = """

import json

import numpy as np


def input_fn(body, content_type):
    text = body.decode() if isinstance(body, bytes) else body
    return np.array([json.loads(line) for line in text.split("\\n")], dtype=np.float32)


def output_fn(prediction, accept):
    body = "".join(json.dumps(value) + "\\n" for value in prediction.tolist())
    return body, "application/jsonlines"
"""


@pytest.fixture(scope="session")
def iris_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with `model.joblib` (an iris tree) and two entry-point scripts."""
    directory = tmp_path_factory.mktemp("batch-iris")
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)
    joblib.dump(model, directory / "model.joblib")
    code = directory / "code"
    code.mkdir()
    (code / "batch_iris_default.py").write_text(textwrap.dedent(MODEL_FN))
    (code / "batch_iris_jsonl.py").write_text(textwrap.dedent(MODEL_FN) + JSON_LINES_HANDLERS)
    return directory


def _load(model_dir: Path, entry_point: str) -> Iterator[ModelHandler]:
    saved_path = list(sys.path)
    try:
        yield ModelHandler.load(model_dir, entry_point=entry_point)
    finally:
        sys.path[:] = saved_path


@pytest.fixture(scope="session")
def iris_handler(iris_model_dir: Path) -> Iterator[ModelHandler]:
    """The iris tree behind SageMaker's default handlers (CSV/JSON in, CSV/JSON out)."""
    yield from _load(iris_model_dir, "batch_iris_default.py")


@pytest.fixture(scope="session")
def iris_jsonl_handler(iris_model_dir: Path) -> Iterator[ModelHandler]:
    """The iris tree behind a user's JSON Lines input_fn and output_fn."""
    yield from _load(iris_model_dir, "batch_iris_jsonl.py")


@pytest.fixture(scope="session")
def iris_rows() -> np.ndarray[Any, Any]:
    """The 150 iris rows (4 features each)."""
    return load_iris().data
