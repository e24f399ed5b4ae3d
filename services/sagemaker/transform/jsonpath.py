"""The JSONPath subset of SageMaker's DataProcessing filters (contract §4.3): parse and evaluate.

Supported, as SageMaker documents it:

| form | selects |
|---|---|
| `$` | the whole record |
| `.name`, `['name']` | one member of an object |
| `.*`, `[*]` | every member of an object (its values) or element of an array |
| `['a','b']` | several members: an object holding just those (`$['id','SageMakerOutput']`) |
| `[i]` | one element; `-1` is the last |
| `[i,j,k]`, `[a:b]`, `[:b]`, `[a:]`, mixed (`[0,5:]`) | an array of the chosen elements |

Slices include their end: `[1:4]` is elements 1, 2, 3 and 4, as AWS's documentation states
(skmaker decision, contract §8); a negative end counts from the last element (`[:-2]` drops
just the last one). Slices are clamped to the array, while an index past its end is an error.
A bracket list names members, not paths: `['a.b']` and nested brackets are refused. A step that
selects several values (`*`, a list, a slice) must be the last one. Expressions are at most 63
characters (the API's limit). Anything else (`..`, filters `[?()]`, steps `[::2]`, scripts) is
refused with a `ValueError` that says what is supported.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from services.sagemaker.transform.errors import InvalidJsonPath, RecordProcessingError

MAX_JSON_PATH_CHARS = 63

_SUPPORTED = (
    "supported: $, .name, .*, [*], ['a','b'], [i], [i,j,k], negative indexes and "
    "end-inclusive slices [a:b], [:b], [a:]"
)
# Characters a dotted member name may hold; anything else must be quoted in brackets.
_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_INDEX_ITEM = re.compile(r"\s*(?:(-?\d+)|(-?\d+)?\s*:\s*(-?\d+)?)\s*")


@dataclass(frozen=True, slots=True)
class Slice:
    """An end-inclusive slice of an array; None bounds mean its first or last element."""

    start: int | None
    end: int | None

    def select(self, items: list[Any]) -> list[Any]:
        """Return the elements from `start` through `end`, both included, clamped to `items`."""
        count = len(items)
        first = 0 if self.start is None else self.start + count if self.start < 0 else self.start
        if self.end is None:
            stop = count
        else:
            # The end is included, so the Python stop is one further; a negative end is
            # first made absolute, else `[:-1]` would become `[:0]`.
            stop = (self.end + count if self.end < 0 else self.end) + 1
        return items[max(first, 0) : max(stop, 0)]


IndexItem: TypeAlias = int | Slice


@dataclass(frozen=True, slots=True)
class Member:
    """`.name` or `['name']`: one member of an object."""

    name: str


@dataclass(frozen=True, slots=True)
class Members:
    """`['a','b']`: an object with only these members, in this order."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Wildcard:
    """`.*` or `[*]`: every value of an object, or every element of an array."""


@dataclass(frozen=True, slots=True)
class Index:
    """`[i]`: one element of an array; negative counts from the end."""

    index: int


@dataclass(frozen=True, slots=True)
class Indexes:
    """`[i,j]`, `[a:b]` or a mix: an array of the chosen elements, in the order listed."""

    items: tuple[IndexItem, ...]


Step: TypeAlias = Member | Members | Wildcard | Index | Indexes


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A parsed filter expression. Build it with `parse_json_path`.

    Attributes:
        text: The expression as written.
        steps: Its steps after `$`; empty for `$` itself.
    """

    text: str
    steps: tuple[Step, ...]

    @property
    def is_root(self) -> bool:
        """True for `$`, which selects the whole record (the filters' default)."""
        return not self.steps

    def evaluate(self, value: Any) -> Any:
        """Apply the path to a decoded record (JSON value; a CSV line is a list of fields).

        Args:
            value: The record.

        Returns:
            The selected value: the record itself for `$`, one value for single steps, a list
            or an object for the several-value steps.

        Raises:
            RecordProcessingError: The record lacks a member, an index is past the end of an
                array, or a step meets the wrong kind of value.
        """
        for step in self.steps:
            value = self._apply(step, value)
        return value

    def _apply(self, step: Step, value: Any) -> Any:
        if isinstance(step, Index):
            items = self._array(value, step)
            if not -len(items) <= step.index < len(items):
                raise self._error(f"index {step.index} is out of range for {len(items)} elements")
            return items[step.index]
        if isinstance(step, Indexes):
            items = self._array(value, step)
            chosen: list[Any] = []
            for item in step.items:
                if isinstance(item, Slice):
                    chosen.extend(item.select(items))
                elif -len(items) <= item < len(items):
                    chosen.append(items[item])
                else:
                    raise self._error(f"index {item} is out of range for {len(items)} elements")
            return chosen
        if isinstance(step, Wildcard):
            if isinstance(value, dict):
                return list(value.values())
            return list(self._array(value, step))
        names = (step.name,) if isinstance(step, Member) else step.names
        if not isinstance(value, dict):
            hint = " (a CSV line is an array of its fields: select them by index)"
            raise self._error(
                f"cannot take member {names[0]!r} of {_kind(value)}"
                + (hint if isinstance(value, list) else "")
            )
        missing = [name for name in names if name not in value]
        if missing:
            raise self._error(f"the record has no member {missing[0]!r}")
        if isinstance(step, Member):
            return value[step.name]
        return {name: value[name] for name in names}

    def _array(self, value: Any, step: Step) -> list[Any]:
        if not isinstance(value, list):
            raise self._error(f"{_describe(step)} needs an array, the record has {_kind(value)}")
        return value

    def _error(self, message: str) -> RecordProcessingError:
        return RecordProcessingError(f"JSONPath {self.text!r}: {message}")


@functools.lru_cache(maxsize=256)
def parse_json_path(text: str) -> JsonPath:
    """Parse a filter expression of the supported subset (see the module docstring).

    Cached: a worker parses the same few expressions for every mini-batch.

    Args:
        text: The expression, starting with `$`.

    Returns:
        The parsed path.

    Raises:
        InvalidJsonPath: (a `ValueError`) The expression is too long or not in the subset; the
            message names the position and what is supported.
    """
    if len(text) > MAX_JSON_PATH_CHARS:
        raise InvalidJsonPath(
            f"JSONPath {text[:20]!r}... is {len(text)} characters; at most "
            f"{MAX_JSON_PATH_CHARS} are allowed"
        )
    if not text.startswith("$"):
        raise InvalidJsonPath(f"JSONPath {text!r} must start with '$'; {_SUPPORTED}")
    steps: list[Step] = []
    position = 1
    while position < len(text):
        if steps and isinstance(steps[-1], (Members, Wildcard, Indexes)):
            raise InvalidJsonPath(
                f"JSONPath {text!r}: {_describe(steps[-1])} selects several values, so it "
                "must be the last step"
            )
        step, position = _parse_step(text, position)
        steps.append(step)
    return JsonPath(text, tuple(steps))


def _parse_step(text: str, position: int) -> tuple[Step, int]:
    char = text[position]
    if char == "[":
        return _parse_brackets(text, position)
    if char != ".":
        raise _syntax(text, position, "expected '.' or '['")
    position += 1
    if text.startswith(".", position):
        raise _syntax(text, position - 1, "recursive descent '..' is not supported")
    if text.startswith("[", position):
        # `$.field.['a','b']`: AWS's own examples put a dot before brackets.
        return _parse_brackets(text, position)
    if text.startswith("*", position):
        return Wildcard(), position + 1
    match = _NAME.match(text, position)
    if match is None:
        raise _syntax(text, position, "expected a member name after '.'")
    return Member(match.group()), match.end()


def _parse_brackets(text: str, position: int) -> tuple[Step, int]:
    close = text.find("]", position)
    if close < 0:
        raise _syntax(text, position, "'[' is never closed")
    inner = text[position + 1 : close].strip()
    end = close + 1
    if inner == "*":
        return Wildcard(), end
    if inner[:1] in ("'", '"'):
        return _members(text, position, inner), end
    if not inner:
        raise _syntax(text, position, "empty brackets")
    if inner[0] in "?(":
        raise _syntax(text, position, "filter and script expressions are not supported")
    items: list[IndexItem] = []
    for part in inner.split(","):
        match = _INDEX_ITEM.fullmatch(part)
        if match is None:
            raise _syntax(text, position, f"{part.strip()!r} is not an index or an [a:b] slice")
        single, start, stop = match.groups()
        if single is not None:
            items.append(int(single))
        else:
            items.append(Slice(_int(start), _int(stop)))
    if len(items) == 1 and isinstance(items[0], int):
        return Index(items[0]), end
    return Indexes(tuple(items)), end


def _members(text: str, position: int, inner: str) -> Member | Members:
    names: list[str] = []
    for part in inner.split(","):
        part = part.strip()
        if len(part) < 2 or part[0] not in "'\"" or part[-1] != part[0]:
            raise _syntax(text, position, f"{part!r} is not a quoted member name")
        name = part[1:-1]
        if not name or any(char in name for char in "'\".[]\\"):
            raise _syntax(
                text,
                position,
                f"member name {part} is not plain: bracket lists name members of one "
                "object and cannot nest further (write $.a['b','c'], not ['a.b'])",
            )
        names.append(name)
    if len(names) == 1:
        return Member(names[0])
    return Members(tuple(names))


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _syntax(text: str, position: int, problem: str) -> InvalidJsonPath:
    return InvalidJsonPath(f"JSONPath {text!r} at position {position}: {problem}; {_SUPPORTED}")


def _describe(step: Step) -> str:
    if isinstance(step, Wildcard):
        return "the wildcard *"
    if isinstance(step, Members):
        return "the member list [" + ",".join(f"'{name}'" for name in step.names) + "]"
    if isinstance(step, Member):
        return f"member {step.name!r}"
    if isinstance(step, Index):
        return f"index [{step.index}]"
    return "the index list or slice"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
