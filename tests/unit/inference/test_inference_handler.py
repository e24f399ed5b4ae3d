"""ModelHandler and load_user_module, driven through `invoke` with a real iris decision tree.

Each test writes its own entry-point script into `tmp_path`, as a user's `code/` folder would
hold it; the model archive (`model.joblib`) is trained once per module.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from services.runtime.errors import InvalidArgument, ModelError
from services.sagemaker.serving.errors import HandlerLoadError
from services.sagemaker.serving.handler import (
    ModelHandler,
    load_user_module,
    sklearn_version_warning,
)

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]

MODEL_FN = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    iris = load_iris()
    model = DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)
    joblib.dump(model, directory / "model.joblib")
    return directory


@pytest.fixture(scope="module")
def expected(model_dir: Path) -> list[int]:
    model = joblib.load(model_dir / "model.joblib")
    return [int(label) for label in model.predict(np.array(IRIS_ROWS, dtype=np.float32))]


@pytest.fixture(autouse=True)
def isolated_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what loading user code does to the process: sys.path entries and user modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).is_relative_to(tmp_path):
            del sys.modules[name]


def write_code(tmp_path: Path, source: str, name: str = "inference.py") -> Path:
    code_dir = tmp_path / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / name).write_text(textwrap.dedent(source))
    return code_dir


def load(model_dir: Path, code_dir: Path, **kwargs: str) -> ModelHandler:
    return ModelHandler.load(model_dir, code_dir, "inference.py", **kwargs)


@pytest.fixture
def default_handler(model_dir: Path, tmp_path: Path) -> ModelHandler:
    return load(model_dir, write_code(tmp_path, MODEL_FN))


def csv_body(rows: list[list[float]]) -> str:
    return "".join(",".join(map(str, row)) + "\n" for row in rows)


def npy_body(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=allow_pickle)
    return stream.getvalue()


# Contract §2.3, request table: each content type through the default input_fn.
@pytest.mark.parametrize(
    ("content_type", "make_body"),
    [
        ("text/csv", lambda: csv_body(IRIS_ROWS)),
        ("text/csv", lambda: csv_body(IRIS_ROWS).encode()),
        ("text/csv; charset=utf-8", lambda: csv_body(IRIS_ROWS).encode()),
        ("application/json", lambda: json.dumps(IRIS_ROWS)),
        ("application/json; charset=utf-8", lambda: json.dumps(IRIS_ROWS).encode()),
        ("", lambda: json.dumps(IRIS_ROWS)),
        ("application/x-npy", lambda: npy_body(np.array(IRIS_ROWS))),
    ],
)
def test_default_input_fn_by_content_type(
    default_handler: ModelHandler,
    expected: list[int],
    content_type: str,
    make_body: Callable[[], bytes | str],
) -> None:
    body = make_body()
    assert default_handler.invoke(body, content_type, "application/json") == (
        json.dumps(expected).encode(),
        "application/json",
    )


def test_unsupported_content_type(default_handler: ModelHandler) -> None:
    with pytest.raises(InvalidArgument) as raised:
        default_handler.invoke(b"5.1 3.5 1.4 0.2", "text/plain", "")
    assert str(raised.value) == (
        "unsupported content type 'text/plain'; "
        "supported: text/csv, application/json, application/x-npy"
    )
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_one_csv_row_is_one_sample(default_handler: ModelHandler, expected: list[int]) -> None:
    body, _ = default_handler.invoke("5.1,3.5,1.4,0.2", "text/csv", "application/json")
    assert json.loads(body) == expected[:1]


def test_npy_object_array_is_refused(default_handler: ModelHandler) -> None:
    body = npy_body(np.array(IRIS_ROWS, dtype=object), allow_pickle=True)
    with pytest.raises(InvalidArgument, match="dtype object are refused"):
        default_handler.invoke(body, "application/x-npy", "")


def test_bad_csv_cell_is_named(default_handler: ModelHandler) -> None:
    with pytest.raises(InvalidArgument, match="CSV line 2, column 3: cannot read 'tall'"):
        default_handler.invoke("5.1,3.5,1.4,0.2\n6.7,3.0,tall,2.3\n", "text/csv", "")


def test_wrong_feature_count(default_handler: ModelHandler) -> None:
    with pytest.raises(InvalidArgument) as raised:
        default_handler.invoke("5.1,3.5,1.4", "text/csv", "")
    assert str(raised.value) == "expected 4 features per row, got 3"


# Contract §2.3, response table: each accept through the default output_fn.
@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/csv", "text/csv"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("application/x-npy", "application/x-npy"),
    ],
)
def test_default_output_fn_by_accept(
    default_handler: ModelHandler, expected: list[int], accept: str, content_type: str
) -> None:
    body, answered_type = default_handler.invoke(csv_body(IRIS_ROWS), "text/csv", accept)
    assert answered_type == content_type
    if content_type == "application/json":
        assert body == json.dumps(expected).encode()
    elif content_type == "text/csv":
        assert body == "".join(f"{label}\n" for label in expected).encode()
    else:
        np.testing.assert_array_equal(np.load(io.BytesIO(body), allow_pickle=False), expected)


@pytest.mark.parametrize("accept", ["text/html", "application/json, text/csv"])
def test_unsupported_accept(default_handler: ModelHandler, accept: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        default_handler.invoke(csv_body(IRIS_ROWS), "text/csv", accept)
    assert str(raised.value) == (
        f"unsupported accept '{accept}'; supported: text/csv, application/json, application/x-npy"
    )


def test_default_accept_applies_to_empty_and_any_accept(
    model_dir: Path, tmp_path: Path, expected: list[int]
) -> None:
    handler = load(model_dir, write_code(tmp_path, MODEL_FN), default_accept="text/csv")
    for accept in ("", "*/*"):
        body, content_type = handler.invoke(json.dumps(IRIS_ROWS), "application/json", accept)
        assert (body, content_type) == (
            "".join(f"{label}\n" for label in expected).encode(),
            "text/csv",
        )


def test_unsupported_default_accept_fails_at_load(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(HandlerLoadError, match="default accept 'text/html'"):
        load(model_dir, write_code(tmp_path, MODEL_FN), default_accept="text/html")


def test_default_handler_facts(default_handler: ModelHandler) -> None:
    assert default_handler.n_features_in == 4
    assert default_handler.uses_default_handlers
    assert isinstance(default_handler.model, DecisionTreeClassifier)
    assert default_handler.module is not None
    assert default_handler.module.__name__ == "inference"


def test_custom_input_predict_output_fn(model_dir: Path, tmp_path: Path) -> None:
    source = (
        MODEL_FN
        + """
import json

import numpy as np

seen = []


def input_fn(request_body, request_content_type):
    seen.append((type(request_body).__name__, request_content_type))
    if request_content_type != "application/json":
        raise ValueError(f"unsupported {request_content_type}")
    return np.array(json.loads(request_body)["instances"])


def predict_fn(input_data, model):
    return model.predict_proba(input_data)


def output_fn(prediction, accept):
    return json.dumps({"probabilities": prediction.tolist()}), "application/vnd.probs+json"
"""
    )
    handler = load(model_dir, write_code(tmp_path, source))
    assert not handler.uses_default_handlers
    request = json.dumps({"instances": IRIS_ROWS[:2]}).encode()
    body, content_type = handler.invoke(request, "application/json; charset=utf-8", "*/*")
    assert content_type == "application/vnd.probs+json"
    probabilities = json.loads(body)["probabilities"]
    assert np.array(probabilities).shape == (2, 3)
    assert np.allclose(np.sum(probabilities, axis=1), 1.0)
    assert handler.module is not None
    assert handler.module.seen == [("str", "application/json")]


def test_user_input_fn_gets_bytes_for_binary_types(model_dir: Path, tmp_path: Path) -> None:
    source = (
        MODEL_FN
        + """
import io

import numpy as np


def input_fn(request_body, request_content_type):
    assert isinstance(request_body, bytes), type(request_body)
    return np.load(io.BytesIO(request_body))
"""
    )
    handler = load(model_dir, write_code(tmp_path, source))
    body, _ = handler.invoke(npy_body(np.array(IRIS_ROWS)), "application/x-npy", "text/csv")
    assert body.count(b"\n") == 3


def test_user_input_fn_gets_text_decoded_with_the_charset(model_dir: Path, tmp_path: Path) -> None:
    source = (
        MODEL_FN
        + """
import numpy as np


def input_fn(request_body, request_content_type):
    assert request_content_type == "text/csv", request_content_type
    label, *features = request_body.strip().split(",")
    assert label == "café", label
    return np.array([features], dtype=float)
"""
    )
    handler = load(model_dir, write_code(tmp_path, source))
    request = "café,5.1,3.5,1.4,0.2".encode("latin-1")
    assert handler.invoke(request, "text/csv; charset=latin-1", "") == (b"[0]", "application/json")


def test_transform_fn_only(model_dir: Path, tmp_path: Path, expected: list[int]) -> None:
    source = (
        MODEL_FN
        + """
import json

import numpy as np


def transform_fn(model, request_body, content_type, accept):
    rows = np.array(json.loads(request_body), dtype=float)
    answer = {"labels": model.predict(rows).tolist(), "accept": accept}
    return json.dumps(answer), "application/json"
"""
    )
    handler = load(model_dir, write_code(tmp_path, source))
    assert not handler.uses_default_handlers
    assert not handler.warm_up()
    body, content_type = handler.invoke(json.dumps(IRIS_ROWS), "application/json", "")
    assert content_type == "application/json"
    assert json.loads(body) == {"labels": expected, "accept": "application/json"}


def test_transform_fn_with_input_fn_is_refused_before_model_fn_runs(
    model_dir: Path, tmp_path: Path
) -> None:
    source = """
def model_fn(model_dir):
    raise RuntimeError("model_fn must not run")


def input_fn(request_body, request_content_type):
    return request_body


def transform_fn(model, request_body, content_type, accept):
    return request_body
"""
    with pytest.raises(HandlerLoadError) as raised:
        load(model_dir, write_code(tmp_path, source))
    assert "transform_fn cannot be defined together with input_fn" in str(raised.value)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_missing_model_fn(model_dir: Path, tmp_path: Path) -> None:
    source = """
def predict_fn(input_data, model):
    return model.predict(input_data)
"""
    with pytest.raises(HandlerLoadError) as raised:
        load(model_dir, write_code(tmp_path, source))
    assert "defines no model_fn: please provide a model_fn(model_dir)" in str(raised.value)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_no_entry_point_means_no_model_fn(model_dir: Path) -> None:
    with pytest.raises(HandlerLoadError, match="please provide a script defining model_fn"):
        ModelHandler.load(model_dir, None, None)


def test_missing_entry_point_file(model_dir: Path, tmp_path: Path) -> None:
    code_dir = write_code(tmp_path, MODEL_FN)
    with pytest.raises(HandlerLoadError, match=r"entry point 'serve\.py' not found in"):
        ModelHandler.load(model_dir, code_dir, "serve.py")


def test_code_dir_defaults_to_the_archives_code_folder(
    model_dir: Path, tmp_path: Path, expected: list[int]
) -> None:
    archive = tmp_path / "archive"
    (archive / "code").mkdir(parents=True)
    (archive / "model.joblib").write_bytes((model_dir / "model.joblib").read_bytes())
    (archive / "code" / "inference.py").write_text(MODEL_FN)
    handler = ModelHandler.load(archive, None, "inference")
    assert handler.invoke(json.dumps(IRIS_ROWS), "", "")[0] == json.dumps(expected).encode()


def test_training_script_main_block_does_not_run(
    model_dir: Path, tmp_path: Path, expected: list[int]
) -> None:
    marker = tmp_path / "trained"
    source = (
        MODEL_FN
        + f"""
import argparse
from pathlib import Path

if __name__ == "__main__":
    Path({str(marker)!r}).write_text("trained")
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-depth", type=int, required=True)
    parser.parse_args()
    raise SystemExit("training ran on import")
"""
    )
    handler = ModelHandler.load(model_dir, write_code(tmp_path, source, "train.py"), "train.py")
    assert not marker.exists()
    assert handler.module is not None
    assert handler.module.__name__ == "train"
    assert handler.invoke(json.dumps(IRIS_ROWS), "", "")[0] == json.dumps(expected).encode()


def test_import_time_exit_is_a_load_error(model_dir: Path, tmp_path: Path) -> None:
    source = MODEL_FN + "\nimport sys\nsys.exit(2)\n"
    with pytest.raises(HandlerLoadError, match=r"SystemExit: 2; keep training code under"):
        load(model_dir, write_code(tmp_path, source))
    assert "inference" not in sys.modules


def test_import_error_is_a_load_error(model_dir: Path, tmp_path: Path) -> None:
    source = "import not_installed_anywhere_xyz\n" + MODEL_FN
    with pytest.raises(HandlerLoadError, match="ModuleNotFoundError: No module named"):
        load(model_dir, write_code(tmp_path, source))


def test_model_fn_failure_is_a_load_error(model_dir: Path, tmp_path: Path) -> None:
    source = """
def model_fn(model_dir):
    raise FileNotFoundError("no model.joblib in " + model_dir)
"""
    with pytest.raises(HandlerLoadError, match=r"model_fn raised FileNotFoundError: no model\.job"):
        load(model_dir, write_code(tmp_path, source))


def test_user_handler_exception_is_a_model_error(model_dir: Path, tmp_path: Path) -> None:
    source = (
        MODEL_FN
        + """
def predict_fn(input_data, model):
    raise ValueError("the model does not like row 0")
"""
    )
    handler = load(model_dir, write_code(tmp_path, source))
    with pytest.raises(ModelError) as raised:
        handler.invoke(csv_body(IRIS_ROWS), "text/csv", "")
    assert str(raised.value) == (
        "the model's predict_fn raised ValueError: the model does not like row 0"
    )
    assert raised.value.code == grpc.StatusCode.UNKNOWN
    assert isinstance(raised.value.__cause__, ValueError)


def test_default_decode_errors_stay_invalid_argument_with_user_predict_fn(
    model_dir: Path, tmp_path: Path
) -> None:
    source = (
        MODEL_FN + "\ndef predict_fn(input_data, model):\n    return model.predict(input_data)\n"
    )
    handler = load(model_dir, write_code(tmp_path, source))
    with pytest.raises(InvalidArgument, match="malformed JSON body"):
        handler.invoke("[1, 2", "application/json", "")


def test_model_predict_exception_is_a_model_error() -> None:
    class Broken:
        def predict(self, data: object) -> object:
            raise RuntimeError("weights missing")

    handler = ModelHandler(Broken())
    assert handler.n_features_in is None
    assert not handler.warm_up()
    with pytest.raises(ModelError, match="the model's predict raised RuntimeError: weights"):
        handler.invoke("1,2", "text/csv", "")


def test_long_user_error_messages_are_cut() -> None:
    def predict_fn(data: object, model: object) -> object:
        raise ValueError("x" * 10_000)

    handler = ModelHandler(object(), predict_fn=predict_fn)
    with pytest.raises(ModelError) as raised:
        handler.invoke("1", "text/csv", "")
    assert len(str(raised.value)) < 1100
    assert str(raised.value).endswith("...")


@pytest.mark.parametrize(
    ("returned", "accept", "expected"),
    [
        ("'0\\n'", "text/csv", (b"0\n", "text/csv")),
        ("b'<b>0</b>'", "text/html", (b"<b>0</b>", "text/html")),
        ("'\\u00e9'", "", ("é".encode(), "application/json")),
        ("('x', 'text/plain')", "text/csv", (b"x", "text/plain")),
    ],
)
def test_output_fn_bare_body_goes_out_with_the_accept_type(
    model_dir: Path,
    tmp_path: Path,
    returned: str,
    accept: str,
    expected: tuple[bytes, str],
) -> None:
    source = MODEL_FN + f"\ndef output_fn(prediction, accept):\n    return {returned}\n"
    handler = load(model_dir, write_code(tmp_path, source))
    assert handler.uses_default_handlers
    assert handler.invoke(csv_body(IRIS_ROWS[:1]), "text/csv", accept) == expected


def test_output_fn_returning_an_array_is_a_model_error(model_dir: Path, tmp_path: Path) -> None:
    source = MODEL_FN + "\ndef output_fn(prediction, accept):\n    return prediction\n"
    handler = load(model_dir, write_code(tmp_path, source))
    with pytest.raises(ModelError, match="output_fn returned ndarray; expected bytes, str, a dict"):
        handler.invoke(csv_body(IRIS_ROWS), "text/csv", "")


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("{'labels': [int(v) for v in prediction], 'n': 'é'}", b'{"labels":[0],"n":"\\u00e9"}\n'),
        ("[{'b': 1, 'a': 2}]", b'[{"a":2,"b":1}]\n'),
    ],
)
def test_output_fn_dict_or_list_is_sent_as_json_as_flask_does(
    model_dir: Path, tmp_path: Path, returned: str, expected: bytes
) -> None:
    source = MODEL_FN + f"\ndef output_fn(prediction, accept):\n    return {returned}\n"
    handler = load(model_dir, write_code(tmp_path, source))
    # Whatever the accept type: Flask sends a returned dict as JSON.
    assert handler.invoke(csv_body(IRIS_ROWS[:1]), "text/csv", "text/csv") == (
        expected,
        "application/json",
    )


def test_output_fn_dict_that_json_cannot_hold_is_a_model_error(
    model_dir: Path, tmp_path: Path
) -> None:
    source = MODEL_FN + "\ndef output_fn(prediction, accept):\n    return {'p': prediction}\n"
    handler = load(model_dir, write_code(tmp_path, source))
    with pytest.raises(ModelError, match="output_fn returned a dict that is not JSON"):
        handler.invoke(csv_body(IRIS_ROWS[:1]), "text/csv", "")


RESPONSE_CLASS = """
class FlaskLikeResponse:
    # The attributes Flask's Response has that servers read: a body iterable and a type.
    def __init__(self, chunks, mimetype, status=200):
        self.response = chunks
        self.mimetype = mimetype
        self.status_code = status
"""


def test_transform_fn_may_return_a_flask_style_response_with_its_own_type(
    model_dir: Path, tmp_path: Path
) -> None:
    source = (
        MODEL_FN
        + RESPONSE_CLASS
        + """
def transform_fn(model, body, content_type, accept):
    labels = model.predict([[float(v) for v in body.split(",")]])
    return FlaskLikeResponse([b"label=", str(int(labels[0])).encode()], "text/plain")
"""
    )
    handler = load(model_dir, write_code(tmp_path, source))
    body, content_type = handler.invoke(csv_body(IRIS_ROWS[:1]), "text/csv", "text/csv")
    assert (body, content_type) == (b"label=0", "text/plain")


@pytest.mark.parametrize(("status", "error"), [(415, InvalidArgument), (500, ModelError)])
def test_output_fn_error_response_is_the_error(
    model_dir: Path, tmp_path: Path, status: int, error: type[Exception]
) -> None:
    source = (
        MODEL_FN
        + RESPONSE_CLASS
        + f"""
def output_fn(prediction, accept):
    return FlaskLikeResponse(["cannot write " + accept], "text/plain", {status})
"""
    )
    handler = load(model_dir, write_code(tmp_path, source))
    with pytest.raises(error, match=f"output_fn returned an HTTP {status} response: cannot write"):
        handler.invoke(csv_body(IRIS_ROWS[:1]), "text/csv", "text/html")


def test_helper_module_imports_from_the_code_dir(
    model_dir: Path, tmp_path: Path, expected: list[int]
) -> None:
    code_dir = write_code(tmp_path, "def double(x):\n    return 2 * x\n", "iris_helpers_9f3.py")
    source = (
        MODEL_FN
        + """
from iris_helpers_9f3 import double


def output_fn(prediction, accept):
    return ",".join(str(double(int(label))) for label in prediction)
"""
    )
    handler = load(model_dir, write_code(tmp_path, source))
    body, _ = handler.invoke(csv_body(IRIS_ROWS), "text/csv", "text/csv")
    assert body == ",".join(str(2 * label) for label in expected).encode()
    assert sys.path[0] == str(code_dir.resolve())


def test_each_load_gets_a_fresh_module(tmp_path: Path) -> None:
    first_dir = write_code(tmp_path / "a", MODEL_FN + "\nNAME = 'first'\n")
    second_dir = write_code(tmp_path / "b", MODEL_FN + "\nNAME = 'second'\n")
    first = load_user_module(first_dir, "inference.py")
    second = load_user_module(second_dir, "inference")
    assert (first.NAME, second.NAME) == ("first", "second")
    assert first is not second
    assert sys.modules["inference"] is second


def test_entry_point_may_not_shadow_an_imported_module(tmp_path: Path) -> None:
    code_dir = write_code(tmp_path, MODEL_FN, "json.py")
    with pytest.raises(HandlerLoadError, match="would replace the already imported module 'json'"):
        load_user_module(code_dir, "json.py")
    assert sys.modules["json"] is json


def test_entry_point_may_not_leave_the_code_dir(tmp_path: Path) -> None:
    write_code(tmp_path, MODEL_FN)
    (tmp_path / "outside.py").write_text(MODEL_FN)
    with pytest.raises(HandlerLoadError, match="lies outside the code folder"):
        load_user_module(tmp_path / "code", "../outside.py")


def test_warm_up_runs_one_row_of_zeros(default_handler: ModelHandler) -> None:
    assert default_handler.warm_up()


def test_warm_up_failure_is_a_load_error() -> None:
    class Fussy:
        n_features_in_ = 3

        def predict(self, data: np.ndarray) -> np.ndarray:
            if not data.any():
                raise ValueError("all-zero rows are not supported")
            return data[:, 0]

    handler = ModelHandler(Fussy())
    with pytest.raises(HandlerLoadError, match="warm-up prediction on one row of 3 zeros failed"):
        handler.warm_up()


def test_model_without_predict_needs_a_predict_fn() -> None:
    with pytest.raises(HandlerLoadError, match="has no predict method; define a predict_fn"):
        ModelHandler(object())
    assert ModelHandler(object(), predict_fn=lambda data, model: data).invoke("1", "text/csv", "")


@pytest.mark.parametrize(
    ("trained_with", "running", "warns"),
    [(None, "1.9.1", False), ("1.9.1", "1.9.1", False), ("1.5.2", "1.9.1", True)],
)
def test_sklearn_version_warning(trained_with: str | None, running: str, warns: bool) -> None:
    warning = sklearn_version_warning(trained_with, running=running)
    assert (warning is not None) is warns
    if warning:
        assert "trained with scikit-learn 1.5.2 but is served with 1.9.1" in warning


def test_sklearn_version_warning_reads_the_installed_version() -> None:
    import sklearn

    assert sklearn_version_warning(sklearn.__version__) is None
