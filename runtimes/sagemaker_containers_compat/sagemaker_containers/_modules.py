"""The toolkit's `modules`: finding and importing the user's module.

skmaker installs and imports user code itself (requirements.txt, then the entry point), so of
the toolkit's module helpers only the ones that need no download are here.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def exists(name: str) -> bool:
    """Whether a module called `name` can be imported."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_module(name: str) -> ModuleType:
    """Imports the installed module `name` (the toolkit's form without a code URI)."""
    return importlib.import_module(name)
