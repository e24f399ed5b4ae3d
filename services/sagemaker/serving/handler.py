"""The user's inference handlers, resolved once at load and called per request (contract §2.1-2.2).

`load_user_module` imports the entry-point script as a module, so its `if __name__ == "__main__":`
training block does not run. `ModelHandler.load` resolves `model_fn`, `input_fn`, `predict_fn`,
`output_fn` and `transform_fn` from it, calls `model_fn(model_dir)` once, and binds the request
pipeline, so `invoke` does no lookups per request. Absent functions fall back to SageMaker's
defaults (`codecs`, `model.predict`). An exception from the user's code becomes `ModelError`;
a request the default handlers cannot read stays `InvalidArgument`; anything that stops the
model from loading is `HandlerLoadError`.

Shared by the inference replica and the batch worker, so nothing here knows about grpc or protobuf.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from services.runtime.errors import FailedPrecondition, InvalidArgument, ModelError, SkmakerError
from services.sagemaker.serving.codecs import (
    CSV,
    DEFAULT_ACCEPT,
    JSON,
    SUPPORTED_MEDIA_TYPES,
    decode,
    encode,
    parse_media_type,
    to_text,
)
from services.sagemaker.serving.errors import HandlerLoadError
from services.sagemaker.serving.responses import describe_error, response_body

UserFunction = Callable[..., Any]

# Modules this file has loaded as entry points. A later load may replace them in sys.modules;
# any other module of the same name (`json.py` against the standard library) is refused instead.
_entry_point_modules: weakref.WeakSet[ModuleType] = weakref.WeakSet()


def load_user_module(code_dir: Path, entry_point: str) -> ModuleType:
    """Import the entry-point script as a module named after it, without running `__main__` code.

    `code_dir` (and the script's own folder, when the entry point sits in a subfolder) go first
    on `sys.path`, so the script's helper modules import, as when it ran for training. Every call
    executes the file into a fresh module object, registered as `sys.modules[<name>]`, so pickles
    and helpers that import the entry point by name find it. A process serving one model (a
    replica) loads once; a batch worker or a test suite may load several models, and each gets
    its own functions. Helper modules, though, are cached by name in `sys.modules` as any import
    is: two code folders with different `helpers.py` files share the first one imported.

    Not thread-safe: it edits `sys.path` and `sys.modules`. Call it before serving.

    Args:
        code_dir: The folder holding the user's code (SageMaker's `/opt/ml/code`).
        entry_point: The script's path relative to `code_dir`, e.g. `"inference.py"`; the
            `.py` suffix may be omitted.

    Returns:
        The executed module; its `__name__` is the script's name without `.py`.

    Raises:
        HandlerLoadError: The script does not exist, lies outside `code_dir`, shadows an
            already imported module, or raises (or exits) while being imported.
    """
    path = _entry_point_path(code_dir, entry_point)
    name = path.stem
    previous = sys.modules.get(name)
    if previous is not None and previous not in _entry_point_modules:
        raise HandlerLoadError(
            f"entry point {entry_point!r} would replace the already imported module {name!r}; "
            "rename the script"
        )
    # Python puts a script's folder first on sys.path when it runs it, so imports that worked
    # in training (`python train.py` in code_dir) work here too.
    for folder in dict.fromkeys([str(code_dir.resolve()), str(path.parent)]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    # The code folder may have been unpacked after the import system last listed it.
    importlib.invalidate_caches()
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"cannot import entry point {entry_point!r} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:
        # Leave sys.modules as it was, as a failed import statement does.
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        hint = ""
        if isinstance(err, SystemExit):
            hint = '; keep training code under `if __name__ == "__main__":`'
        raise HandlerLoadError(
            f"importing entry point {entry_point!r} failed: {describe_error(err)}{hint}"
        ) from err
    _entry_point_modules.add(module)
    return module


def _entry_point_path(code_dir: Path, entry_point: str) -> Path:
    if not entry_point.endswith(".py"):
        entry_point += ".py"
    root = code_dir.resolve()
    path = (root / entry_point).resolve()
    if not path.is_relative_to(root):
        raise HandlerLoadError(f"entry point {entry_point!r} lies outside the code folder")
    if not path.is_file():
        raise HandlerLoadError(f"entry point {entry_point!r} not found in {code_dir}")
    return path


class ModelHandler:
    """One loaded model and the functions that serve it: SageMaker's handler chain.

    Build it with `ModelHandler.load`, or directly from a model object and optional handler
    functions. It never changes after construction, so request threads may share it.

    Args:
        model: What `model_fn` returned.
        input_fn: `input_fn(request_body, content_type) -> data`; default `codecs.decode`.
        predict_fn: `predict_fn(data, model) -> prediction`; default `model.predict(data)`.
        output_fn: `output_fn(prediction, accept) -> body, (body, content_type), a dict or list
            (JSON) or a response object (`worker.Response`)`; default
            `codecs.encode`.
        transform_fn: `transform_fn(model, request_body, content_type, accept)`, replacing the
            other three.
        module: The user module the functions came from, kept for callers that look up more
            (such as batch's `execution_parameters_fn`).
        default_accept: The accept type used when a request's is empty or `*/*`.

    Raises:
        HandlerLoadError: `transform_fn` is given together with another handler, or the default
            output_fn would be used with an unsupported `default_accept`.
    """

    __slots__ = (
        "_decode",
        "_default_accept",
        "_encode",
        "_input_fn",
        "_invoke",
        "_model",
        "_module",
        "_n_features_in",
        "_output_fn",
        "_predict",
        "_predict_core",
        "_predict_fn",
        "_transform_fn",
    )

    def __init__(
        self,
        model: Any,
        *,
        input_fn: UserFunction | None = None,
        predict_fn: UserFunction | None = None,
        output_fn: UserFunction | None = None,
        transform_fn: UserFunction | None = None,
        module: ModuleType | None = None,
        default_accept: str = DEFAULT_ACCEPT,
        predict_core: Callable[[Any], Any] | None = None,
    ) -> None:
        _check_no_conflict(input_fn, predict_fn, output_fn, transform_fn)
        if output_fn is None and transform_fn is None:
            if parse_media_type(default_accept) not in SUPPORTED_MEDIA_TYPES:
                raise HandlerLoadError(
                    f"default accept {default_accept!r} is not one the default output_fn "
                    f"writes: {', '.join(SUPPORTED_MEDIA_TYPES)}"
                )
        self._model = model
        self._module = module
        self._default_accept = default_accept
        self._input_fn = input_fn
        self._predict_fn = predict_fn
        self._output_fn = output_fn
        self._transform_fn = transform_fn
        self._n_features_in = n_features = _n_features_in(model)
        # Each step is bound once here, so a request makes three calls and never branches on
        # which handlers the user defined.
        self._decode: Callable[[bytes | str, str], Any] = (
            decode if input_fn is None else functools.partial(_decode_with, input_fn)
        )
        self._predict: Callable[[Any], Any]
        self._predict_core: Callable[[Any], Any] | None = predict_core
        if predict_fn is not None:
            core = predict_core or functools.partial(_call_predict_fn, predict_fn, model)
            self._predict = functools.partial(_call_user, "predict_fn", core)
        elif transform_fn is not None:
            self._predict = _no_predict_step
        else:
            model_predict = getattr(model, "predict", None)
            if not callable(model_predict):
                raise HandlerLoadError(
                    f"the model ({type(model).__name__}) has no predict method; "
                    "define a predict_fn(input_data, model)"
                )
            self._predict = functools.partial(
                _predict_default, predict_core or model_predict, n_features
            )
        self._encode: Callable[[Any, str], tuple[bytes, str]] = (
            functools.partial(encode, default_accept=default_accept)
            if output_fn is None
            else functools.partial(_encode_with, output_fn, default_accept)
        )
        self._invoke: Callable[[bytes | str, str, str], tuple[bytes, str]] = (
            self._invoke_chain
            if transform_fn is None
            else functools.partial(_transform_with, transform_fn, model, default_accept)
        )

    @classmethod
    def load(
        cls,
        model_dir: Path,
        code_dir: Path | None = None,
        entry_point: str | None = None,
        default_accept: str = DEFAULT_ACCEPT,
    ) -> ModelHandler:
        """Import the user's entry point, resolve its handlers and load the model once.

        Handlers are looked up by name in the entry point (contract §2.2). `model_fn` is
        required, as in SageMaker. It is called once, with `str(model_dir)` as SageMaker passes
        a string path.

        Args:
            model_dir: The unpacked model archive (SageMaker's `/opt/ml/model`).
            code_dir: The folder holding the entry point; None means `model_dir / "code"`,
                where SageMaker's repacked archives keep it (contract §2.7).
            entry_point: The script defining the handlers, e.g. `"inference.py"`.
            default_accept: The accept type used when a request's is empty or `*/*`.

        Returns:
            The handler, with its model loaded.

        Raises:
            HandlerLoadError: No entry point or no `model_fn` in it, conflicting handlers,
                an import failure, or `model_fn` raised.
        """
        if not entry_point:
            raise HandlerLoadError(
                "no entry point, so no model_fn: please provide a script defining "
                "model_fn(model_dir) that loads and returns the model"
            )
        module = load_user_module(
            code_dir if code_dir is not None else model_dir / "code", entry_point
        )
        model_fn = _handler(module, "model_fn")
        if model_fn is None:
            raise HandlerLoadError(
                f"entry point {entry_point!r} defines no model_fn: please provide a "
                "model_fn(model_dir) that loads and returns the model"
            )
        handlers = {
            name: _handler(module, name)
            for name in ("input_fn", "predict_fn", "output_fn", "transform_fn")
        }
        # Refuse a conflict before model_fn, which may take long to load a large model.
        _check_no_conflict(*handlers.values())
        try:
            model = model_fn(str(model_dir))
        except (Exception, SystemExit) as err:
            raise HandlerLoadError(f"the model's model_fn raised {describe_error(err)}") from err
        return cls(
            model,
            input_fn=handlers["input_fn"],
            predict_fn=handlers["predict_fn"],
            output_fn=handlers["output_fn"],
            transform_fn=handlers["transform_fn"],
            module=module,
            default_accept=default_accept,
        )

    @property
    def model(self) -> Any:
        """What `model_fn` returned."""
        return self._model

    @property
    def module(self) -> ModuleType | None:
        """The user's entry-point module, or None when the handler was built from functions."""
        return self._module

    @property
    def default_accept(self) -> str:
        """The accept type used when a request's is empty or `*/*`."""
        return self._default_accept

    @property
    def n_features_in(self) -> int | None:
        """The model's `n_features_in_`, or None when it does not say."""
        return self._n_features_in

    @property
    def uses_default_handlers(self) -> bool:
        """Whether requests reach `model.predict` through the default input_fn and predict_fn.

        The output_fn may still be the user's.
        """
        return self._input_fn is None and self._predict_fn is None and self._transform_fn is None

    @property
    def runs_user_code_per_request(self) -> bool:
        """Whether a request runs any of the user's functions (input_fn, predict_fn, output_fn
        or transform_fn); False when only the default handlers and the model's predict run."""
        return any(
            function is not None
            for function in (self._input_fn, self._predict_fn, self._output_fn, self._transform_fn)
        )

    @property
    def uses_default_predict(self) -> bool:
        """Whether the predict step is the model's own `predict` (no predict_fn, no transform_fn).

        The input_fn and output_fn may still be the user's.
        """
        return self._predict_fn is None and self._transform_fn is None

    @property
    def predict_core(self) -> Callable[[Any], Any] | None:
        """What the predict step calls with the decoded data; None for a transform_fn handler.

        `model.predict` (bound) on the default path, `predict_fn(data, model)` otherwise, unless
        `with_predict_core` replaced it. The checks around it (feature count, turning errors into
        `ModelError`) are not part of it.
        """
        if self._transform_fn is not None:
            return None
        if self._predict_core is not None:
            return self._predict_core
        if self._predict_fn is not None:
            return functools.partial(_call_predict_fn, self._predict_fn, self._model)
        predict: Callable[[Any], Any] = self._model.predict
        return predict

    def with_predict_core(self, core: Callable[[Any], Any]) -> ModelHandler:
        """A copy of this handler whose predict step calls `core(data)` instead.

        For serving-side replacements that keep the predict step's meaning (a verified compiled
        model, a micro-batcher around the same function): the feature-count check and the
        wrapping of errors into `ModelError` stay as they are.

        Raises:
            FailedPrecondition: The handler is a `transform_fn`, which has no predict step.
        """
        if self._transform_fn is not None:
            raise FailedPrecondition("a transform_fn handler has no predict step to replace")
        return ModelHandler(
            self._model,
            input_fn=self._input_fn,
            predict_fn=self._predict_fn,
            output_fn=self._output_fn,
            module=self._module,
            default_accept=self._default_accept,
            predict_core=core,
        )

    def invoke(self, body: bytes | str, content_type: str, accept: str) -> tuple[bytes, str]:
        """Serve one request: `transform_fn`, or `input_fn` → `predict_fn` → `output_fn`.

        The user's functions receive the request's media type without parameters and, as in
        SageMaker, a `str` body for `text/csv` and `application/json` (decoded with the charset
        parameter, UTF-8 by default) and `bytes` otherwise. Their `accept` is the request's, or
        the default accept when that is empty or `*/*`. A bare body returned by `output_fn` or
        `transform_fn` is sent with that accept type; a `(body, content_type)` tuple and a
        response object (`worker.Response`) name their own; a dict or list is sent as JSON.

        Args:
            body: The request body; text types may come as `str`.
            content_type: The request's Content-Type; empty means `application/json`.
            accept: The requested response type; empty or `*/*` means the default accept.

        Returns:
            The response body and its content type.

        Raises:
            InvalidArgument: The default handlers cannot read the request or write the accept
                type, or the data has the wrong number of features for the model.
            ModelError: The user's code or the model raised; the message names the function
                and carries the error's type and text.
        """
        return self._invoke(body, content_type, accept)

    @property
    def has_predict_step(self) -> bool:
        """Whether `predict` can run: False for a `transform_fn` handler, which takes bodies."""
        return self._transform_fn is None

    def predict(self, data: Any) -> Any:
        """Run the predict step alone on already decoded data: `predict_fn`, or `model.predict`.

        For callers that decode requests themselves (the Open Inference Protocol's tensors):
        `input_fn` and `output_fn` are skipped, as the data is already an array.

        Args:
            data: The decoded input, e.g. a 2-D array of rows.

        Returns:
            What `predict_fn` or `model.predict` returned.

        Raises:
            FailedPrecondition: The handler is a `transform_fn`, which has no predict step.
            InvalidArgument: The data has the wrong number of features for the model.
            ModelError: The user's code or the model raised.
        """
        if self._transform_fn is not None:
            raise FailedPrecondition(
                "this model defines transform_fn, which takes encoded request bodies, not "
                "tensors; call skmaker.v1.InferenceService/Predict instead"
            )
        return self._predict(data)

    def warm_up(self) -> bool:
        """Predict one row of zeros through the default path, to fail before serving.

        It runs only when requests go through the default handlers and the model states its
        feature count; otherwise no input can be built without guessing.

        Returns:
            True when a warm-up prediction ran, False when it was skipped.

        Raises:
            HandlerLoadError: The warm-up prediction failed.
        """
        n_features = self._n_features_in
        if n_features is None or not self.uses_default_handlers:
            return False
        try:
            prediction = self._predict(np.zeros((1, n_features), dtype=np.float32))
            if self._output_fn is None:
                self._encode(prediction, self._default_accept)
        except SkmakerError as err:
            raise HandlerLoadError(
                f"warm-up prediction on one row of {n_features} zeros failed: {err}"
            ) from err
        return True

    def _invoke_chain(self, body: bytes | str, content_type: str, accept: str) -> tuple[bytes, str]:
        return self._encode(self._predict(self._decode(body, content_type)), accept)


def sklearn_version_warning(trained_with: str | None, *, running: str | None = None) -> str | None:
    """Warn when the model was trained with another scikit-learn than the one serving it.

    scikit-learn does not promise that a pickled estimator works, or predicts the same, under
    another version.

    Args:
        trained_with: The scikit-learn version recorded at training, or None when unknown.
        running: The version serving the model; None means the installed scikit-learn.

    Returns:
        A sentence to log, or None when the versions match or the training version is unknown.
    """
    if not trained_with:
        return None
    if running is None:
        running = importlib.metadata.version("scikit-learn")
    if trained_with.strip() == running:
        return None
    return (
        f"the model was trained with scikit-learn {trained_with.strip()} but is served with "
        f"{running}; it may predict differently or fail to load: pin scikit-learn=="
        f"{trained_with.strip()} in requirements.txt"
    )


def _handler(module: ModuleType, name: str) -> UserFunction | None:
    function = getattr(module, name, None)
    if function is not None and not callable(function):
        raise HandlerLoadError(
            f"{name} in the entry point is a {type(function).__name__}, not a function"
        )
    return function


def _check_no_conflict(
    input_fn: UserFunction | None,
    predict_fn: UserFunction | None,
    output_fn: UserFunction | None,
    transform_fn: UserFunction | None,
) -> None:
    if transform_fn is None:
        return
    both = [
        name
        for name, function in (
            ("input_fn", input_fn),
            ("predict_fn", predict_fn),
            ("output_fn", output_fn),
        )
        if function is not None
    ]
    if both:
        raise HandlerLoadError(
            f"transform_fn cannot be defined together with {', '.join(both)}: transform_fn "
            "replaces the input_fn → predict_fn → output_fn chain; keep one or the other"
        )


def _n_features_in(model: Any) -> int | None:
    # A Pipeline answers through its first step and raises AttributeError when that step
    # does not know, which getattr turns into None.
    value = getattr(model, "n_features_in_", None)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def _user_body(body: bytes | str, media: str, content_type: str) -> bytes | str:
    if media == CSV or media == JSON:
        return to_text(body, content_type)
    return body.encode() if isinstance(body, str) else body


def _decode_with(input_fn: UserFunction, body: bytes | str, content_type: str) -> Any:
    media = parse_media_type(content_type)
    return _call_user("input_fn", input_fn, _user_body(body, media, content_type), media)


def _call_predict_fn(predict_fn: UserFunction, model: Any, data: Any) -> Any:
    return predict_fn(data, model)


def _predict_default(model_predict: UserFunction, n_features: int | None, data: Any) -> Any:
    if n_features is not None:
        # Checked here because scikit-learn's own message for this names no request field and
        # would come back as a model error; it is the caller's payload that is wrong.
        shape = getattr(data, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] != n_features:
            raise InvalidArgument(f"expected {n_features} features per row, got {shape[1]}")
    try:
        return model_predict(data)
    except Exception as err:
        raise ModelError(f"the model's predict raised {describe_error(err)}") from err


def _encode_with(
    output_fn: UserFunction, default_accept: str, prediction: Any, accept: str
) -> tuple[bytes, str]:
    accept = _resolve_accept(accept, default_accept)
    return response_body(
        _call_user("output_fn", output_fn, prediction, accept), accept, "output_fn"
    )


def _transform_with(
    transform_fn: UserFunction,
    model: Any,
    default_accept: str,
    body: bytes | str,
    content_type: str,
    accept: str,
) -> tuple[bytes, str]:
    media = parse_media_type(content_type)
    accept = _resolve_accept(accept, default_accept)
    body = _user_body(body, media, content_type)
    result = _call_user("transform_fn", transform_fn, model, body, media, accept)
    return response_body(result, accept, "transform_fn")


def _no_predict_step(data: Any) -> Any:
    """Stands in for the predict step of a transform_fn handler, which never runs it."""
    raise AssertionError("a transform_fn handler has no predict step")


def _resolve_accept(accept: str, default_accept: str) -> str:
    accept = accept.strip()
    if not accept or parse_media_type(accept) == "*/*":
        return default_accept
    return accept


def _call_user(name: str, function: UserFunction, *args: Any) -> Any:
    try:
        return function(*args)
    except SkmakerError:
        # Already carries the status the user's code (or a default it called) chose.
        raise
    except Exception as err:
        raise ModelError(f"the model's {name} raised {describe_error(err)}") from err
