"""The verified fast path answers as scikit-learn does, or scikit-learn keeps serving.

Parity is checked per supported model kind on rows the verification never saw, with NaN where
the model accepts it; a converter that gets the model wrong is refused, with the reason logged.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn import ensemble, tree
from sklearn.datasets import make_classification, make_regression
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from services.runtime import native_threads
from services.sagemaker.serving import fast_path
from services.sagemaker.serving.handler import ModelHandler
from services.sagemaker.serving.model_loader import ModelLoader

SERVE = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def _data(kind: str, seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    if kind == "classifier":
        return make_classification(
            1200, 8, n_informative=5, n_classes=classes, random_state=seed, shuffle=False
        )
    features, target = make_regression(1200, 8, n_informative=5, random_state=seed)
    return features, target / 100  # values of a few units


def _unseen(rows: np.ndarray, with_nan: bool) -> np.ndarray:
    rng = np.random.default_rng(7)
    fresh = rows + rng.normal(scale=0.5, size=rows.shape)
    if with_nan:
        fresh[rng.random(fresh.shape) < 0.1] = np.nan
    return fresh


MODELS = {
    "decision tree classifier": (lambda: tree.DecisionTreeClassifier(random_state=0), "c"),
    "decision tree regressor": (
        lambda: tree.DecisionTreeRegressor(max_depth=8, random_state=0),
        "r",
    ),
    "random forest classifier": (
        lambda: ensemble.RandomForestClassifier(20, random_state=0),
        "c",
    ),
    "binary random forest": (lambda: ensemble.RandomForestClassifier(20, random_state=0), "b"),
    "random forest regressor": (lambda: ensemble.RandomForestRegressor(10, random_state=0), "r"),
    "extra trees classifier": (lambda: ensemble.ExtraTreesClassifier(20, random_state=0), "c"),
    "extra trees regressor": (lambda: ensemble.ExtraTreesRegressor(10, random_state=0), "r"),
    "gradient boosting classifier": (
        lambda: ensemble.GradientBoostingClassifier(n_estimators=30, random_state=0),
        "c",
    ),
    "binary gradient boosting": (
        lambda: ensemble.GradientBoostingClassifier(n_estimators=30, random_state=0),
        "b",
    ),
    "gradient boosting regressor": (
        lambda: ensemble.GradientBoostingRegressor(n_estimators=30, random_state=0),
        "r",
    ),
    "hist gradient boosting classifier": (
        lambda: ensemble.HistGradientBoostingClassifier(max_iter=30, random_state=0),
        "c",
    ),
    "hist gradient boosting regressor": (
        lambda: ensemble.HistGradientBoostingRegressor(max_iter=30, random_state=0),
        "r",
    ),
    "scaled random forest pipeline": (
        lambda: make_pipeline(
            SimpleImputer(), StandardScaler(), ensemble.RandomForestClassifier(10, random_state=0)
        ),
        "c",
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_fast_path_answers_unseen_rows_as_scikit_learn(name: str) -> None:
    build, kind = MODELS[name]
    features, target = _data(
        "classifier" if kind in "cb" else "regressor", 0, classes=2 if kind == "b" else 3
    )
    # GradientBoosting* takes no NaN; the others learn where missing values go.
    takes_nan = "gradient boosting" not in name or "hist" in name
    if takes_nan:
        features[np.random.default_rng(3).random(features.shape) < 0.05] = np.nan
    model = build().fit(features, target)
    predict, path = fast_path.choose(model, {})
    assert path.is_fast, path.describe()
    assert predict is not None
    unseen = _unseen(features[:400], with_nan=takes_nan)
    expected = model.predict(unseen)
    got = predict(unseen)
    if kind in "cb":
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=fast_path.TOLERANCE)
    # One row at a time too: the replica's common case.
    for row in unseen[:20]:
        one = predict(row[None, :])
        if kind in "cb":
            assert one.tolist() == model.predict(row[None, :]).tolist()
        else:
            np.testing.assert_allclose(one, model.predict(row[None, :]), atol=1e-6, rtol=0)


def test_regression_values_float32_cannot_hold_stay_on_scikit_learn() -> None:
    features, target = make_regression(600, 6, random_state=0)
    model = tree.DecisionTreeRegressor(random_state=0).fit(features, target * 1000)
    predict, path = fast_path.choose(model, {})
    # ONNX Runtime answers regression in float32 and Treelite does not take single trees.
    assert predict is None
    assert path.name == fast_path.SCIKIT_LEARN
    assert path.refused
    assert "values differ from scikit-learn's" in path.reason


def _off_by_one(scorer: Any) -> Any:
    def convert(*args: Any) -> Any:
        score = scorer(*args)
        return lambda rows: score(rows) + 1.0

    return convert


def test_a_converter_that_gets_the_model_wrong_is_refused_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fast_path, "_onnx_scorer", _off_by_one(fast_path._onnx_scorer))
    monkeypatch.setattr(fast_path, "_treelite_scorer", _off_by_one(fast_path._treelite_scorer))
    features, target = _data("regressor", 1)
    model = ensemble.RandomForestRegressor(5, random_state=0).fit(features, target)
    model_dir, code_dir = tmp_path / "model", tmp_path / "code"
    model_dir.mkdir()
    code_dir.mkdir()
    joblib.dump(model, model_dir / "model.joblib")
    (code_dir / "serve_wrong.py").write_text(SERVE)
    loader = ModelLoader(tmp_path / "work", tmp_path / "deps", {})
    with caplog.at_level(logging.INFO, logger="services.sagemaker.serving.model_loader"):
        loaded = loader.load_local(model_dir, code_dir, "serve_wrong.py")
    assert loaded.predict_path.name == fast_path.SCIKIT_LEARN
    assert (
        "treelite-gtil: values differ from scikit-learn's by up to 1" in loaded.predict_path.reason
    )
    assert "predict path scikit-learn: treelite-gtil: values differ" in caplog.text
    rows = features[:5]
    body, _ = loaded.handler.invoke(
        "\n".join(",".join(map(str, row)) for row in rows), "text/csv", "application/json"
    )
    np.testing.assert_allclose(
        np.array(eval(body)), model.predict(rows.astype(np.float32)), atol=1e-9
    )


def test_switched_off_by_the_environment() -> None:
    features, target = _data("classifier", 0)
    model = ensemble.RandomForestClassifier(5, random_state=0).fit(features, target)
    predict, path = fast_path.choose(model, {"SKMAKER_FAST_PATH": "0"})
    assert predict is None
    assert path.name == fast_path.SCIKIT_LEARN
    assert not path.refused  # switched off, not refused: nothing for the endpoint's events
    assert "SKMAKER_FAST_PATH" in path.reason


def test_a_users_predict_fn_is_never_replaced() -> None:
    features, target = _data("classifier", 0)
    model = ensemble.RandomForestClassifier(5, random_state=0).fit(features, target)
    handler = ModelHandler(model, predict_fn=lambda data, m: m.predict_proba(data))
    served, path = fast_path.apply(handler, {})
    assert served is handler
    assert path.name == fast_path.USER_HANDLER
    assert not path.refused


def test_unsupported_models_and_steps_keep_scikit_learn() -> None:
    features, target = _data("classifier", 0)
    from sklearn.linear_model import LogisticRegression

    linear = LogisticRegression().fit(features, target)
    assert fast_path.choose(linear, {})[1].reason.startswith("LogisticRegression is not")
    custom = make_pipeline(
        FunctionTransformer(np.abs), ensemble.RandomForestClassifier(5, random_state=0)
    ).fit(features, target)
    _, path = fast_path.choose(custom, {})
    assert path.name == fast_path.SCIKIT_LEARN
    assert not path.refused
    assert "FunctionTransformer" in path.reason


def test_input_scikit_learn_would_refuse_gets_scikit_learns_error() -> None:
    features, target = _data("classifier", 0)
    model = ensemble.GradientBoostingClassifier(n_estimators=5, random_state=0)
    model.fit(features, target)
    predict, path = fast_path.choose(model, {})
    assert predict is not None, path.describe()
    rows = features[:2].copy()
    rows[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        predict(rows)
    rows[0, 0] = np.nan  # this model takes no NaN
    with pytest.raises(ValueError, match="NaN"):
        predict(rows)


def test_calls_larger_than_the_measured_ones_go_to_scikit_learn() -> None:
    # The fast path's speed is measured on the verification sample only; a batch worker's
    # mini-batch of tens of thousands of rows was slower on it than in scikit-learn.
    # (A random forest's large calls walk its trees instead: test_inference_forest_walk.)
    features, target = _data("classifier", 0)
    model = ensemble.GradientBoostingClassifier(n_estimators=20, random_state=0)
    model.fit(features, target)
    seen: list[int] = []
    original = model.predict

    def counting_predict(rows: Any) -> Any:
        seen.append(len(rows))
        return original(rows)

    model.predict = counting_predict  # the fallback the fast predictor calls
    predict, path = fast_path.choose(model, {})
    assert predict is not None and path.is_fast, path.describe()
    assert path.max_rows is not None
    seen.clear()  # the timings at load called it
    predict(features[:1])
    assert seen == []  # served by the fast path
    big = np.tile(features, (path.max_rows // len(features) + 2, 1))[: path.max_rows + 1]
    np.testing.assert_array_equal(predict(big), original(big))
    assert seen == [path.max_rows + 1]


@pytest.fixture
def two_cores_for_this_call() -> Any:
    # What a batch worker scoring one mini-batch at a time on two cores sets.
    native_threads.set_call_threads(2)
    yield
    native_threads.set_call_threads(1)


@pytest.mark.usefixtures("two_cores_for_this_call")
def test_a_large_call_is_split_over_the_calls_cores_in_order() -> None:
    threads: list[str] = []

    def first_column(rows: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return rows[:, 0].copy()

    rows = np.arange(6 * fast_path.SPLIT_MIN_ROWS, dtype=np.float64).reshape(-1, 2)
    answers = fast_path.split_over_threads(first_column)(rows)
    assert answers.tolist() == rows[:, 0].tolist()
    assert len(threads) == 2
    assert threading.current_thread().name in threads
    assert any(name.startswith("predict-part") for name in threads)
    threads.clear()
    fast_path.split_over_threads(first_column)(rows[: fast_path.SPLIT_MIN_ROWS])
    assert len(threads) == 1  # too small to be worth a second thread


@pytest.mark.usefixtures("two_cores_for_this_call")
def test_a_split_call_answers_and_fails_as_scikit_learn() -> None:
    features, target = _data("classifier", 3)
    model = ensemble.RandomForestClassifier(20, random_state=0).fit(features, target)
    predict, path = fast_path.choose(model, {})
    assert predict is not None and path.max_rows is not None
    rows = _unseen(np.tile(features, (8, 1)), with_nan=False)
    assert len(rows) > max(path.max_rows, 2 * fast_path.SPLIT_MIN_ROWS)
    assert predict(rows).tolist() == model.predict(rows).tolist()
    boosting = ensemble.GradientBoostingClassifier(n_estimators=5, random_state=0)
    boosting.fit(features, target)
    predict, _ = fast_path.choose(boosting, {})
    assert predict is not None
    rows[-1, 0] = np.nan  # GradientBoosting takes no NaN: the error of the whole call
    with pytest.raises(ValueError) as split_error:
        predict(rows)
    with pytest.raises(ValueError) as own_error:
        boosting.predict(rows)
    assert str(split_error.value) == str(own_error.value)
