"""V2 ModelMetadata's input datatype: the one the fitted model shows it was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from services.inference.convert import model_metadata
from services.inference.model_dtype import input_datatype, training_datatype

X, Y = load_iris(return_X_y=True)


def _fit(model: Any, dtype: type[np.generic]) -> Any:
    return model.fit(X.astype(dtype), Y)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(max_iter=500),
        lambda: KNeighborsClassifier(),
        lambda: make_pipeline(MinMaxScaler(), SVC()),
        lambda: GridSearchCV(LogisticRegression(max_iter=500), {"C": [1.0]}, cv=2),
    ],
    ids=["linear", "neighbours", "pipeline", "search"],
)
def test_a_model_that_keeps_its_training_dtype_says_it(make: Any) -> None:
    assert training_datatype(_fit(make(), np.float64)) == "FP64"
    assert training_datatype(_fit(make(), np.float32)) == "FP32"


def test_trees_compare_as_float32_whatever_they_were_trained_on() -> None:
    assert training_datatype(_fit(DecisionTreeClassifier(), np.float64)) == "FP32"
    forest = _fit(RandomForestClassifier(n_estimators=3), np.float64)
    assert training_datatype(forest) == "FP32"


def test_float64_computing_models_say_fp64() -> None:
    # SVC keeps its support vectors in float64 even from float32 data: it computes in float64.
    assert training_datatype(_fit(SVC(), np.float32)) == "FP64"


def test_nothing_known_is_advertised_as_fp64() -> None:
    hist = _fit(HistGradientBoostingClassifier(max_iter=3), np.float32)
    columns = ColumnTransformer([("all", MinMaxScaler(), [0, 1, 2, 3])])
    mixed = _fit(make_pipeline(columns, LogisticRegression(max_iter=500)), np.float32)
    for model in (hist, mixed, object()):
        assert training_datatype(model) is None
        assert input_datatype(model) == "FP64"


def test_model_metadata_carries_the_datatype() -> None:
    answer = model_metadata(
        "m", 4, "i", input_datatype(_fit(LogisticRegression(max_iter=500), np.float64))
    )
    assert (answer.inputs[0].datatype, list(answer.inputs[0].shape)) == ("FP64", [-1, 4])
