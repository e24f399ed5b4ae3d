"""Check that product modules and functions stay small enough to read.

Rules (issue 13): no product module (the services and the client, generated stubs aside) over
600 lines; no function or method over 80 lines of code (its signature and body, the docstring
not counted: documenting an argument never costs a split) unless its docstring says why, in a
paragraph that starts with "Long because" (e.g. a service's `build`, which wires every part in
one place). `make lint` runs it.

    python tools/check_sizes.py [--root DIR]

Exit status 0 when every module and function keeps to the rules, 1 otherwise (each offender is
listed with its size).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
REASON = "Long because"
PRODUCT = ("services", "clients/python/skmaker")
# Known debt: modules and functions over the limit when this check arrived, each at the size it
# had then. They may shrink, not grow; split them when their authors are not mid-change, and
# take them off this list. Empty since the splits of issue 13 (item 4); keep it so.
KNOWN_OVERSIZE: dict[str, int] = {}
SKIPPED_DIRS = frozenset({".venv", "__pycache__"})


def product_modules(root: Path) -> Iterator[Path]:
    """Every hand-written Python module of the services and the client."""
    for top in PRODUCT:
        for path in sorted((root / top).rglob("*.py")):
            if SKIPPED_DIRS.isdisjoint(path.parts) and "_pb2" not in path.name:
                yield path


def problems(path: Path, root: Path) -> Iterator[str]:
    """What in `path` breaks a rule, one line each."""
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(root).as_posix()
    lines = len(text.splitlines())
    if lines > max(MAX_MODULE_LINES, KNOWN_OVERSIZE.get(name, 0)):
        limit = max(MAX_MODULE_LINES, KNOWN_OVERSIZE.get(name, 0))
        yield f"{name}: {lines} lines (at most {limit}): split it"
    for node in ast.walk(ast.parse(text, filename=name)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1 - _docstring_lines(node)
        if length <= max(MAX_FUNCTION_LINES, KNOWN_OVERSIZE.get(f"{name}:{node.name}", 0)):
            continue
        docstring = ast.get_docstring(node) or ""
        if not any(part.strip().startswith(REASON) for part in docstring.split("\n\n")):
            yield (
                f"{name}:{node.lineno}: {node.name}() has {length} lines of code (at most "
                f"{MAX_FUNCTION_LINES}): split it, or say why in a docstring paragraph "
                f'starting "{REASON}"'
            )


def _docstring_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str):
            return (first.end_lineno or first.lineno) - first.lineno + 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    root = parser.parse_args(argv).root
    found = [problem for path in product_modules(root) for problem in problems(path, root)]
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
