"""Every "contract §x.y" cited in the code is a heading of docs/sagemaker-contract.md.

Runs `tools/check_contract_references.py` as `make lint` does: on the repository itself (which
must pass), and on small made-up trees to show that it catches what it is meant to catch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "check_contract_references.py"

CONTRACT = """\
# The contract

## 1. Training

### 1.5 Hyperparameters

### 1.6 Entry point

## 4. Batch

### 4.1 Flow

### 4.3 DataProcessing
"""


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "sagemaker-contract.md").write_text(CONTRACT, encoding="utf-8")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_every_reference_in_the_repository_is_a_contract_heading() -> None:
    result = _check(ROOT)

    assert result.returncode == 0, result.stderr
    assert "contract references, all found" in result.stdout


def test_a_reference_to_a_missing_section_fails_naming_file_line_and_section(
    tmp_path: Path,
) -> None:
    root = _tree(
        tmp_path,
        {
            "services/trainer/job.py": (
                '"""Runs a job (contract §1.5, §1.6).\n\nUploads as contract §1.7 says."""\n'
            ),
        },
    )

    result = _check(root)

    assert result.returncode == 1
    assert "services/trainer/job.py:3: §1.7 cites §1.7" in result.stderr
    assert "§1.5" not in result.stderr
    assert "§1.6" not in result.stderr


def test_a_range_is_checked_end_to_end(tmp_path: Path) -> None:
    # §4.1-4.3 spans §4.2, which this contract lacks; §1.5-1.6 is complete.
    root = _tree(
        tmp_path,
        {"clients/python/x.py": "# contract §1.5-1.6\n# contract §4.1-4.3\n"},
    )

    result = _check(root)

    assert result.returncode == 1
    assert result.stderr.count("cites") == 1
    assert "x.py:2: §4.1-4.3 cites §4.2" in result.stderr


def test_a_reference_wrapped_onto_the_next_line_is_still_checked(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {"services/batch/scoring.py": '"""Chains requests as SageMaker (contract\n§4.4)."""\n'},
    )

    result = _check(root)

    assert result.returncode == 1
    assert "scoring.py:2: §4.4 cites §4.4" in result.stderr


def test_style_guide_sections_are_not_contract_references(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"services/batch/errors.py": '"""Status codes (style §12)."""\n'})

    result = _check(root)

    assert result.returncode == 0, result.stderr


def test_a_missing_contract_fails(tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "a.py").write_text("# contract §1.5\n", encoding="utf-8")

    result = _check(tmp_path)

    assert result.returncode == 1
    assert "docs/sagemaker-contract.md is missing" in result.stderr
