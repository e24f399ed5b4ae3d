"""A random or extra trees forest's predict for large calls, as scikit-learn computes it, cheaper.

For a batch worker's 30,000-row mini-batches scikit-learn's own arithmetic is the cheapest per row
(ONNX Runtime and Treelite's interpreter cost 3-12x more), but `RandomForestClassifier.predict`
spends some of its time around the tree walks (measured 4-12% of its CPU on 31,000-row calls of
a 100-tree forest, ~5% typically): per tree a joblib task, input checks, a clipped `take` of a
3-D array and a reshape. `walker(model)` does the same arithmetic without them: each
tree's compiled `apply` (its walk, the GIL released) gives the leaves, their values are added in
the trees' order to a float64 sum that starts at zero, which is then divided by the number of
trees — what scikit-learn does with `n_jobs=1`. Classes are the argmax taken from the classes,
regression values the mean; single-output models only.

It takes only the plain case (a 2-D numeric array of the model's width whose values are finite as
float32, the dtype scikit-learn casts to) and returns None for anything else, which then goes to
scikit-learn, so errors and warnings stay scikit-learn's own. `fast_path` uses it only after it
answered the verification sample exactly as `predict` did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def walker(model: Any) -> Callable[[Any], Array | None]:
    """The forest's `predict` for plain arrays (see the module docstring); None for the rest.

    Args:
        model: A fitted single-output RandomForest or ExtraTrees classifier or regressor.
    """
    trees = [estimator.tree_ for estimator in model.estimators_]
    # Each tree's leaf values as `tree_.predict` takes them: (nodes, classes), or (nodes,).
    values = [np.ascontiguousarray(tree.value[:, 0, :]) for tree in trees]
    classes = getattr(model, "classes_", None)
    if classes is None:
        values = [np.ascontiguousarray(value[:, 0]) for value in values]
    elif not all(_holds_fractions(value) for value in values):
        # scikit-learn before 1.4.1 keeps weighted class counts in `tree_.value` and divides by
        # their sum in each tree's predict_proba; summing counts would weigh large leaves more
        # (another argmax on some rows), so those forests keep scikit-learn's predict.
        return _declines
    n_features = int(model.n_features_in_)
    count = len(trees)

    def predict(rows: Any) -> Array | None:
        if type(rows) is not np.ndarray or rows.ndim != 2 or rows.dtype.kind not in "fiub":
            return None
        if rows.shape[0] == 0 or rows.shape[1] != n_features:
            return None
        with np.errstate(over="ignore"):
            cast = np.asarray(rows, dtype=np.float32)
        if not np.isfinite(cast).all():
            return None
        total = np.zeros((len(cast), *values[0].shape[1:]), dtype=np.float64)
        for tree, value in zip(trees, values, strict=True):
            total += value.take(tree.apply(cast), axis=0)
        total /= count
        if classes is None:
            return total
        labels: Array = classes.take(np.argmax(total, axis=1), axis=0)
        return labels

    return predict


def _holds_fractions(value: Array) -> bool:
    """True when every node's class values sum to 1 (scikit-learn >= 1.4.1), not to counts."""
    sums = value.sum(axis=1)
    return bool(np.allclose(sums[sums > 0], 1.0, rtol=0.0, atol=1e-6))


def _declines(rows: Any) -> Array | None:
    return None


def with_fallback(
    walk: Callable[[Any], Array | None], predict: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    """`walk(rows)`, or `predict(rows)` when the walk does not take them."""

    def walked(rows: Any) -> Any:
        answer = walk(rows)
        return predict(rows) if answer is None else answer

    return walked
