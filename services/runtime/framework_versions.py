"""`framework_version` → script runtime: which scikit-learn a job, a model or a replica runs on.

SageMaker users pick a scikit-learn with `framework_version`, in the container's form
(`"1.2-1"`: scikit-learn 1.2, container revision 1) or as a plain version (`"1.5"`,
`"1.5.2"`). skmaker has one script runtime per scikit-learn minor version, `sklearn-<major>.
<minor>`, each built from its lock (`runtimes/sklearn-1.2.lock`; see `script_runtimes`). The
versions that can be had are the runtimes with a lock (or a build): nothing here names one.

    resolve("1.2-1") -> "sklearn-1.2"       resolve("") -> the newest runtime
    resolve("1.2.2") -> "sklearn-1.2" when its lock pins scikit-learn 1.2.2
    resolve("0.23-1") -> UnknownRuntime naming the versions that can be had

Resolution happens once, when a training job, model or transform job is created; the name is
recorded with it, so a later, newer runtime never changes what an existing model runs on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from services.runtime.script_runtimes import (
    LOCKS_DIR,
    UnknownRuntime,
    lock_of,
    names,
    read_lock,
    runtime,
)

FRAMEWORK = "sklearn"
"""The framework part of runtime names (`sklearn-1.2`)."""

FRAMEWORK_DISTRIBUTION = "scikit-learn"
"""The framework's distribution name, as pinned in the locks."""

# "1.2-1" (SageMaker's container form), "1.2", "1.2.2", "1.2.post1".
_FRAMEWORK_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+)[0-9a-z.]*)?(?:-(\d+))?$")


@dataclass(frozen=True)
class AvailableRuntime:
    """A runtime that can be had: its name and the scikit-learn its lock pins."""

    name: str
    framework_version: str

    @property
    def sagemaker_version(self) -> str:
        """SageMaker's spelling of it, e.g. `1.2-1`."""
        return f"{self.name.partition('-')[2]}-1"

    def describe(self) -> str:
        """e.g. `1.2-1 (scikit-learn 1.2.2)`."""
        return f"{self.sagemaker_version} (scikit-learn {self.framework_version or '?'})"


def available(configured_dir: str = "", locks_dir: Path = LOCKS_DIR) -> list[AvailableRuntime]:
    """Every scikit-learn runtime with a lock or a build, oldest first."""
    found = []
    for name in names(configured_dir, locks_dir):
        if not name.startswith(FRAMEWORK + "-"):
            continue
        found.append(AvailableRuntime(name, pinned_framework(name, configured_dir, locks_dir)))
    return found


def pinned_framework(name: str, configured_dir: str = "", locks_dir: Path = LOCKS_DIR) -> str:
    """The scikit-learn version runtime `name`'s lock pins ("" when it pins none)."""
    try:
        pins = read_lock(lock_of(runtime(name, configured_dir, locks_dir)))
    except (UnknownRuntime, OSError, ValueError):
        return ""
    return next((v for n, v in pins if n.lower() == FRAMEWORK_DISTRIBUTION), "")


def resolve(framework_version: str, configured_dir: str = "", locks_dir: Path = LOCKS_DIR) -> str:
    """The runtime name `framework_version` selects; empty selects the newest runtime.

    Raises:
        UnknownRuntime: the version is malformed or no runtime serves it; the message names
            the versions that can be had.
    """
    can_be_had = available(configured_dir, locks_dir)
    if not can_be_had:
        raise UnknownRuntime(f"no scikit-learn script runtime: no lock in {locks_dir}")
    wanted = framework_version.strip()
    if not wanted:
        return can_be_had[-1].name
    match = _FRAMEWORK_VERSION.match(wanted)
    choices = ", ".join(item.describe() for item in can_be_had)
    if match is None:
        raise UnknownRuntime(
            f"framework_version {wanted!r} is not a scikit-learn version such as 1.2-1, 1.5 "
            f"or 1.5.2; available: {choices}"
        )
    major, minor, patch, _revision = match.groups()
    name = f"{FRAMEWORK}-{int(major)}.{int(minor)}"
    chosen = next((item for item in can_be_had if item.name == name), None)
    if chosen is None:
        raise UnknownRuntime(
            f"framework_version {wanted!r}: no runtime has scikit-learn {int(major)}.{int(minor)}"
            f" (versions before 1.2 have no wheels for this Python); available: {choices}"
        )
    if patch is not None and not _same_release(wanted.partition("-")[0], chosen.framework_version):
        raise UnknownRuntime(
            f"framework_version {wanted!r}: runtime {name} has scikit-learn "
            f"{chosen.framework_version}, not {wanted}; available: {choices}"
        )
    return name


def _same_release(asked: str, pinned: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(asked) == Version(pinned)
    except InvalidVersion:
        return asked == pinned
