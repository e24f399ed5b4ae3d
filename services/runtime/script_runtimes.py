"""Script runtimes: the locked Python environments user code runs in.

A script runtime is a virtual environment built from one lock file, `runtimes/<name>.lock`
(exact pins, resolved by pip from `runtimes/<name>.in`). It holds the worker code's own
dependencies, the framework (scikit-learn) and what SageMaker's scikit-learn container gives
scripts (`sagemaker-training`, `sagemaker-inference`, `boto3`), plus the worker code itself and
skmaker's `sagemaker_containers` compatibility package, so `<runtime>/bin/python -m
services.inference` runs a replica whose handlers import all of them. A second runtime is one
more lock file: nothing here names a version.

Runtimes live in one folder (default `.venv-runtimes/` beside the checkout), one subfolder per
name, with a shared wheelhouse (`wheelhouse/`) so every wheel, including the two toolkits' sdists
built into wheels, is downloaded or built once. A runtime counts as built once its stamp file
(written last) records the lock it was built from, so an interrupted build is never used.

    python -m services.runtime.script_runtimes build [NAME ...|--all]  # NAME: sklearn-1.2, 1.2-1
    python -m services.runtime.script_runtimes list
    python -m services.runtime.script_runtimes python [NAME]   # the interpreter user code runs on
    python -m services.runtime.script_runtimes wheels --wheelhouse DIR  # for an offline build
    python -m services.runtime.script_runtimes lock NAME       # re-resolve NAME.in

Imports no service: the control, the trainer and the tools all ask `choose_python` which python
runs user code.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.version import Version

# `packaging` is imported where used: the main environment has it, the runtimes need not.

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this module runs from (in an installed copy: the folder holding `services/`)."""

SOURCE_ROOT = Path(os.environ.get("SKMAKER_SOURCE_DIR") or REPO_ROOT)
"""The source tree runtimes are built from (locks, worker code): this checkout, or in an image,
where the code is installed, the copy `SKMAKER_SOURCE_DIR` names (for builds on first use)."""

LOCKS_DIR = SOURCE_ROOT / "runtimes"
"""Where `<name>.in` and `<name>.lock` live."""

COMPAT_PROJECT = LOCKS_DIR / "sagemaker_containers_compat"
"""skmaker's `sagemaker_containers` package, installed into every runtime."""

DEFAULT_RUNTIMES_DIR = REPO_ROOT / ".venv-runtimes"
"""Where runtimes are built when no folder is configured."""

WHEELHOUSE = "wheelhouse"
"""The runtimes folder's subfolder of wheels shared by every runtime."""

STAMP_FILE = "skmaker-runtime.json"
"""Written inside a runtime as the last step of a successful build."""

LOCK_COPY = "skmaker-runtime.lock"
"""The lock a runtime was built from, kept inside it (an installed image has no runtimes/)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*-[0-9][0-9a-z.]*$")
# Imported by the build's check: the worker code and every library scripts are promised.
_CHECK_IMPORTS = (
    "services.inference.app",
    "services.batch.app",
    "sklearn",
    "boto3",
    "sagemaker_training.encoders",
    "sagemaker_inference.encoder",
    "sagemaker_containers.beta.framework",
)


class UnknownRuntime(ValueError):
    """A runtime name that has neither a lock nor a build."""


@dataclass(frozen=True)
class ScriptRuntime:
    """One runtime: its lock and the folder it is (or will be) built in.

    Attributes:
        name: e.g. `sklearn-1.9`.
        lock: `runtimes/<name>.lock`; may not exist in an installed image, where the copy
            inside the build stands in for it.
        root: The virtual environment's folder.
    """

    name: str
    lock: Path
    root: Path

    @property
    def python(self) -> Path:
        """The runtime's interpreter."""
        return self.root / "bin" / "python"

    def stamp(self) -> dict[str, object] | None:
        """What the last successful build recorded, or None when it is not built."""
        try:
            value = json.loads((self.root / STAMP_FILE).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) and self.python.exists() else None

    def is_built(self) -> bool:
        """Whether a build finished here (possibly from an older lock; see `is_current`)."""
        return self.stamp() is not None

    def is_current(self, *, editable: bool | None = None) -> bool:
        """Whether it is built from the lock as it is now (and, if given, the same install mode)."""
        stamp = self.stamp()
        if stamp is None:
            return False
        if self.lock.is_file() and stamp.get("lock_sha256") != _sha256(self.lock):
            return False
        return editable is None or stamp.get("editable") == editable

    def state(self) -> str:
        """`built`, `stale` (built from another lock) or `not built`."""
        if not self.is_built():
            return "not built"
        return "built" if self.is_current() else "stale"


@dataclass(frozen=True)
class PythonChoice:
    """Which python runs user code, and why.

    Attributes:
        python: The interpreter's path.
        runtime: The runtime's name; empty when it is the calling process's own python.
        note: Why the runtime is not used (or what is wrong with it); empty when all is well.
    """

    python: str
    runtime: str
    note: str = ""

    def describe(self) -> str:
        """One log line: which python, which runtime, and the note."""
        if self.runtime:
            text = f"user code runs on script runtime {self.runtime} ({self.python})"
        else:
            text = f"user code runs on this process's own python ({self.python})"
        return f"{text}: {self.note}" if self.note else text


def this_python() -> str:
    """One log line saying which python this process (and so the user code it loads) runs on."""
    try:
        stamp = json.loads((Path(sys.prefix) / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return (
            f"user code runs on {sys.executable}, which is not a script runtime: handlers "
            "cannot import the SageMaker toolkits (start it with a runtime's python, see "
            "`python -m services.runtime.script_runtimes list`)"
        )
    return f"user code runs on script runtime {stamp.get('name', '?')} ({sys.executable})"


def current_name() -> str:
    """The script runtime this process runs on (e.g. `sklearn-1.2`); empty when it is none."""
    try:
        name = json.loads((Path(sys.prefix) / STAMP_FILE).read_text()).get("name", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""


def runtimes_dir(configured: str = "") -> Path:
    """The runtimes folder: `configured`, else `.venv-runtimes` beside the checkout."""
    return Path(configured).expanduser().resolve() if configured else DEFAULT_RUNTIMES_DIR


def _version_key(name: str) -> tuple[str, Version]:
    from packaging.version import InvalidVersion, Version

    framework, _, version = name.partition("-")
    try:
        return framework, Version(version)
    except InvalidVersion:
        return framework, Version("0")


def names(configured_dir: str = "", locks_dir: Path = LOCKS_DIR) -> list[str]:
    """Every runtime that has a lock here or a build in the runtimes folder, oldest first."""
    found = {path.stem for path in locks_dir.glob("*.lock") if _NAME.match(path.stem)}
    base = runtimes_dir(configured_dir)
    if base.is_dir():
        found |= {path.parent.name for path in base.glob(f"*/{STAMP_FILE}")}
    return sorted(found, key=_version_key)


def runtime(name: str = "", configured_dir: str = "", locks_dir: Path = LOCKS_DIR) -> ScriptRuntime:
    """The runtime called `name`; empty means the newest one there is.

    Raises:
        UnknownRuntime: `name` has no lock and no build, or there is no runtime at all.
    """
    known = names(configured_dir, locks_dir)
    if not name:
        if not known:
            raise UnknownRuntime(f"no script runtime: no lock in {locks_dir}")
        name = known[-1]
    elif name not in known:
        raise UnknownRuntime(
            f"unknown script runtime {name!r}; known: {', '.join(known) or 'none'}"
        )
    return ScriptRuntime(name, locks_dir / f"{name}.lock", runtimes_dir(configured_dir) / name)


def choose_python(
    name: str = "", configured_dir: str = "", locks_dir: Path = LOCKS_DIR
) -> PythonChoice:
    """The python that runs user code: the runtime's when it is built, else this process's own.

    A worker started by hand from the main environment still works without a runtime; its
    scripts then lack the SageMaker toolkits, which the returned note says.

    Raises:
        UnknownRuntime: `name` was given and names no runtime.
    """
    try:
        chosen = runtime(name, configured_dir, locks_dir)
    except UnknownRuntime as err:
        if name:
            raise
        return PythonChoice(sys.executable, "", str(err))
    if not chosen.is_built():
        return PythonChoice(
            sys.executable,
            "",
            f"script runtime {chosen.name} is not built in {chosen.root} (run `make install` or "
            "`python -m services.runtime.script_runtimes build`); scripts cannot import the "
            "SageMaker toolkits",
        )
    note = "" if chosen.is_current() else f"built from an older {chosen.lock.name}; rebuild it"
    return PythonChoice(str(chosen.python), chosen.name, note)


def read_lock(lock: Path) -> list[tuple[str, str]]:
    """The `(name, version)` pins of a lock file (`name==version` lines; `#` comments)."""
    pins = []
    for number, raw in enumerate(lock.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{lock}:{number}: expected name==version, got {raw!r}")
        pins.append((name.strip(), version.strip()))
    return pins


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheels_present(wheelhouse: Path) -> set[tuple[str, Version]]:
    from packaging.utils import canonicalize_name, parse_wheel_filename

    present: set[tuple[str, Version]] = set()
    for wheel in wheelhouse.glob("*.whl"):
        try:
            name, version, _, _ = parse_wheel_filename(wheel.name)
        except ValueError:
            continue
        present.add((canonicalize_name(name), version))
    return present


def missing_wheels(pins: Sequence[tuple[str, str]], wheelhouse: Path) -> list[str]:
    """The `name==version` pins that have no wheel in `wheelhouse` yet."""
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    present = _wheels_present(wheelhouse) if wheelhouse.is_dir() else set()
    return [
        f"{name}=={version}"
        for name, version in pins
        if (canonicalize_name(name), Version(version)) not in present
    ]


def _run(command: Sequence[str], *, env: dict[str, str] | None = None) -> None:
    """Runs one build step; its output is shown only when it fails (pip's is long and noisy)."""
    log.debug("running %s", " ".join(command))
    done = subprocess.run(
        list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout.decode(errors="replace"))
        raise subprocess.CalledProcessError(done.returncode, list(command), output=done.stdout)


def _pip(python: Path | str, *args: str) -> list[str]:
    return [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args]


def fetch_wheels(
    rt: ScriptRuntime, wheelhouse: Path, *, find_links: Sequence[Path] = (), no_index: bool = False
) -> None:
    """Puts a wheel of every pin of `rt`'s lock into `wheelhouse`, building sdists once.

    Only pins without a wheel there are fetched, so a second call needs no network.
    """
    pins = read_lock(lock_of(rt))
    missing = missing_wheels(pins, wheelhouse)
    if not missing:
        log.info("%s: all %d wheels already in %s", rt.name, len(pins), wheelhouse)
        return
    log.info("%s: fetching or building %d wheels into %s", rt.name, len(missing), wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    links = [arg for path in (wheelhouse, *find_links) for arg in ("--find-links", str(path))]
    started = time.monotonic()
    _run(
        _pip(
            sys.executable,
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(wheelhouse),
            *links,
            *(["--no-index"] if no_index else []),
            *missing,
        )
    )
    log.info("%s: wheels ready in %.0fs", rt.name, time.monotonic() - started)


def lock_of(rt: ScriptRuntime) -> Path:
    """The lock `rt` is built from: `runtimes/<name>.lock`, else the copy inside its build.

    Raises:
        UnknownRuntime: neither exists.
    """
    if rt.lock.is_file():
        return rt.lock
    copy = rt.root / LOCK_COPY
    if copy.is_file():
        return copy
    raise UnknownRuntime(f"script runtime {rt.name} has no lock ({rt.lock})")


@contextlib.contextmanager
def _build_lock(base: Path, name: str) -> Iterator[None]:
    base.mkdir(parents=True, exist_ok=True)
    with (base / f".{name}.building").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build(
    rt: ScriptRuntime,
    *,
    editable: bool = True,
    wheelhouse: Path | None = None,
    find_links: Sequence[Path] = (),
    no_index: bool = False,
    force: bool = False,
    any_mode: bool = False,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Builds `rt` from its lock unless it is already current; returns True when it built.

    Steps, each logged: wheels into the wheelhouse (`fetch_wheels`), a fresh virtual
    environment, the pinned wheels from the wheelhouse only (`--no-index`), the worker code
    (`clients/python`, the services and the `sagemaker_containers` package; editable links to
    the checkout, or copies with `editable=False` for an image), an import check, the stamp.

    Args:
        rt: The runtime.
        editable: Link the worker code to this checkout (a developer's build) or copy it.
        wheelhouse: Where wheels are kept; default `<runtimes dir>/wheelhouse`.
        find_links: More folders of wheels to take pins from (an air-gapped build).
        no_index: Never ask the package index (every wheel must be in the folders).
        force: Rebuild even when current.
        any_mode: A build from the current lock counts as current whichever way its worker
            code was installed (an on-demand build never replaces an image's copies).
        progress: Also told each step's line (a training job's log, an endpoint's events).
    """
    lock = lock_of(rt)

    def say(text: str) -> None:
        log.info("%s", text)
        if progress is not None:
            progress(text)

    with _build_lock(rt.root.parent, rt.name):
        if not force and rt.is_current(editable=None if any_mode else editable):
            log.info("%s: up to date in %s", rt.name, rt.root)
            return False
        started = time.monotonic()
        wheels = wheelhouse or rt.root.parent / WHEELHOUSE
        say(f"{rt.name}: building from {lock.name}: wheels into {wheels}")
        fetch_wheels(rt, wheels, find_links=find_links, no_index=no_index)
        say(f"{rt.name}: creating the environment {rt.root}")
        shutil.rmtree(rt.root, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(rt.root)])
        say(f"{rt.name}: installing {lock.name}")
        _run(_pip(rt.python, "install", "--no-index", "--find-links", str(wheels), "-r", str(lock)))
        mode = "editable links to" if editable else "copies of"
        say(f"{rt.name}: installing {mode} the worker code from {SOURCE_ROOT}")
        projects = [SOURCE_ROOT / "clients" / "python", SOURCE_ROOT, COMPAT_PROJECT]
        install_args = [
            arg for path in projects for arg in (("-e", str(path)) if editable else (str(path),))
        ]
        _run(
            _pip(
                rt.python,
                "install",
                "--no-deps",
                "--no-index",
                "--no-build-isolation",
                *install_args,
            )
        )
        shutil.copyfile(lock, rt.root / LOCK_COPY)
        say(f"{rt.name}: checking that scripts can import {', '.join(_CHECK_IMPORTS)}")
        check = "; ".join(f"import {module}" for module in _CHECK_IMPORTS)
        with tempfile.TemporaryDirectory() as base_dir:
            # sagemaker_training creates SageMaker's folders under SAGEMAKER_BASE_DIR on import.
            _run([str(rt.python), "-c", check], env={**os.environ, "SAGEMAKER_BASE_DIR": base_dir})
        stamp = {
            "name": rt.name,
            "lock_sha256": _sha256(lock),
            "editable": editable,
            "python": ".".join(map(str, sys.version_info[:3])),
        }
        (rt.root / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")
        say(f"{rt.name}: built in {time.monotonic() - started:.0f}s ({rt.python})")
        return True


def ensure_built(
    rt: ScriptRuntime,
    *,
    progress: Callable[[str], None] | None = None,
    find_links: Sequence[Path] = (),
    no_index: bool = False,
    wheelhouse: Path | None = None,
) -> Path:
    """`rt`'s interpreter, built first when it is not built from its lock (a worker's first use;
    `wheelhouse` as in `build`). The build is shared (the runtimes folder) and file-locked (a
    second caller waits, then finds it built); it counts whichever way worker code was installed.

    Raises:
        UnknownRuntime: `rt` has no lock.
        subprocess.CalledProcessError: a build step failed (its output kept on the error).
    """
    if rt.is_current():
        return rt.python
    if progress is not None:
        progress(f"building runtime {rt.name} (first use; later jobs reuse it) ...")
    build(
        rt,
        editable=(SOURCE_ROOT / ".git").exists(),  # a checkout links; an image's copy copies
        wheelhouse=wheelhouse,
        find_links=find_links,
        no_index=no_index,
        any_mode=True,
        progress=progress,
    )
    return rt.python


def lock(name: str, locks_dir: Path = LOCKS_DIR) -> Path:
    """Resolves `<name>.in` with pip for this Python and writes `<name>.lock`; returns its path."""
    from packaging.utils import canonicalize_name

    source = locks_dir / f"{name}.in"
    if not source.is_file():
        raise UnknownRuntime(f"no {source}")
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        _run(
            _pip(
                sys.executable,
                "install",
                "--dry-run",
                "--ignore-installed",
                "--report",
                str(report),
                "-r",
                str(source),
            )
        )
        installs = json.loads(report.read_text())["install"]
    pins = sorted((item["metadata"]["name"], item["metadata"]["version"]) for item in installs)
    pins.sort(key=lambda pin: canonicalize_name(pin[0]))
    target = locks_dir / f"{name}.lock"
    python = ".".join(map(str, sys.version_info[:2]))
    lines = [
        f"# Script runtime {name}: every package, pinned. Generated from {source.name} for "
        f"Python {python} by",
        f"#   python -m services.runtime.script_runtimes lock {name}",
        *(f"{pin_name}=={version}" for pin_name, version in pins),
    ]
    target.write_text("\n".join(lines) + "\n")
    log.info("%s: %d pins written to %s", name, len(pins), target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m services.runtime.script_runtimes build|list|wheels|lock`."""
    parser = argparse.ArgumentParser(
        prog="python -m services.runtime.script_runtimes",
        description="Build, list and lock the script runtimes user code runs in.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--runtimes-dir",
        default=os.environ.get("SKMAKER_RUNTIMES_DIR", ""),
        help=f"where runtimes are built (env SKMAKER_RUNTIMES_DIR; default {DEFAULT_RUNTIMES_DIR})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build runtimes (default: the newest)")
    wheels_parser = commands.add_parser("wheels", help="put a runtime's wheels into a folder")
    for sub in (build_parser, wheels_parser):
        sub.add_argument(
            "names", nargs="*", help="runtime names or framework versions (default: the newest)"
        )
        sub.add_argument("--all", action="store_true", help="every runtime that has a lock")
        sub.add_argument("--wheelhouse", type=Path, help="wheel folder (default: <dir>/wheelhouse)")
        sub.add_argument("--find-links", type=Path, action="append", default=[])
        sub.add_argument("--no-index", action="store_true", help="never ask the package index")
    build_parser.add_argument(
        "--copy-worker-code",
        action="store_true",
        help="install copies of the worker code instead of links to this checkout (images)",
    )
    build_parser.add_argument("--force", action="store_true", help="rebuild even when current")
    commands.add_parser("list", help="list runtimes and their state")
    python_parser = commands.add_parser(
        "python", help="print the interpreter user code runs on (this one when none is built)"
    )
    python_parser.add_argument("name", nargs="?", default="")
    lock_parser = commands.add_parser("lock", help="resolve runtimes/NAME.in into NAME.lock")
    lock_parser.add_argument("name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="script-runtimes: %(message)s")
    try:
        if args.command == "list":
            for name in names(args.runtimes_dir):
                rt = runtime(name, args.runtimes_dir)
                print(f"{name}\t{rt.state()}\t{rt.python}")
        elif args.command == "lock":
            lock(args.name)
        elif args.command == "python":
            print(choose_python(args.name, args.runtimes_dir).python)
        else:
            chosen = names(args.runtimes_dir) if args.all else args.names or [""]
            for name in chosen:
                if name and not _NAME.match(name):  # a framework_version, e.g. 1.2-1
                    from services.runtime.framework_versions import resolve  # imports us

                    name = resolve(name, args.runtimes_dir)
                rt = runtime(name, args.runtimes_dir)
                base = rt.root.parent
                wheelhouse = args.wheelhouse or base / WHEELHOUSE
                if args.command == "wheels":
                    fetch_wheels(rt, wheelhouse, find_links=args.find_links, no_index=args.no_index)
                else:
                    build(
                        rt,
                        editable=not args.copy_worker_code,
                        wheelhouse=wheelhouse,
                        find_links=args.find_links,
                        no_index=args.no_index,
                        force=args.force,
                    )
    except (UnknownRuntime, ValueError) as err:
        print(f"script-runtimes: {err}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as err:
        print(f"script-runtimes: failed: {' '.join(map(str, err.cmd))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
