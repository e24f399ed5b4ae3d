"""A forest's trees walked directly answer large calls exactly as its `predict` does, and leave
everything but plain finite arrays to scikit-learn, whose errors and answers stay its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import ensemble
from sklearn.datasets import make_classification, make_regression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from services.sagemaker.serving import fast_path, forest_walk

Array = np.ndarray[Any, Any]


def _classification(classes: int) -> tuple[Array, Array]:
    features, target = make_classification(
        3000, 10, n_informative=6, n_classes=classes, random_state=classes
    )
    return features, target


def _unseen(rows: Array, seed: int = 5) -> Array:
    rng = np.random.default_rng(seed)
    return np.tile(rows, (3, 1)) + rng.normal(scale=0.7, size=(3 * len(rows), rows.shape[1]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ensemble.RandomForestClassifier(30, random_state=0),
        lambda: ensemble.ExtraTreesClassifier(30, random_state=0),
        lambda: ensemble.RandomForestClassifier(30, max_depth=4, random_state=0),
    ],
    ids=["random forest", "extra trees", "shallow forest (probability ties)"],
)
@pytest.mark.parametrize("classes", [2, 4])
def test_classifiers_answer_exactly_as_predict(make: Any, classes: int) -> None:
    features, target = _classification(classes)
    labels = np.array(["cat", "dog", "eel", "fox"])[target]  # string classes too
    model = make().fit(features, labels)
    walk = forest_walk.walker(model)
    for rows in (_unseen(features), _unseen(features).astype(np.float32), features[:1]):
        answers = walk(rows)
        assert answers is not None
        assert answers.dtype == model.predict(rows).dtype
        assert np.array_equal(answers, model.predict(rows))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ensemble.RandomForestRegressor(30, random_state=0),
        lambda: ensemble.ExtraTreesRegressor(30, random_state=0),
    ],
    ids=["random forest", "extra trees"],
)
def test_regressors_answer_bit_for_bit_as_predict(make: Any) -> None:
    features, target = make_regression(3000, 10, n_informative=6, random_state=1)
    model = make().fit(features, target)
    rows = _unseen(features)
    answers = forest_walk.walker(model)(rows)
    assert answers is not None
    assert answers.tobytes() == model.predict(rows).tobytes()  # not merely close


def test_anything_but_a_plain_finite_array_is_left_to_scikit_learn() -> None:
    features, target = _classification(2)
    model = ensemble.RandomForestClassifier(10, random_state=0).fit(features, target)
    walk = forest_walk.walker(model)
    predict = forest_walk.with_fallback(walk, model.predict)
    with_nan = features[:5].copy()
    with_nan[2, 3] = np.nan
    too_large = features[:5].copy()
    too_large[1, 1] = 1e300  # infinite once cast to float32, as scikit-learn casts
    frame = pd.DataFrame(features[:5])
    for rows in (with_nan, too_large, features[:5, :9], frame, features[:5].tolist()):
        assert walk(rows) is None
    # ...so scikit-learn answers them, or raises its own error.
    assert np.array_equal(predict(with_nan), model.predict(with_nan))
    assert np.array_equal(predict(frame), model.predict(frame))
    for bad in (too_large, features[:5, :9]):
        with np.errstate(over="ignore"), pytest.raises(ValueError) as walked_error:
            predict(bad)
        with np.errstate(over="ignore"), pytest.raises(ValueError) as own_error:
            model.predict(bad)
        assert str(walked_error.value) == str(own_error.value)


def test_a_forest_whose_trees_keep_class_counts_is_left_to_scikit_learn() -> None:
    """scikit-learn before 1.4.1 (the sklearn-1.2 runtime) keeps weighted class counts in each
    tree's `value` and normalises per tree; summing counts would weigh large leaves more."""
    features, target = _classification(3)
    model = ensemble.RandomForestClassifier(10, random_state=0).fit(features, target)
    assert forest_walk.walker(model)(features[:5]) is not None
    for estimator in model.estimators_:
        # Counts as scikit-learn 1.2 stores them: fractions times each node's sample weight.
        weights = estimator.tree_.weighted_n_node_samples
        estimator.tree_.value[:, 0, :] *= weights[:, np.newaxis]
    assert forest_walk.walker(model)(features[:5]) is None


def test_the_fast_path_walks_a_forests_large_calls_once_verified() -> None:
    features, target = _classification(3)
    model = ensemble.RandomForestClassifier(20, random_state=0).fit(features, target)
    predict, path = fast_path.choose(model, {})
    assert predict is not None and path.max_rows is not None, path.describe()
    assert "trees walked directly, verified equal to predict" in path.reason
    rows = _unseen(features)
    assert len(rows) > path.max_rows
    assert np.array_equal(predict(rows), model.predict(rows))
    # A pipeline's forest keeps scikit-learn's predict for large calls.
    pipeline = make_pipeline(StandardScaler(), ensemble.RandomForestClassifier(5, random_state=0))
    pipeline.fit(features, target)
    _, pipeline_path = fast_path.choose(pipeline, {})
    assert "walked" not in pipeline_path.reason
