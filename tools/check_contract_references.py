"""Check that every "contract §x.y" the code cites is a heading of docs/sagemaker-contract.md.

Code comments and docstrings point into the SageMaker contract by section number ("contract
§1.5", "§4.1-4.4", "(§8)"). This script collects every such reference in the repository's code,
tests and documents, collects the section numbers of the contract's headings (`## 1. ...`,
`### 1.5 ...`), and fails, listing file, line and reference, when a cited section does not
exist. `make lint` runs it.

What counts as a reference: `§` followed by a section number, optionally with a range to a
second number (`§2.1-2.2`, or with an en dash; both ends and the sections between them are checked).
References to the style guide (`style §8`) are not the contract's and are skipped.

    python tools/check_contract_references.py [--root DIR]

Exit status 0 when every reference resolves, 1 otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CONTRACT = Path("docs/sagemaker-contract.md")
# Where references are looked for, relative to the root; generated stubs hold none.
SEARCHED = ("services", "clients", "tests", "benchmarks", "examples", "protos", "deploy", "docs")
SEARCHED_FILES = ("README.md",)
SUFFIXES = frozenset({".py", ".md", ".proto", ".sh", ".yml", ".yaml", ".toml", ".cfg", ".txt"})
SKIPPED_DIRS = frozenset({".venv", "__pycache__", ".git", "node_modules"})

# A section number, and optionally a range to a second one (hyphen or en dash): §1.5, § 1.5,
# §2.1-2.2.
REFERENCE = re.compile(r"§\s?(\d+(?:\.\d+)*)(?:\s?[-\u2013]\s?(\d+(?:\.\d+)*))?")
# Words just before the § that make it another document's section.
OTHER_DOCUMENT = re.compile(r"\bstyle(?: guide)?\s*$", re.IGNORECASE)
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s")


@dataclass(frozen=True)
class Reference:
    """One cited section: where it was cited, and the number as written."""

    path: Path
    line: int
    section: str
    text: str


def contract_sections(contract: Path) -> set[str]:
    """Return the section numbers of the contract's headings (`1`, `1.5`, `4.3`, ...)."""
    sections = set()
    for line in contract.read_text(encoding="utf-8").splitlines():
        match = HEADING.match(line)
        if match:
            sections.add(match.group(1))
    return sections


def _expand(first: str, last: str | None) -> list[str]:
    """Both ends of a range and the sections between them when they share a parent."""
    if last is None:
        return [first]
    if "." not in last and "." in first:
        # "§2.1-2" is read as 2.1 to 2.2, as a person would.
        last = first.rsplit(".", 1)[0] + "." + last
    head_a, _, tail_a = first.rpartition(".")
    head_b, _, tail_b = last.rpartition(".")
    if head_a == head_b and tail_a.isdigit() and tail_b.isdigit() and int(tail_a) <= int(tail_b):
        prefix = head_a + "." if head_a else ""
        return [f"{prefix}{n}" for n in range(int(tail_a), int(tail_b) + 1)]
    return [first, last]


def references_in(path: Path, text: str) -> Iterator[Reference]:
    """Yield every contract reference in one file's text."""
    for number, line in enumerate(text.splitlines(), start=1):
        for match in REFERENCE.finditer(line):
            if OTHER_DOCUMENT.search(line[: match.start()]):
                continue
            for section in _expand(match.group(1), match.group(2)):
                yield Reference(path, number, section, match.group(0))


def searched_files(root: Path) -> Iterator[Path]:
    """The files whose references are checked, in a stable order."""
    for name in SEARCHED_FILES:
        if (root / name).is_file():
            yield root / name
    for folder in SEARCHED:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if SKIPPED_DIRS.intersection(path.relative_to(root).parts):
                continue
            if path.is_file() and path.suffix in SUFFIXES and not path.name.endswith("_pb2.py"):
                yield path


def broken_references(root: Path) -> tuple[list[Reference], int]:
    """Return the references that name no section of the contract, and how many were checked.

    Raises:
        FileNotFoundError: The contract is missing.
    """
    sections = contract_sections(root / CONTRACT)
    broken: list[Reference] = []
    checked = 0
    for path in searched_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for reference in references_in(path, text):
            checked += 1
            if reference.section not in sections:
                broken.append(reference)
    return broken, checked


def main(argv: Iterable[str] | None = None) -> int:
    """Run the check; print what is broken; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(list(argv) if argv is not None else None)
    root: Path = args.root
    try:
        broken, checked = broken_references(root)
    except FileNotFoundError:
        print(f"{CONTRACT} is missing under {root}", file=sys.stderr)
        return 1
    for ref in broken:
        print(
            f"{ref.path.relative_to(root)}:{ref.line}: {ref.text} cites §{ref.section}, "
            f"which is not a heading of {CONTRACT}",
            file=sys.stderr,
        )
    if broken:
        return 1
    print(f"{checked} contract references, all found in {CONTRACT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
