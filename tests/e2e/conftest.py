"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import sys
import time

import pytest

from services.runtime import framework_versions, script_runtimes


@pytest.fixture(scope="session")
def oldest_and_newest_runtimes() -> dict[str, str]:
    """The oldest and the newest script runtime, built once into `.venv-runtimes/` (as
    `make install` builds the newest) and reused by later runs; name -> interpreter.

    A first build of the oldest takes minutes: `make test` does it before pytest starts
    (`script_runtimes build --all`), so a test's timeout never pays for it; its time is
    printed either way.
    """
    found = framework_versions.available()
    built = {}
    for item in (found[0], found[-1]):
        rt = script_runtimes.runtime(item.name)
        started = time.monotonic()
        python = script_runtimes.ensure_built(rt)
        if time.monotonic() - started > 1:
            sys.stderr.write(f"built {rt.name} in {time.monotonic() - started:.0f}s\n")
        built[item.name] = str(python)
    return built
