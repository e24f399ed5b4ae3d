"""Runtime versions: asked of the script's interpreter in its environment, and compared."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

from services.runtime.versions import Runtime, differences, probe, serving_runtime

THIS = Runtime(
    python=platform.python_version(),
    sklearn=importlib.metadata.version("scikit-learn"),
    numpy=importlib.metadata.version("numpy"),
    joblib=importlib.metadata.version("joblib"),
)


def test_the_interpreter_reports_what_it_has() -> None:
    assert probe(sys.executable) == THIS


def test_the_scripts_path_wins_as_it_does_for_its_imports(tmp_path: Path) -> None:
    # What `pip install --target deps -r requirements.txt` pinning scikit-learn leaves behind:
    # a distribution the script's PYTHONPATH puts before site-packages.
    info = tmp_path / "deps" / "scikit_learn-0.24.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scikit-learn\nVersion: 0.24.2\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "deps")}
    reported = probe(sys.executable, env=env, cwd=tmp_path)
    assert reported is not None
    assert (reported.sklearn, reported.numpy) == ("0.24.2", THIS.numpy)


def test_an_interpreter_that_cannot_answer_gives_none(tmp_path: Path) -> None:
    assert probe(str(tmp_path / "no-such-python")) is None
    assert probe(sys.executable, env={**os.environ, "PYTHONHOME": str(tmp_path)}) is None


def test_the_serving_process_reports_its_imported_modules() -> None:
    import joblib
    import numpy
    import sklearn

    served = serving_runtime()
    assert (served.sklearn, served.numpy, served.joblib) == (
        sklearn.__version__,
        numpy.__version__,
        joblib.__version__,
    )


def test_differences_name_each_library_and_ignore_python_patch_levels() -> None:
    trained = Runtime(python="3.11.4", sklearn="1.9.1", numpy="2.4.0", joblib="1.5.0")
    same_minor = Runtime(python="3.11.9", sklearn="1.9.1", numpy="2.4.0", joblib="1.5.0")
    assert differences(trained, same_minor) == []
    other = Runtime(python="3.12.1", sklearn="1.8.0", numpy="2.4.0", joblib="")
    assert differences(trained, other) == [
        "Python 3.12.1 (trained with 3.11.4)",
        "scikit-learn 1.8.0 (trained with 1.9.1)",
    ]
    assert differences(Runtime(), other) == []  # nothing known of the training: no claim
