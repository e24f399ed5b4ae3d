"""`tools/check_sizes.py`, run as `make lint` runs it: on the repository, and on made-up trees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "check_sizes.py"


def run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


def function(name: str, code_lines: int, docstring: str = "") -> str:
    doc = f'    """{docstring}"""\n' if docstring else ""
    body = "".join(f"    x{i} = {i}\n" for i in range(code_lines - 1))
    return f"def {name}():\n{doc}{body}"


def tree(tmp_path: Path, text: str) -> Path:
    module = tmp_path / "services" / "demo" / "module.py"
    module.parent.mkdir(parents=True)
    module.write_text(text)
    (tmp_path / "clients" / "python" / "skmaker").mkdir(parents=True)
    return tmp_path


def test_the_repository_keeps_to_the_rules() -> None:
    result = run(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_module_over_600_lines_fails(tmp_path: Path) -> None:
    result = run(tree(tmp_path, "x = 1\n" * 601))
    assert result.returncode == 1
    assert "services/demo/module.py: 601 lines (at most 600)" in result.stderr


def test_a_long_function_fails_unless_its_docstring_says_why(tmp_path: Path) -> None:
    result = run(tree(tmp_path, function("long", 81)))
    assert result.returncode == 1
    assert "long() has 81 lines of code (at most 80)" in result.stderr

    reasoned = function("long", 81, "Wires things.\n\n    Long because it wires everything.\n")
    assert run(tree(tmp_path / "b", reasoned)).returncode == 0


def test_docstring_lines_do_not_count(tmp_path: Path) -> None:
    documented = function("short", 80, "Does it.\n" + "    An argument.\n" * 40)
    assert run(tree(tmp_path, documented)).returncode == 0
