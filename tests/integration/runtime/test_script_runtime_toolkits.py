"""The default script runtime, as `make install` built it: the libraries SageMaker's
scikit-learn container gives scripts import, and skmaker's `sagemaker_containers` encodes,
decodes and builds responses exactly as the real toolkits (installed beside it) do.

Each check runs under the runtime's own python, as user code does.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.runtime.script_runtimes import choose_python

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("toolkit_probe.py")

# Predictions and payloads scripts send: labels, probabilities, regressions, one row, a list.
ARRAYS = [
    "np.array([0, 1, 2, 2])",
    "np.array([[0.1, 0.9], [0.75, 0.25]])",
    "np.array([1.5, -2.25e-07, 3e20])",
    "np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)",
    "np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)",
    "[[1.0, 2.0], [3.0, 4.0]]",
    "np.array(['setosa', 'versicolor'])",
]


def runtime_python() -> str:
    choice = choose_python()
    if not choice.runtime:
        pytest.fail(f"no script runtime: {choice.note}")
    return choice.python


def run_probe(request: dict[str, object], tmp_path: Path) -> dict[str, list[dict[str, object]]]:
    done = subprocess.run(
        [runtime_python(), str(PROBE)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        # sagemaker_training makes SageMaker's folders under its base folder on some imports.
        env={"SAGEMAKER_BASE_DIR": str(tmp_path / "opt-ml"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_runtime_imports_what_the_container_gives_scripts(tmp_path: Path) -> None:
    modules = [
        "boto3",
        "sklearn",
        "sagemaker_training.environment",
        "sagemaker_inference.encoder",
        "sagemaker_containers",
        "sagemaker_containers.beta.framework",
        "services.inference.app",
    ]
    script = (
        "import importlib, json, sys; print(json.dumps([sys.prefix]"
        " + [importlib.import_module(m).__name__ for m in sys.argv[1:]]))"
    )
    done = subprocess.run(
        [runtime_python(), "-c", script, *modules],
        capture_output=True,
        text=True,
        check=False,
        env={"SAGEMAKER_BASE_DIR": str(tmp_path / "opt-ml"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    prefix, *imported = json.loads(done.stdout)
    assert imported == modules
    assert Path(prefix) == Path(runtime_python()).parent.parent


def test_encoders_match_both_toolkits_byte_for_byte(tmp_path: Path) -> None:
    answer = run_probe({"arrays": ARRAYS, "bodies": []}, tmp_path)
    for expression, by_type in zip(ARRAYS, answer["encoded"], strict=True):
        for content_type, results in by_type.items():
            assert isinstance(results, dict)
            compat = results["compat"]
            assert not compat.startswith("error"), (expression, content_type, compat)
            # sagemaker_training's encoders are the legacy toolkit's, carried over.
            assert compat == results["training"], (expression, content_type)
            # sagemaker_inference writes text columns with its own quoting; numbers agree.
            if "setosa" not in expression:
                assert compat == results["inference"], (expression, content_type)


def test_encoded_predictions_read_back_as_the_same_array(tmp_path: Path) -> None:
    answer = run_probe({"arrays": ARRAYS[:2], "bodies": []}, tmp_path)
    labels = answer["encoded"][0]
    assert base64.b64decode(labels["text/csv"]["compat"]) == b"0\n1\n2\n2\n"
    assert base64.b64decode(labels["application/json"]["compat"]) == b"[0, 1, 2, 2]"
    probabilities = np.load(
        io.BytesIO(base64.b64decode(answer["encoded"][1]["application/x-npy"]["compat"]))
    )
    assert probabilities.tolist() == [[0.1, 0.9], [0.75, 0.25]]


def test_decoders_match_the_training_toolkit(tmp_path: Path) -> None:
    npy = io.BytesIO()
    np.save(npy, np.array([[1.0, 2.5], [3.0, 4.0]]))
    bodies = [
        ("text/csv", b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"),
        ("text/csv", b"5.1,3.5,1.4,0.2"),
        ("application/json", b"[[1, 2], [3, 4]]"),
        ("application/json", b"[0.5, 1.5]"),
        ("application/x-npy", npy.getvalue()),
    ]
    request = {"arrays": [], "bodies": [[ct, base64.b64encode(b).decode()] for ct, b in bodies]}
    answer = run_probe(request, tmp_path)
    for (content_type, body), results in zip(bodies, answer["decoded"], strict=True):
        assert results["compat"] == results["training"], (content_type, body)
    assert answer["decoded"][0]["compat"] == {
        "list": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
        "dtype": "float64",
    }


def test_an_unknown_content_type_is_the_toolkits_unsupported_format_error(tmp_path: Path) -> None:
    script = (
        "from sagemaker_containers.beta.framework import encoders, errors\n"
        "try:\n    encoders.encode([1], 'text/html')\n"
        "except errors.UnsupportedFormatError as err:\n    print(err)\n"
    )
    done = subprocess.run(
        [runtime_python(), "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.startswith("Content type text/html is not supported by this framework.")


@pytest.mark.parametrize(
    "arguments",
    [
        "('0\\n1\\n', mimetype='text/csv')",
        "(b'[1, 2]', mimetype='application/json')",
        "('plain')",
        "(['a', b'b'], status=201, mimetype='text/plain')",
        "(b'x', content_type='text/csv; charset=latin-1')",
    ],
)
def test_worker_response_reads_like_a_werkzeug_response(tmp_path: Path, arguments: str) -> None:
    # The toolkit's Response is Flask's, which is Werkzeug's (installed in the runtime by
    # sagemaker-training) with JSON as the default type.
    script = (
        "import json\n"
        "from werkzeug.wrappers import Response\n"
        "from sagemaker_containers.beta.framework import worker\n"
        "class Real(Response):\n    default_mimetype = 'application/json'\n"
        f"ours, real = worker.Response{arguments}, Real{arguments}\n"
        "print(json.dumps([[r.get_data(as_text=True), r.mimetype, r.content_type, r.status_code,"
        " r.status, r.headers['Content-Type']] for r in (ours, real)]))\n"
    )
    done = subprocess.run(
        [runtime_python(), "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    ours, real = json.loads(done.stdout)
    assert ours == real


def test_training_env_reads_sagemakers_config_files_as_the_training_toolkit(
    tmp_path: Path,
) -> None:
    # The files as SageMaker writes them: every hyperparameter value JSON-encoded.
    config = tmp_path / "opt-ml" / "input" / "config"
    config.mkdir(parents=True)
    hyperparameters = {"max_leaf_nodes": "30", "criterion": '"gini"', "sagemaker_program": '"t.py"'}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    hosts = {"current_host": "algo-1", "hosts": ["algo-1"]}
    (config / "resourceconfig.json").write_text(json.dumps(hosts))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {}, "test": {}}))
    script = (
        "import json, sagemaker_containers\n"
        "from sagemaker_containers.beta.framework import training_env\n"
        "from sagemaker_training.environment import Environment\n"
        "read = lambda e: [e.hyperparameters, e.hosts, e.current_host, e.module_name,"
        " e.channel_input_dirs, e.model_dir]\n"
        "given = training_env(hyperparameters={'alpha': 0.5}).hyperparameters\n"
        "legacy = read(sagemaker_containers.training_env())\n"
        "print(json.dumps([legacy, read(Environment()), given]))\n"
    )
    done = subprocess.run(
        [runtime_python(), "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env={"SAGEMAKER_BASE_DIR": str(tmp_path / "opt-ml"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    legacy, toolkit, given = json.loads(done.stdout)
    assert legacy == toolkit
    base = tmp_path / "opt-ml"
    assert legacy == [
        {"max_leaf_nodes": 30, "criterion": "gini"},
        ["algo-1"],
        "algo-1",
        "t",
        {"train": str(base / "input/data/train"), "test": str(base / "input/data/test")},
        str(base / "model"),
    ]
    assert given == {"alpha": 0.5}
