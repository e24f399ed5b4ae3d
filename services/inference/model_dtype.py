"""The V2 input datatype a fitted scikit-learn model was trained on, as far as the model tells.

scikit-learn does not record the dtype of the data `fit` saw, but a fitted model often shows
it, and this reads only what it shows:

1. Per-feature parameters. Most estimators keep float32 data as float32 and store what they
   learned per feature in that dtype (`coef_`, `cluster_centers_`, `components_`, `theta_`,
   `data_min_`, ...: a public fitted float array whose last axis has `n_features_in_` entries;
   a nearest-neighbours model keeps its training rows, `_fit_X`). A float32 array gives FP32, a
   float64 one FP64. Some estimators compute in float64 whatever they got (StandardScaler,
   SVC): they show FP64, which is what they compute with.
2. scikit-learn's decision trees (and the forests and gradient boosting built of them)
   compare features as float32 whatever the training data was: FP32.
3. Anything else (a model without such parameters, a `ColumnTransformer` or `FeatureUnion`
   in front, an object that is not a scikit-learn estimator): nothing is known, and FP64 is
   reported, the float type scikit-learn's input validation converts non-float data to.

A Pipeline (or a fitted search's `best_estimator_`) is read through the step that sees the
input first. ModelInfer accepts FP32, FP64, INT32 and INT64 whatever this says.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FP32 = "FP32"
FP64 = "FP64"
# What nothing known is reported as (see the module docstring, rule 3).
UNKNOWN_DEFAULT = FP64

_V2_FLOAT_TYPES = {np.dtype(np.float32): FP32, np.dtype(np.float64): FP64}


def training_datatype(model: Any) -> str | None:
    """The V2 datatype `model` shows it was trained on (rules 1-2), or None when it does not."""
    first = _first_consumer(model)
    if first is None:
        return None
    shown = _per_feature_dtype(first)
    if shown is not None:
        return _V2_FLOAT_TYPES.get(shown)
    if _is_tree_model(first):
        return FP32
    return None


def input_datatype(model: Any) -> str:
    """What V2 ModelMetadata advertises for the input: `training_datatype`, else FP64."""
    return training_datatype(model) or UNKNOWN_DEFAULT


def _first_consumer(model: Any, depth: int = 0) -> Any:
    """The estimator that receives the raw input; None when several do (or nesting is absurd)."""
    if depth > 16:
        return None
    best = getattr(model, "best_estimator_", None)
    if best is not None:
        return _first_consumer(best, depth + 1)
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        for _name, step in steps:
            if step is not None and step != "passthrough":
                return _first_consumer(step, depth + 1)
        return None
    if hasattr(model, "transformers_") or hasattr(model, "transformer_list"):
        return None  # ColumnTransformer / FeatureUnion: each part sees its own columns
    return model


def _per_feature_dtype(estimator: Any) -> np.dtype[Any] | None:
    width = getattr(estimator, "n_features_in_", None)
    if not isinstance(width, (int, np.integer)) or isinstance(width, bool):
        return None
    try:
        attributes = vars(estimator)
    except TypeError:
        return None
    found: set[np.dtype[Any]] = set()
    for name, value in attributes.items():
        fitted = (name.endswith("_") and not name.startswith("_")) or name == "_fit_X"
        if (
            fitted
            and isinstance(value, np.ndarray)
            and value.dtype.kind == "f"
            and value.ndim >= 1
            and value.shape[-1] == width
        ):
            found.add(value.dtype)
    if len(found) == 1:
        return found.pop()
    # Mixed: a float64 parameter beside float32 ones means the estimator computes in float64
    # for part of its work; the float32 ones show what it was given.
    return np.dtype(np.float32) if np.dtype(np.float32) in found else None


def _is_tree_model(estimator: Any) -> bool:
    try:
        from sklearn.tree import BaseDecisionTree
    except ImportError:  # the model was not built with scikit-learn's trees
        return False
    if isinstance(estimator, BaseDecisionTree):
        return True
    members = getattr(estimator, "estimators_", None)
    if members is None:
        return False
    flat = np.asarray(members, dtype=object).ravel()
    return flat.size > 0 and all(isinstance(member, BaseDecisionTree) for member in flat)
