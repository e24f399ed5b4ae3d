"""The verification sample: rows on which a fast path must answer as scikit-learn does.

Rows built along the trees' own decision paths, with the split feature at each threshold and at
the float32 and float64 neighbours either side (where a runtime holding float32 thresholds, or
comparing with `<` instead of `<=`, would send a row the other way), random rows spanning every
feature's thresholds, edge values (0, +-1e38, the range's ends) and, for a model that takes NaN,
rows with NaN holes. Deterministic (fixed seeds), so a model is always verified on the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

# Decision-path nodes sampled (each gives five rows); random rows spanning the thresholds' range.
_PATH_NODES = 400
_RANGE_ROWS = 256


def _split_nodes(tree: Any, kind: str) -> list[tuple[Array, Array, Array, Array]]:
    """(left, right, feature, threshold) arrays per tree; a leaf has left == -1."""
    if kind == "hist":
        found = []
        for iteration in tree._predictors:
            for predictor in iteration:
                nodes = predictor.nodes
                left = np.where(nodes["is_leaf"].astype(bool), -1, nodes["left"].astype(np.int64))
                found.append(
                    (
                        left,
                        nodes["right"].astype(np.int64),
                        nodes["feature_idx"],
                        nodes["num_threshold"],
                    )
                )
        return found
    if kind == "tree":
        estimators = [tree]
    else:
        estimators = list(np.ravel(tree.estimators_))
    found = []
    for estimator in estimators:
        inner = estimator.tree_
        found.append((inner.children_left, inner.children_right, inner.feature, inner.threshold))
    return found


def verification_sample(tree: Any, kind: str, n_features: int, accepts_nan: bool) -> Array:
    """Rows to compare a fast path's answers with scikit-learn's on (see the module docstring).

    Args:
        tree: The fitted tree model.
        kind: `tree`, `forest`, `boosting` or `hist` (how its nodes are stored).
        n_features: Its input width.
        accepts_nan: Whether it takes NaN (rows with NaN are then added).
    """
    rng = np.random.default_rng(0)
    trees = _split_nodes(tree, kind)
    thresholds: list[list[float]] = [[] for _ in range(n_features)]
    for left, _, feature, threshold in trees:
        inner = left >= 0
        for f, t in zip(feature[inner], threshold[inner], strict=True):
            if np.isfinite(t):  # a split sending only NaN one way has an infinite threshold
                thresholds[int(f)].append(float(t))
    low = np.array([min(t) if t else 0.0 for t in thresholds])
    high = np.array([max(t) if t else 1.0 for t in thresholds])
    span = np.maximum(high - low, 1.0)
    low, high = low - 0.1 * span, high + 0.1 * span
    rows = [rng.uniform(low, high, size=(_RANGE_ROWS, n_features))]
    # Rows that follow a decision path down to a split, with the split feature at the threshold
    # and just either side of it in float32 and float64.
    picks = rng.integers(len(trees), size=_PATH_NODES)
    for pick in picks:
        row = _path_row(trees[pick], rng, low, high)
        if row is not None:
            rows.append(row)
    edges = [np.zeros(n_features), np.full(n_features, 1e38), np.full(n_features, -1e38)]
    edges += [low, high]
    rows.append(np.array(edges))
    sample = np.vstack(rows)
    if accepts_nan:
        holes = sample[rng.integers(len(sample), size=min(len(sample), 256))].copy()
        holes[rng.random(holes.shape) < 0.3] = np.nan
        sample = np.vstack([sample, holes, np.full((1, n_features), np.nan)])
    return sample


def _path_row(
    tree: tuple[Array, Array, Array, Array], rng: np.random.Generator, low: Array, high: Array
) -> Array | None:
    left, right, feature, threshold = tree
    if left[0] < 0:
        return None
    lower, upper = low.copy(), high.copy()
    node = 0
    depth = rng.integers(1, 64)
    # Walk down a random branch, narrowing each feature's interval to keep to the path.
    for _ in range(depth):
        f, t = int(feature[node]), float(threshold[node])
        goes_left = rng.random() < 0.5
        child = left[node] if goes_left else right[node]
        if left[child] < 0:
            break
        if goes_left:
            upper[f] = min(upper[f], t)
        else:
            lower[f] = max(lower[f], t)
        if not np.isfinite(t):
            lower[f], upper[f] = low[f], high[f]
        node = child
    base = rng.uniform(lower, np.maximum(upper, lower))
    f, t = int(feature[node]), float(threshold[node])
    if not np.isfinite(t):
        return None
    t32 = np.float32(t)
    values = [
        t,
        float(np.nextafter(t32, np.float32(-np.inf))),
        float(np.nextafter(t32, np.float32(np.inf))),
        float(np.nextafter(t, -np.inf)),
        float(np.nextafter(t, np.inf)),
    ]
    variants = np.repeat(base[None, :], len(values), axis=0)
    variants[:, f] = values
    return variants
