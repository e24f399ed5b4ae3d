"""Script runtimes: which lock is which runtime, when a build counts, which python runs scripts.

Building a real runtime takes a minute and is what `make install` does; the runtime it built is
exercised by tests/integration/runtime and the e2e tests. These tests use small lock folders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from services.runtime import script_runtimes
from services.runtime.script_runtimes import (
    STAMP_FILE,
    UnknownRuntime,
    choose_python,
    missing_wheels,
    names,
    read_lock,
    runtime,
)


def write_locks(folder: Path, *runtime_names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in runtime_names:
        (folder / f"{name}.lock").write_text(f"# {name}\nnumpy==2.4.6\nscikit-learn==1.9.1\n")
    return folder


def fake_build(folder: Path, name: str, lock: Path) -> Path:
    """What a finished build leaves that the choice reads: an interpreter and the stamp."""
    root = folder / name
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    stamp = {"name": name, "lock_sha256": script_runtimes._sha256(lock), "editable": True}
    (root / STAMP_FILE).write_text(json.dumps(stamp))
    return root / "bin" / "python"


def test_runtimes_are_ordered_by_version_and_the_newest_is_the_default(tmp_path: Path) -> None:
    locks = write_locks(tmp_path / "locks", "sklearn-1.9", "sklearn-1.10", "sklearn-1.2")
    assert names(str(tmp_path / "built"), locks) == ["sklearn-1.2", "sklearn-1.9", "sklearn-1.10"]
    assert runtime("", str(tmp_path / "built"), locks).name == "sklearn-1.10"
    assert runtime("sklearn-1.2", str(tmp_path / "built"), locks).root == (
        tmp_path / "built" / "sklearn-1.2"
    )


def test_an_unknown_runtime_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    locks = write_locks(tmp_path / "locks", "sklearn-1.9")
    with pytest.raises(UnknownRuntime, match=r"unknown script runtime 'sklearn-0\.23'; known: sk"):
        runtime("sklearn-0.23", str(tmp_path / "built"), locks)
    with pytest.raises(UnknownRuntime, match=r"known: sklearn-1\.9"):
        choose_python("sklearn-0.23", str(tmp_path / "built"), locks)


def test_an_unbuilt_runtime_leaves_scripts_on_this_python_and_says_so(tmp_path: Path) -> None:
    locks = write_locks(tmp_path / "locks", "sklearn-1.9")
    choice = choose_python("", str(tmp_path / "built"), locks)
    assert choice.python == sys.executable
    assert choice.runtime == ""
    assert "script runtime sklearn-1.9 is not built" in choice.describe()
    assert "make install" in choice.note


def test_a_built_runtime_runs_scripts_and_a_changed_lock_makes_it_stale(tmp_path: Path) -> None:
    locks = write_locks(tmp_path / "locks", "sklearn-1.9")
    python = fake_build(tmp_path / "built", "sklearn-1.9", locks / "sklearn-1.9.lock")
    choice = choose_python("", str(tmp_path / "built"), locks)
    assert (choice.python, choice.runtime, choice.note) == (str(python), "sklearn-1.9", "")
    assert runtime("sklearn-1.9", str(tmp_path / "built"), locks).state() == "built"

    (locks / "sklearn-1.9.lock").write_text("numpy==2.4.7\n")
    stale = runtime("sklearn-1.9", str(tmp_path / "built"), locks)
    assert stale.state() == "stale"
    assert not stale.is_current()
    choice = choose_python("", str(tmp_path / "built"), locks)
    assert choice.python == str(python)
    assert "built from an older sklearn-1.9.lock" in choice.describe()


def test_an_interrupted_build_without_its_stamp_is_not_used(tmp_path: Path) -> None:
    locks = write_locks(tmp_path / "locks", "sklearn-1.9")
    fake_build(tmp_path / "built", "sklearn-1.9", locks / "sklearn-1.9.lock")
    (tmp_path / "built" / "sklearn-1.9" / STAMP_FILE).unlink()
    assert choose_python("", str(tmp_path / "built"), locks).python == sys.executable


def test_a_build_is_found_without_its_lock_as_in_an_image(tmp_path: Path) -> None:
    locks = write_locks(tmp_path / "locks")
    elsewhere = write_locks(tmp_path / "elsewhere", "sklearn-1.9")
    python = fake_build(tmp_path / "built", "sklearn-1.9", elsewhere / "sklearn-1.9.lock")
    assert choose_python("", str(tmp_path / "built"), locks).python == str(python)


def test_lock_lines_are_exact_pins(tmp_path: Path) -> None:
    lock = tmp_path / "x-1.0.lock"
    lock.write_text("# header\nnumpy==2.4.6  # why\n\nzope.event==6.2\n")
    assert read_lock(lock) == [("numpy", "2.4.6"), ("zope.event", "6.2")]
    lock.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match=r"x-1.0.lock:1: expected name==version"):
        read_lock(lock)


def test_only_pins_without_a_wheel_are_fetched(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    (wheelhouse / "zope_event-6.2-py3-none-any.whl").write_bytes(b"")
    (wheelhouse / "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    pins = [("zope.event", "6.2"), ("NumPy", "2.4.6"), ("numpy", "2.4.7"), ("Werkzeug", "3.1.9")]
    assert missing_wheels(pins, wheelhouse) == ["numpy==2.4.7", "Werkzeug==3.1.9"]


def test_the_repository_locks_pin_the_toolkits_scripts_import() -> None:
    pins = dict(read_lock(script_runtimes.LOCKS_DIR / f"{runtime().name}.lock"))
    assert pins["sagemaker_training"].startswith("5.")
    assert pins["sagemaker_inference"].startswith("1.10.")
    assert {"boto3", "scikit-learn", "grpcio", "protobuf"} <= set(pins)


def test_a_worker_outside_a_runtime_says_its_handlers_lack_the_toolkits() -> None:
    # The test process runs on the main environment, as a worker started by hand would.
    line = script_runtimes.this_python()
    assert line.startswith(f"user code runs on {sys.executable}, which is not a script runtime")
    assert "cannot import the SageMaker toolkits" in line
