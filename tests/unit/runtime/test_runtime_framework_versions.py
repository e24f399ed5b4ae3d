"""framework_version -> script runtime: what each spelling selects, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.framework_versions import available, resolve
from services.runtime.script_runtimes import UnknownRuntime


def write_locks(folder: Path, **pins: str) -> Path:
    """One lock per runtime name, pinning the given scikit-learn (`sklearn_1_2="1.2.2"`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, version in pins.items():
        name = key.replace("_", "-", 1).replace("_", ".")
        (folder / f"{name}.lock").write_text(f"numpy==1.26.4\nscikit-learn=={version}\n")
    return folder


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    return write_locks(tmp_path / "locks", sklearn_1_2="1.2.2", sklearn_1_9="1.9.1")


def test_each_spelling_of_a_version_selects_its_runtime(tmp_path: Path, locks: Path) -> None:
    built = str(tmp_path / "built")
    assert resolve("1.2-1", built, locks) == "sklearn-1.2"  # SageMaker's container form
    assert resolve("1.2", built, locks) == "sklearn-1.2"
    assert resolve("1.2.2", built, locks) == "sklearn-1.2"
    assert resolve(" 1.9-1 ", built, locks) == "sklearn-1.9"


def test_no_version_selects_the_newest(tmp_path: Path, locks: Path) -> None:
    assert resolve("", str(tmp_path / "built"), locks) == "sklearn-1.9"


@pytest.mark.parametrize("version", ["0.23-1", "1.0-1", "1.5"])
def test_a_version_without_a_runtime_is_refused_naming_the_available_ones(
    tmp_path: Path, locks: Path, version: str
) -> None:
    with pytest.raises(UnknownRuntime) as refused:
        resolve(version, str(tmp_path / "built"), locks)
    message = str(refused.value)
    assert version in message
    assert "1.2-1 (scikit-learn 1.2.2), 1.9-1 (scikit-learn 1.9.1)" in message


def test_a_patch_release_other_than_the_pinned_one_is_refused(tmp_path: Path, locks: Path) -> None:
    with pytest.raises(UnknownRuntime, match=r"has scikit-learn 1\.2\.2, not 1\.2\.1"):
        resolve("1.2.1", str(tmp_path / "built"), locks)


@pytest.mark.parametrize("version", ["latest", "1", "1.2-x", "sklearn-1.2"])
def test_a_malformed_version_is_refused(tmp_path: Path, locks: Path, version: str) -> None:
    with pytest.raises(UnknownRuntime, match=r"is not a scikit-learn version such as 1\.2-1"):
        resolve(version, str(tmp_path / "built"), locks)


def test_available_lists_runtimes_oldest_first_with_their_pins(tmp_path: Path, locks: Path) -> None:
    found = available(str(tmp_path / "built"), locks)
    assert [(item.name, item.framework_version) for item in found] == [
        ("sklearn-1.2", "1.2.2"),
        ("sklearn-1.9", "1.9.1"),
    ]
    assert [item.sagemaker_version for item in found] == ["1.2-1", "1.9-1"]


def test_the_repository_has_the_oldest_and_newest_runtimes(tmp_path: Path) -> None:
    # The locks that ship: SageMaker's oldest scikit-learn with Python 3.11 wheels, and 1.9.
    names = [item.name for item in available(str(tmp_path / "built"))]
    assert names[0] == "sklearn-1.2" and names[-1] == "sklearn-1.9"
