"""The control's script runtimes: resolving `framework_version`, and building runtimes on demand.

Training jobs, models and transform jobs record the runtime their `framework_version` selects
when they are created (`resolve`); a version no runtime serves is INVALID_ARGUMENT naming the
versions that can be had. Replicas and batch workers run user code in-process, so they start
on their model's runtime's python (`python_if_ready`): a runtime not built yet is built in the
background, once (the build itself is file-locked, so a trainer building it at the same time
is waited for), and the replicas and workers that need it start when it is ready. Trainers
build the runtimes of their jobs themselves (see the trainer).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from services.runtime import framework_versions, script_runtimes
from services.runtime.errors import InvalidArgument
from services.runtime.runtime_on_demand import build_failure

log = logging.getLogger(__name__)

# (runtime name, sentence): what the control tells about a build it runs.
BuildListener = Callable[[str, str], None]


@dataclass(frozen=True)
class RuntimeState:
    """One runtime as ListRuntimes shows it."""

    name: str
    framework_version: str
    sagemaker_framework_version: str
    state: str
    python: str
    is_default: bool


class ControlRuntimes:
    """Which runtime a resource runs on, and the runtimes' on-demand builds. Thread-safe."""

    def __init__(
        self,
        runtimes_dir: str = "",
        default: str = "",
        *,
        locks_dir: Path = script_runtimes.LOCKS_DIR,
        build: Callable[..., Path] = script_runtimes.ensure_built,
        retry_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Runtimes in `runtimes_dir` (default `.venv-runtimes/`), locks in `locks_dir`.

        `default` (the `--script-runtime` setting) is what an empty framework_version selects;
        empty means the newest runtime. `build` is `script_runtimes.ensure_built`. A failed
        build is reported for `retry_after_s`, then tried again.
        """
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._dir = runtimes_dir
        self._default = default
        self._locks_dir = locks_dir
        self._build = build
        self._lock = threading.Lock()
        self._building: dict[str, threading.Thread] = {}
        # Runtime -> (why its last build failed, when).
        self._failed: dict[str, tuple[str, float]] = {}
        self._listeners: list[BuildListener] = []

    def add_listener(self, listener: BuildListener) -> None:
        """Makes `listener` hear every line of the builds the control runs."""
        self._listeners.append(listener)

    def default_name(self) -> str:
        """The runtime an empty framework_version selects."""
        return self._default or self.resolve("")

    def resolve(self, framework_version: str) -> str:
        """The runtime `framework_version` selects (empty: the default).

        Raises:
            InvalidArgument: no runtime serves it; the message names those that can be had.
        """
        if not framework_version.strip() and self._default:
            return self._default
        try:
            return framework_versions.resolve(framework_version, self._dir, self._locks_dir)
        except script_runtimes.UnknownRuntime as err:
            raise InvalidArgument(str(err)) from None

    def runtime(self, name: str) -> script_runtimes.ScriptRuntime:
        """The runtime called `name` (empty: the default).

        Raises:
            InvalidArgument: no such runtime.
        """
        try:
            return script_runtimes.runtime(name or self.default_name(), self._dir, self._locks_dir)
        except script_runtimes.UnknownRuntime as err:
            raise InvalidArgument(str(err)) from None

    def python_if_ready(self, name: str) -> str | None:
        """Runtime `name`'s python when it is built; else None, and its build runs (once).

        An empty name is the default runtime. Raises InvalidArgument for an unknown runtime
        and RuntimeError while its last build failed (for `retry_after_s`; then it is retried).
        """
        rt = self.runtime(name)
        if rt.is_current():
            return str(rt.python)
        with self._lock:
            failure, failed_at = self._failed.get(rt.name, ("", 0.0))
            if failure and self._clock() - failed_at < self._retry_after_s:
                raise RuntimeError(failure)
            self._failed.pop(rt.name, None)
            if rt.name not in self._building:
                thread = threading.Thread(
                    target=self._run_build, args=(rt,), name=f"build-{rt.name}", daemon=True
                )
                self._building[rt.name] = thread
                thread.start()
        return None

    def last_failure(self, name: str) -> str:
        """Why the control's last build of runtime `name` failed; empty when none failed (or
        the failure is older than `retry_after_s`, when the next use builds it again)."""
        with self._lock:
            failure, failed_at = self._failed.get(name, ("", 0.0))
        return failure if failure and self._clock() - failed_at < self._retry_after_s else ""

    def is_building(self, name: str) -> bool:
        """Whether the control is building runtime `name` now."""
        with self._lock:
            return name in self._building

    def build_now(self, framework_version: str) -> Iterator[str]:
        """Builds the runtime `framework_version` selects unless it is built; yields progress.

        Raises:
            InvalidArgument: no runtime serves the version.
            RuntimeError: a build step failed.
        """
        name = self.resolve_name(framework_version)
        rt = self.runtime(name)
        lines: list[str] = []
        done = threading.Event()
        failure: list[str] = []

        def progress(text: str) -> None:
            lines.append(text)

        def run() -> None:
            try:
                self._build(rt, progress=progress)
            except (subprocess.CalledProcessError, OSError, ValueError) as err:
                failure.append(build_failure(rt.name, err))
            finally:
                done.set()

        threading.Thread(target=run, name=f"build-now-{rt.name}", daemon=True).start()
        sent = 0
        while not done.wait(0.5) or sent < len(lines):
            while sent < len(lines):
                yield lines[sent]
                sent += 1
        if failure:
            raise RuntimeError(failure[0])
        yield f"runtime {rt.name} is built ({rt.python})"

    def states(self) -> list[RuntimeState]:
        """Every runtime that can be had, oldest first."""
        default = self.default_name()
        found = []
        for item in framework_versions.available(self._dir, self._locks_dir):
            rt = script_runtimes.runtime(item.name, self._dir, self._locks_dir)
            state = "building" if self.is_building(item.name) else rt.state()
            found.append(
                RuntimeState(
                    name=item.name,
                    framework_version=item.framework_version,
                    sagemaker_framework_version=item.sagemaker_version,
                    state=state,
                    python=str(rt.python),
                    is_default=item.name == default,
                )
            )
        return found

    def resolve_name(self, asked: str) -> str:
        """The runtime `asked` names: a runtime name (sklearn-1.2) or a framework_version.

        Raises:
            InvalidArgument: no such runtime.
        """
        if asked.startswith(framework_versions.FRAMEWORK + "-"):
            self.runtime(asked)  # InvalidArgument for an unknown name
            return asked
        return self.resolve(asked)

    def _tell(self, name: str, text: str) -> None:
        for listener in self._listeners:
            try:
                listener(name, text)
            except Exception:
                log.exception("a runtime build listener failed")

    def _run_build(self, rt: script_runtimes.ScriptRuntime) -> None:
        started = time.monotonic()
        self._tell(rt.name, f"building runtime {rt.name} (first use) ...")
        try:
            self._build(rt, progress=lambda text: log.info("%s", text))
        except (subprocess.CalledProcessError, OSError, ValueError) as err:
            message = build_failure(rt.name, err)
            log.error("%s", message)
            with self._lock:
                self._failed[rt.name] = (message, self._clock())
            self._tell(rt.name, message)
        else:
            self._tell(rt.name, f"runtime {rt.name} ready in {time.monotonic() - started:.0f}s")
        finally:
            with self._lock:
                self._building.pop(rt.name, None)
