"""The runtime a model is trained or served with: Python, scikit-learn, numpy and joblib.

A pickled scikit-learn model is only guaranteed to load and predict the same under the
versions it was saved with, so the trainer records them for each job and every replica
reports what it serves with; the control compares the two (`differences`).

Training scripts run in their own interpreter (`JobEnvironment.python`) with their own
`PYTHONPATH` (a `requirements.txt` may pin another scikit-learn), so the trainer asks that
interpreter, in the script's environment, rather than looking at itself: `probe()` runs a
short `-c` program there that reads the installed distributions (importlib.metadata, the
first one on sys.path, which is the one `import` finds) without importing them. A replica
loads user code in-process: `serving_runtime()` reports the modules it actually imported.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Distribution names, by the field that carries their version.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "numpy": "numpy", "joblib": "joblib"}

_PROBE = f"""\
import importlib.metadata as metadata, json, platform
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""
versions = {{field: version(dist) for field, dist in {DISTRIBUTIONS!r}.items()}}
print(json.dumps({{"python": platform.python_version(), **versions}}))
"""


@dataclass(frozen=True)
class Runtime:
    """Versions of the interpreter and libraries; "" where unknown or not installed."""

    python: str = ""
    sklearn: str = ""
    numpy: str = ""
    joblib: str = ""

    def as_dict(self) -> dict[str, str]:
        """The versions by field name."""
        return asdict(self)

    @property
    def known(self) -> bool:
        """True when anything is known."""
        return any(self.as_dict().values())


# How each field is named to people.
LABELS = {"python": "Python", "sklearn": "scikit-learn", "numpy": "numpy", "joblib": "joblib"}


def probe(
    python: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 30.0,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> Runtime | None:
    """The runtime `python` offers in environment `env` (and `cwd`); None when it cannot tell.

    `wrap` turns the command into the one to run (the trainer's sandbox: user code could
    shadow a module the probe imports). Never raises: the answer only feeds descriptions and
    warnings.
    """
    command = [python, "-c", _PROBE]
    try:
        answer = subprocess.run(
            wrap(command) if wrap is not None else command,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("cannot ask %s for its library versions: %s", python, err)
        return None
    if answer.returncode != 0:
        log.warning(
            "%s could not report its library versions (exit %d): %s",
            python,
            answer.returncode,
            answer.stderr.strip()[-300:],
        )
        return None
    try:
        values = json.loads(answer.stdout.strip().splitlines()[-1])
        return Runtime(**{field: str(values.get(field, "")) for field in Runtime.__annotations__})
    except (ValueError, IndexError, TypeError) as err:
        log.warning("%s answered the version probe with %r: %s", python, answer.stdout, err)
        return None


def serving_runtime() -> Runtime:
    """This process's runtime: the version of each library module it imported, else installed."""
    versions = {"python": platform.python_version()}
    for field, dist in DISTRIBUTIONS.items():
        module = sys.modules.get(field)  # each field is named as its module
        version = getattr(module, "__version__", None) if module is not None else None
        if not isinstance(version, str):
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = ""
        versions[field] = version
    return Runtime(**versions)


def differences(trained: Runtime, serving: Runtime) -> list[str]:
    """What differs between a model's training runtime and a serving one, for people.

    Compared where both are known: scikit-learn, numpy and joblib exactly, Python by its
    minor version (3.11.4 and 3.11.9 load the same pickles). Each entry reads
    "scikit-learn 1.8.0 (trained with 1.9.1)".
    """
    found = []
    for field, label in LABELS.items():
        was, now = getattr(trained, field), getattr(serving, field)
        if not was or not now:
            continue
        same = _minor(was) == _minor(now) if field == "python" else was == now
        if not same:
            found.append(f"{label} {now} (trained with {was})")
    return found


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
