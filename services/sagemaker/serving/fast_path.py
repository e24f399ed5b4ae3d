"""The verified fast path: tree models predicted by a compiled runtime, only once it proved itself.

`choose(model, environ)` runs at model load, for handlers whose predict step is the model's own
`predict` (a user's `predict_fn` is never replaced). A supported tree model — decision tree,
random forest, extra trees, gradient boosting, histogram gradient boosting, classifier or
regressor, alone or at the end of a `Pipeline` whose earlier steps are scikit-learn
preprocessing — is converted by each candidate runtime in turn:

* ONNX Runtime (skl2onnx converts): fastest for one row (~10 µs for a 100-tree forest, where
  scikit-learn's `predict` takes milliseconds); its regression outputs are float32, so it is
  tried first for classifiers (whose probabilities are compared, and the labels taken from them).
* Treelite's interpreter (GTIL): exact float64 arithmetic, so tried first for regressors;
  slower than ONNX Runtime per row, and slower than scikit-learn on large batches.

TL2cgen (compiled C) is not used: compiling a 100-tree forest took minutes, and it needs a C
compiler the service image does not have.

A candidate serves only after it answered a verification sample like scikit-learn: rows built
along the trees' own decision paths with the split feature at each threshold and at the float32
and float64 neighbours either side, rows spanning the thresholds' range, edge values and NaN
where the model accepts it. Labels must be equal, probabilities and regression values within
`TOLERANCE`. Then both paths are timed on one row and on the sample; calls with more rows than
where scikit-learn becomes faster go to scikit-learn (`PredictPath.max_rows`), split by rows
over the cores the calling thread may use (a batch worker's mini-batches; not a replica's
calls); for a random or extra trees forest, its trees walked directly (`forest_walk`: the same
arithmetic as its `predict`, ~5% cheaper), once that answered the sample exactly as
`predict`. Preprocessing in a pipeline always runs in scikit-learn (so it is exact); only the
tree is replaced.

At serving time the fast predictor takes only a plain 2-D numeric array of the model's width
with finite values (NaN too when verified); anything else goes to scikit-learn, so errors and
warnings are scikit-learn's own. `SKMAKER_FAST_PATH=0` in the environment turns it off.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from services.runtime import native_threads
from services.sagemaker.serving import forest_walk
from services.sagemaker.serving.handler import ModelHandler
from services.sagemaker.serving.verification_sample import verification_sample

log = logging.getLogger(__name__)

FAST_PATH_VARIABLE = "SKMAKER_FAST_PATH"
SCIKIT_LEARN = "scikit-learn"
ONNXRUNTIME = "onnxruntime"
TREELITE = "treelite-gtil"
USER_HANDLER = "user-handler"  # the user's own predict_fn or transform_fn serves
PATHS = (SCIKIT_LEARN, ONNXRUNTIME, TREELITE, USER_HANDLER)
# The libraries each backend imports; a runtime without them serves through scikit-learn.
_LIBRARIES = {ONNXRUNTIME: ("onnxruntime", "skl2onnx"), TREELITE: ("treelite",)}
# Largest difference accepted between a fast path's and scikit-learn's probability or value.
TOLERANCE = 1e-6
# A call goes to scikit-learn split over threads only in parts of at least this many rows.
SPLIT_MIN_ROWS = 2048
# Runtimes that send NaN down the same branch as scikit-learn (verified on NaN rows).
_NAN_BACKENDS = frozenset({TREELITE})

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class PredictPath:
    """Which path serves a model's predict step, and why.

    Attributes:
        name: `scikit-learn`, `onnxruntime`, `treelite-gtil` or `user-handler`.
        reason: What was verified, or why scikit-learn serves.
        max_rows: Calls with more rows go to scikit-learn (faster there); None: no limit.
        refused: Every runtime tried was refused (its answers differed from scikit-learn's,
            it failed to convert, or it was not faster), so scikit-learn serves.
    """

    name: str
    reason: str
    max_rows: int | None = None
    refused: bool = False

    @property
    def is_fast(self) -> bool:
        """Whether a compiled runtime serves (some calls, at least)."""
        return self.name != SCIKIT_LEARN

    def describe(self) -> str:
        """One line for the log and the endpoint's events."""
        limit = "" if self.max_rows is None else f" for calls up to {self.max_rows} rows"
        return f"predict path {self.name}{limit}: {self.reason}"


def enabled(environ: Mapping[str, str]) -> bool:
    """False when `SKMAKER_FAST_PATH` is 0/false/off/no."""
    value = environ.get(FAST_PATH_VARIABLE, "").strip().lower()
    return value not in {"0", "false", "off", "no"}


def choose(
    model: Any, environ: Mapping[str, str]
) -> tuple[Callable[[Any], Any] | None, PredictPath]:
    """Converts and verifies `model` for a fast path, or says why scikit-learn keeps serving.

    Args:
        model: What `model_fn` returned, predicted by its own `predict`.
        environ: The environment (the model's applied); `SKMAKER_FAST_PATH=0` turns it off.

    Returns:
        A replacement for `model.predict` (None when scikit-learn serves) and the path chosen.
        Never raises: any failure keeps scikit-learn, with the failure as the reason.
    """
    if not enabled(environ):
        return None, PredictPath(SCIKIT_LEARN, f"turned off by {FAST_PATH_VARIABLE}")
    try:
        target = _Target.of(model)
    except _Unsupported as err:
        return None, PredictPath(SCIKIT_LEARN, str(err))
    except Exception as err:  # a model this module misreads keeps scikit-learn, never fails
        log.exception("fast path: cannot read the model")
        return None, PredictPath(SCIKIT_LEARN, f"cannot read the model: {err}")
    refusals = []
    for backend in target.backends():
        missing = [name for name in _LIBRARIES[backend] if importlib.util.find_spec(name) is None]
        if missing:  # an older script runtime (sklearn-1.2) has no fast path libraries
            refusals.append(f"{backend}: this script runtime lacks {', '.join(missing)}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fast = target.convert(backend)
                problem = target.verify(fast, backend)
                if problem is None:
                    max_rows, timing = target.crossover(fast, backend)
        except Exception as err:
            problem = f"conversion failed: {type(err).__name__}: {str(err)[:200]}"
        if problem is not None:
            refusals.append(f"{backend}: {problem}")
            continue
        if max_rows == 0:
            refusals.append(f"{backend}: verified but not faster ({timing})")
            continue
        rows = len(target.sample_for(backend))
        verified = f"verified on {rows} rows against scikit-learn ({timing})"
        if target.accepts_nan and backend not in _NAN_BACKENDS:
            verified += "; rows with NaN go to scikit-learn"
        verified += target.check_walk()
        return target.predictor(fast, max_rows, backend), PredictPath(backend, verified, max_rows)
    return None, PredictPath(SCIKIT_LEARN, "; ".join(refusals), refused=True)


def apply(handler: ModelHandler, environ: Mapping[str, str]) -> tuple[ModelHandler, PredictPath]:
    """The handler with its predict step on a verified fast path, when one applies.

    Only a handler whose predict step is the model's own `predict` is considered; a user's
    predict_fn or transform_fn is kept as it is.

    Returns:
        The handler to serve (this one when scikit-learn keeps serving) and the path chosen.
    """
    if not handler.uses_default_predict:
        return handler, PredictPath(USER_HANDLER, "the model's own predict_fn or transform_fn")
    fast, path = choose(handler.model, environ)
    if fast is None:
        return handler, path
    return handler.with_predict_core(fast), path


class _Unsupported(Exception):
    """The model is not one the fast path converts; the message says why."""


def _tree_types() -> dict[type, str]:
    from sklearn import ensemble, tree

    return {
        tree.DecisionTreeClassifier: "tree",
        tree.DecisionTreeRegressor: "tree",
        tree.ExtraTreeClassifier: "tree",
        tree.ExtraTreeRegressor: "tree",
        ensemble.RandomForestClassifier: "forest",
        ensemble.RandomForestRegressor: "forest",
        ensemble.ExtraTreesClassifier: "forest",
        ensemble.ExtraTreesRegressor: "forest",
        ensemble.GradientBoostingClassifier: "boosting",
        ensemble.GradientBoostingRegressor: "boosting",
        ensemble.HistGradientBoostingClassifier: "hist",
        ensemble.HistGradientBoostingRegressor: "hist",
    }


def _preprocessing_ok(step: Any) -> bool:
    # scikit-learn's own fitted transformers run unchanged in front of the fast tree; a user's
    # FunctionTransformer could do anything, so a pipeline holding one is left alone.
    module = type(step).__module__
    return (
        module.startswith(("sklearn.preprocessing", "sklearn.impute", "sklearn.compose"))
        and type(step).__name__ != "FunctionTransformer"
    ) or step == "passthrough"


class _Target:
    """The tree to convert, what runs before it, and its verification sample."""

    def __init__(self, model: Any, prefix: Any, tree: Any, kind: str) -> None:
        self.model = model
        self.prefix = prefix  # a Pipeline of the preprocessing steps, or None
        self.tree = tree
        self.kind = kind
        self.is_classifier = hasattr(tree, "classes_")
        self.n_features = int(tree.n_features_in_)
        # Histogram gradient boosting compares float64 values; every other tree casts its input
        # to float32 first, so the fast path must see the same float32 values.
        self.dtype = np.float64 if kind == "hist" else np.float32
        self.accepts_nan = _accepts_nan(tree, self.n_features)
        self.sample = verification_sample(tree, kind, self.n_features, self.accepts_nan)
        # A forest's large calls: its trees walked directly, once `check_walk` passed.
        self.walk: Callable[[Any], Array | None] | None = None

    @classmethod
    def of(cls, model: Any) -> _Target:
        from sklearn.pipeline import Pipeline

        prefix = None
        tree = model
        if type(model) is Pipeline:
            steps = [step for _, step in model.steps]
            if not all(_preprocessing_ok(step) for step in steps[:-1]):
                names = ", ".join(type(s).__name__ for s in steps[:-1] if not _preprocessing_ok(s))
                raise _Unsupported(f"pipeline step {names} is not scikit-learn preprocessing")
            tree = steps[-1]
            prefix = model[:-1] if len(steps) > 1 else None
        kind = _tree_types().get(type(tree))
        if kind is None:
            raise _Unsupported(f"{type(tree).__name__} is not a tree model the fast path converts")
        if getattr(tree, "n_outputs_", 1) != 1:
            raise _Unsupported("multi-output trees are not converted")
        classes = getattr(tree, "classes_", None)
        if classes is not None and np.ndim(classes) != 1:
            raise _Unsupported("multi-output classifiers are not converted")
        if not isinstance(getattr(tree, "n_features_in_", None), int):
            raise _Unsupported("the model does not say its number of features")
        return cls(model, prefix, tree, kind)

    def backends(self) -> tuple[str, ...]:
        if self.kind == "tree":
            return (ONNXRUNTIME,)  # Treelite does not import single trees
        if self.is_classifier:
            return (ONNXRUNTIME, TREELITE)
        return (TREELITE, ONNXRUNTIME)

    def convert(self, backend: str) -> Callable[[Array], Array]:
        """Scores rows (already of `self.dtype`, as float64 or float32 arrays) with `backend`.

        Returns a function giving probabilities (n, classes) for a classifier, values (n,) for
        a regressor.
        """
        if backend == ONNXRUNTIME:
            return _onnx_scorer(self.tree, self.n_features, self.is_classifier)
        return _treelite_scorer(self.tree, self.is_classifier)

    def reference(self, rows: Array) -> Array:
        tree = self.tree
        return cast(
            np.ndarray, tree.predict_proba(rows) if self.is_classifier else tree.predict(rows)
        )

    def sample_for(self, backend: str) -> Array:
        """The verification rows; without NaN for a runtime that does not route NaN as
        scikit-learn does (ONNX Runtime: rows with NaN are then served by scikit-learn)."""
        if backend in _NAN_BACKENDS or not self.accepts_nan:
            return self.sample
        return self.sample[~np.isnan(self.sample).any(axis=1)]

    def verify(self, fast: Callable[[Array], Array], backend: str) -> str | None:
        """None when `fast` answers the sample as scikit-learn does; else what differs."""
        rows = self.sample_for(backend)
        expected = self.reference(rows)
        got = fast(rows.astype(self.dtype).astype(np.float64))
        if got.shape != expected.shape:
            return f"answers of shape {got.shape}, scikit-learn {expected.shape}"
        if self.is_classifier:
            labels = self.tree.classes_.take(np.argmax(got, axis=1))
            differ = np.flatnonzero(labels != self.tree.predict(rows))
            if differ.size:
                return f"{differ.size} of {len(rows)} labels differ from scikit-learn's"
        with np.errstate(invalid="ignore"):
            gap = np.abs(got - expected)
        worst = float(np.nanmax(gap)) if gap.size else 0.0
        if not np.array_equal(np.isnan(got), np.isnan(expected)) or worst > TOLERANCE:
            what = "probabilities" if self.is_classifier else "values"
            return f"{what} differ from scikit-learn's by up to {worst:.3g} (> {TOLERANCE:g})"
        if self.prefix is not None:
            return self._verify_pipeline(fast, backend)
        return None

    def _verify_pipeline(self, fast: Callable[[Array], Array], backend: str) -> str | None:
        rng = np.random.default_rng(1)
        width = int(self.model.n_features_in_)
        rows = rng.normal(size=(64, width)) * rng.choice([0.1, 1, 100], size=(64, 1))
        predict = self.predictor(fast, None, backend)
        if not np.array_equal(predict(rows), self.model.predict(rows)):
            return "the pipeline's answers differ from scikit-learn's"
        return None

    def crossover(self, fast: Callable[[Array], Array], backend: str) -> tuple[int | None, str]:
        """Calls up to how many rows the fast path wins (0: never), and timings.

        Times one row and the whole sample on both paths (best of five). Faster on both: up
        to the sample's size. Otherwise a straight line cost = fixed + rows x per-row fitted to
        each gives the row count where they cross.
        """
        big = self.sample_for(backend).astype(self.dtype)
        one = big[:1]
        fast_big = big.astype(np.float64)
        reference = self.tree.predict
        t_sk1, t_skn = _best_time(reference, one), _best_time(reference, big)
        t_f1, t_fn = _best_time(fast, fast_big[:1]), _best_time(fast, fast_big)
        n = len(big)
        timing = (
            f"one row {t_f1 * 1e6:.0f} µs vs {t_sk1 * 1e6:.0f} µs, "
            f"{n} rows {t_fn * 1e3:.1f} ms vs {t_skn * 1e3:.1f} ms in scikit-learn"
        )
        if t_f1 >= t_sk1:
            return 0, timing
        if t_fn <= t_skn:
            # Faster on every size measured, but not trusted beyond: ONNX Runtime's cost per
            # row levels off where scikit-learn's keeps falling (a 100-tree forest, one core:
            # 1.7x faster at 1,024 rows, 0.74x at 30,000), so larger calls go to scikit-learn.
            return n, timing
        per_row_fast = (t_fn - t_f1) / (n - 1)
        per_row_sk = (t_skn - t_sk1) / (n - 1)
        rows = 1 + (t_sk1 - t_f1) / max(per_row_fast - per_row_sk, 1e-12)
        return max(1, int(rows)), timing

    def check_walk(self) -> str:
        """Sets `walk` for a forest (alone) that `forest_walk` answers exactly as `predict`
        on the sample's finite rows; returns what to add to the path's reason."""
        if self.kind != "forest" or self.prefix is not None:
            return ""
        with warnings.catch_warnings(), np.errstate(over="ignore"):
            warnings.simplefilter("ignore")  # sums of the sample's edge values overflow
            rows = self.sample[np.isfinite(self.sample.astype(np.float32)).all(axis=1)]
            try:
                walk = forest_walk.walker(self.tree)
                walked = walk(rows)
                equal = walked is not None and np.array_equal(walked, self.tree.predict(rows))
            except Exception as err:  # a forest this module misreads keeps predict
                log.warning("fast path: cannot walk the forest's trees: %s", err)
                equal = False
        if not equal:
            return "; larger calls: scikit-learn's predict (its trees walked directly differ)"
        self.walk = walk
        return "; larger calls: the forest's trees walked directly, verified equal to predict"

    def predictor(
        self, fast: Callable[[Array], Array], max_rows: int | None, backend: str
    ) -> Callable[[Any], Any]:
        """The replacement for `model.predict`: the fast path where it applies, else sklearn
        (a large call split over the calling thread's cores, `split_over_threads`)."""
        # Histogram gradient boosting parallelises its own predict (OpenMP); the others walk
        # their trees on one thread.
        model_predict = self.model.predict
        if self.walk is not None:
            model_predict = forest_walk.with_fallback(self.walk, model_predict)
        if self.kind != "hist":
            model_predict = split_over_threads(model_predict)
        prefix_transform = None if self.prefix is None else self.prefix.transform
        tree_predict = self.tree.predict
        n_features = self.n_features
        dtype = self.dtype
        accepts_nan = self.accepts_nan and backend in _NAN_BACKENDS
        classes = self.tree.classes_ if self.is_classifier else None
        limit = max_rows if max_rows is not None else np.iinfo(np.int64).max
        width = int(self.model.n_features_in_)

        def scores(rows: Any) -> Array | None:
            # Only the plain case; scikit-learn answers (or refuses) everything else itself.
            if type(rows) is not np.ndarray or rows.ndim != 2 or rows.dtype.kind not in "fiub":
                return None
            if not 0 < rows.shape[0] <= limit:
                return None
            if prefix_transform is not None:
                if rows.shape[1] != width:
                    return None
                rows = prefix_transform(rows)
                if type(rows) is not np.ndarray or rows.ndim != 2:
                    return None
            if rows.shape[1] != n_features:
                return None
            cast = np.asarray(rows, dtype=dtype)
            if not np.isfinite(cast).all():
                # scikit-learn refuses infinity (and values past float32's range, inf once
                # cast); NaN only where the model was verified with it.
                if not accepts_nan or np.isinf(cast).any():
                    return None
            return fast(cast.astype(np.float64, copy=False))

        if classes is not None:

            def predict(rows: Any) -> Any:
                proba = scores(rows)
                if proba is None:
                    return model_predict(rows)
                return classes.take(np.argmax(proba, axis=1))

        else:

            def predict(rows: Any) -> Any:
                values = scores(rows)
                if values is None:
                    return model_predict(rows)
                return values

        predict.__doc__ = f"model.predict, on a verified fast path ({tree_predict.__qualname__})"
        return predict


def split_over_threads(predict: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`predict` with a large array split by rows over the calling thread's core budget.

    The budget is `native_threads.call_threads()`: a batch worker scoring one mini-batch at a
    time gives it every core, a replica's RPC threads 1 (no split). Tree walks release the GIL,
    so the parts run in parallel; every row is predicted exactly as in one call, and the parts'
    answers are joined in order. Should a part fail, the whole call is made again unsplit, so
    any error is scikit-learn's own for the call.
    """

    def predict_split(rows: Any) -> Any:
        threads = native_threads.call_threads()
        if threads < 2 or type(rows) is not np.ndarray or rows.ndim != 2:
            return predict(rows)
        parts = min(threads, rows.shape[0] // SPLIT_MIN_ROWS)
        if parts < 2:
            return predict(rows)
        chunks = np.array_split(rows, parts)
        pool = _split_pool()
        futures = [pool.submit(predict, chunk) for chunk in chunks[1:]]
        try:
            first = predict(chunks[0])
            answers = [first, *(future.result() for future in futures)]
        except Exception:
            for future in futures:
                future.cancel()
            return predict(rows)
        return np.concatenate(answers)

    return predict_split


_SPLIT_POOL: list[ThreadPoolExecutor] = []
_SPLIT_POOL_LOCK = threading.Lock()


def _split_pool() -> ThreadPoolExecutor:
    with _SPLIT_POOL_LOCK:
        if not _SPLIT_POOL:
            workers = max(1, native_threads.available_cpus() - 1)
            _SPLIT_POOL.append(ThreadPoolExecutor(workers, thread_name_prefix="predict-part"))
        return _SPLIT_POOL[0]


def _best_time(function: Callable[[Array], Any], rows: Array) -> float:
    function(rows)
    best = float("inf")
    for _ in range(5):  # best of five: a busy machine only ever adds time
        started = time.perf_counter()
        function(rows)
        best = min(best, time.perf_counter() - started)
    return best


def _accepts_nan(tree: Any, n_features: int) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree.predict(np.full((1, n_features), np.nan))
    except ValueError:
        return False
    return True


def _onnx_scorer(tree: Any, n_features: int, is_classifier: bool) -> Callable[[Array], Array]:
    import onnxruntime
    from skl2onnx import to_onnx

    # float32 rows: ONNX Runtime's tree operators answer float32 only, and these trees cast
    # their input to float32 in scikit-learn too.
    dtype = np.float32
    tree = _float32_thresholds(tree)
    options = {id(tree): {"zipmap": False}} if is_classifier else None
    onx = to_onnx(
        tree,
        np.zeros((1, n_features), dtype=dtype),
        options=options,
    )
    session_options = onnxruntime.SessionOptions()
    # One call, one thread: the replica's concurrency comes from its RPC threads.
    session_options.intra_op_num_threads = 1
    session_options.inter_op_num_threads = 1
    session_options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        onx.SerializeToString(), session_options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    output = session.get_outputs()[1 if is_classifier else 0].name
    run = session.run

    if is_classifier:

        def score(rows: Array) -> Array:
            return cast(np.ndarray, run([output], {input_name: rows.astype(np.float32)})[0])

    else:

        def score(rows: Array) -> Array:
            out = run([output], {input_name: rows.astype(np.float32)})[0]
            return cast(np.ndarray, out.reshape(len(rows)).astype(np.float64))

    return score


def _float32_thresholds(tree: Any) -> Any:
    """A copy of `tree` whose thresholds are float32 values making the same decisions.

    scikit-learn compares float32 inputs with float64 thresholds; the ONNX tree operators hold
    float32 thresholds, and a threshold rounded to the nearest float32 may land on an input
    value that scikit-learn sends the other way. For float32 `x`, `x <= t` exactly when `x`
    is at most the largest float32 not above `t`, so that is the threshold written.
    """
    if not hasattr(tree, "tree_") and not hasattr(tree, "estimators_"):
        return tree
    tree = copy.deepcopy(tree)
    estimators = [tree] if hasattr(tree, "tree_") else list(np.ravel(tree.estimators_))
    for estimator in estimators:
        threshold = estimator.tree_.threshold
        nearest = threshold.astype(np.float32)
        below = np.where(
            nearest.astype(np.float64) > threshold,
            np.nextafter(nearest, np.float32(-np.inf)),
            nearest,
        )
        threshold[:] = np.where(np.isfinite(threshold), below.astype(np.float64), threshold)
    return tree


def _treelite_scorer(tree: Any, is_classifier: bool) -> Callable[[Array], Array]:
    import treelite
    import treelite.gtil

    imported = treelite.sklearn.import_model(tree)
    predict = treelite.gtil.predict
    n_classes = len(tree.classes_) if is_classifier else 0

    def score(rows: Array) -> Array:
        out = predict(imported, rows, nthread=1).reshape(len(rows), -1)
        if not is_classifier:
            return cast(np.ndarray, out[:, 0])
        if out.shape[1] == 1 and n_classes == 2:
            # A binary model answers the positive class's probability only.
            return np.column_stack([1.0 - out[:, 0], out[:, 0]])
        return cast(np.ndarray, out)

    return score
