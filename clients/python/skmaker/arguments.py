"""The one warning about arguments skmaker ignores, shared by every SageMaker-shaped class."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any


def warn_ignored(
    arguments: Mapping[str, Any],
    allowed: Iterable[str],
    caller: str,
    *,
    known: Iterable[str] = (),
    stacklevel: int = 3,
) -> None:
    """Warns once about the arguments skmaker ignores: SageMaker-only ones given a value, and
    ones SageMaker's `caller` does not have (old SDK v1 code passes `script_mode=True`, ...).

    Never raises: code written for SageMaker runs, with one warning naming what was ignored
    (and, for a likely typo, the parameter of `known` or `allowed` it resembles).
    """
    allowed = set(allowed)
    unknown = sorted(set(arguments) - allowed)
    ignored = sorted(
        name for name, value in arguments.items() if value is not None and name not in unknown
    )
    parts = []
    if ignored:
        parts.append("skmaker ignores these SageMaker-only arguments: " + ", ".join(ignored))
    if unknown:
        candidates = sorted(allowed | set(known))
        named = []
        for name in unknown:
            close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
            named.append(f"{name} (did you mean {close[0]}?)" if close else name)
        parts.append(
            f"skmaker ignores these arguments, which {caller}() does not know: " + ", ".join(named)
        )
    if parts:
        warnings.warn("; ".join(parts), UserWarning, stacklevel=stacklevel)
