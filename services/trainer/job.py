"""Runs one training job in a SageMaker-style workspace, from download to upload.

The steps and the secondary statuses they report are SageMaker's: Downloading (source bundle
and channels), Training (requirements.txt, then the entry point as a script — never imported),
Uploading (`model/` -> model.tar.gz, `output/data/` -> output.tar.gz, also after a stop or
max_run, because what the script saved is worth keeping). The job talks to the outside world
only through the two small protocols below, so it can be exercised without a control.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from services.runtime import archives
from services.runtime.versions import Runtime, probe
from services.sagemaker.scripts import requirements, runner
from services.trainer import hyperparameters, workspace
from services.trainer.sandbox import Sandbox, is_inside_without_links

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_PREFIX = "store://jobs"
MODEL_ARCHIVE = "model.tar.gz"
OUTPUT_ARCHIVE = "output.tar.gz"
CLIENT_ERROR = "ClientError: "
# SageMaker's prefix for the platform's own faults (a runtime that could not be built).
INTERNAL_ERROR = "InternalServerError: "
# The secondary status of a job whose script runtime is being built (SageMaker's name for
# getting the training environment ready); the control's message names the runtime.
PREPARING_STATUS = "PreparingTrainingStack"


@dataclass(frozen=True)
class ChannelSpec:
    """One input channel: its name, where the data is, and its optional content type."""

    name: str
    uri: str
    content_type: str = ""


@dataclass(frozen=True)
class TrainingAssignment:
    """Everything a worker needs to run one attempt of a training job."""

    job_name: str
    attempt: int
    entry_point: str
    source_uri: str
    hyperparameters: Mapping[str, str]
    channels: Sequence[ChannelSpec]
    metric_definitions: Sequence[tuple[str, str]]
    environment: Mapping[str, str]
    max_runtime_s: float
    output_uri: str = ""
    shell_compat: bool = False
    # The sha256 the job's source bundle must have (empty from a control that sends none).
    source_sha256: str = ""
    # Where to download the bundle (the copy kept under its digest); empty: source_uri.
    source_bundle_uri: str = ""
    # The script runtime the control chose (framework_version); empty: the worker's default.
    script_runtime: str = ""


@dataclass(frozen=True)
class JobOutcome:
    """How an attempt ended.

    `outcome` is one of runner's SUCCEEDED, FAILED, STOPPED, MAX_RUNTIME_EXCEEDED.
    """

    outcome: str
    failure_reason: str = ""
    model_artifact_uri: str = ""
    output_artifact_uri: str = ""
    # What the script's interpreter offered it (None when the script never started).
    versions: Runtime | None = None


class JobReporter(Protocol):
    """Where a running job sends its progress; implemented over heartbeats by the worker."""

    def log_line(self, stream: str, text: str, timestamp: float) -> None:
        """One line of output (stream: stdout, stderr or platform)."""

    def metric(self, name: str, value: float, timestamp: float) -> None:
        """One parsed metric value."""

    def secondary_status(self, status: str) -> None:
        """A new SageMaker secondary status (Downloading, Training, Uploading)."""


class ArtifactAccess(Protocol):
    """The artifact store as a job needs it."""

    def download_file(self, uri: str, dest: Path) -> None:
        """Downloads one object to a local file."""

    def download_prefix(self, uri: str, dest_dir: Path) -> list[Path]:
        """Downloads everything at or below `uri` into `dest_dir`."""

    def upload_file(self, path: Path, uri: str) -> str:
        """Uploads a local file; returns the stored URI."""


@dataclass(frozen=True)
class JobEnvironment:
    """Worker-level facts a job runs with."""

    python: str
    deps_root: Path
    base_environment: Mapping[str, str]
    stop_grace_s: float = runner.DEFAULT_GRACE_S
    pip_timeout_s: float = 900.0
    # Where user code runs (job user, cgroup, limits); None runs it as a plain child.
    sandbox: Sandbox | None = None
    # `file://` channels must lie below one of these folders; none: no file:// channels.
    file_channel_roots: tuple[Path, ...] = ()
    # How far a source bundle may unpack (bytes, members, ratio to its size).
    archive_limits: archives.ArchiveLimits = archives.DEFAULT_ARCHIVE_LIMITS
    # (runtime name, progress line sink) -> its interpreter, built first when it is not (the
    # sink hears lines only while it builds); RuntimeUnavailable when the worker has no such
    # runtime, RuntimeBuildFailed when building it failed; None runs every job on `python`.
    python_for: Callable[[str, Callable[[str], None]], str] | None = None


class RuntimeUnavailable(Exception):
    """A job's script runtime is unknown to this worker."""


class RuntimeBuildFailed(Exception):
    """A job's script runtime could not be built: the platform's fault, not the job's."""


class JobClientError(Exception):
    """The job's own inputs are unusable (missing data, entry point not in the bundle)."""


def _check_bundle_digest(bundle: Path, expected: str) -> None:
    """Raises ValueError unless the downloaded bundle has the sha256 the job is bound to."""
    if not expected:
        return
    digest = hashlib.sha256()
    with bundle.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"the downloaded bundle has sha256 {digest.hexdigest()}, but the job is bound to "
            f"{expected}: it is not the job's code"
        )


def _write_marker(path: Path, root: Path) -> None:
    """Creates the empty file `path` unless user code put a link on its way (see sandbox)."""
    if not is_inside_without_links(path.parent, root):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        log.warning("cannot write %s: %s", path, err)
        return
    os.close(fd)


def artifact_prefix(assignment: TrainingAssignment) -> str:
    """Where this job's archives go: `<output_uri>/<job>/output/` (SageMaker's layout)."""
    base = (assignment.output_uri or DEFAULT_OUTPUT_PREFIX).rstrip("/")
    return f"{base}/{assignment.job_name}/output"


@dataclass
class TrainingJobRun:
    """One attempt of a training job. `run()` never raises for job-level problems.

    Attributes:
        stop_requested: set it to end the script (SIGTERM, grace, SIGKILL) and upload what
            it saved; the outcome is then STOPPED.
        abandoned: set it when the attempt was superseded or the worker is shutting down:
            the script is ended the same way but nothing is uploaded.
    """

    assignment: TrainingAssignment
    root: Path
    reporter: JobReporter
    artifacts: ArtifactAccess
    env: JobEnvironment
    stop_requested: threading.Event = field(default_factory=threading.Event)
    abandoned: threading.Event = field(default_factory=threading.Event)
    # The runtime the script ran with, asked of its interpreter once its environment is known.
    runtime: Runtime | None = None

    def _platform_line(self, text: str) -> None:
        self.reporter.log_line("platform", text, time.time())

    def run(self) -> JobOutcome:
        """Downloads, trains and uploads; returns how the attempt ended."""
        try:
            self._choose_python()
            ws = self._prepare()
            result = self._train(ws)
        except JobClientError as err:
            reason = (CLIENT_ERROR + str(err))[: runner.FAILURE_REASON_LIMIT]
            self._platform_line(reason)
            return JobOutcome(runner.FAILED, reason, versions=self.runtime)
        except requirements.RequirementsInstallError as err:
            return JobOutcome(runner.FAILED, err.failure_reason, versions=self.runtime)
        except RuntimeBuildFailed as err:
            reason = (INTERNAL_ERROR + str(err))[: runner.FAILURE_REASON_LIMIT]
            self._platform_line(reason)
            return JobOutcome(runner.FAILED, reason)
        if self.abandoned.is_set() or result.outcome == runner.FAILED:
            return JobOutcome(result.outcome, result.failure_reason, versions=self.runtime)
        if result.outcome == runner.SUCCEEDED:
            _write_marker(ws.success_file, self.root)
        model_uri, output_uri = self._upload(ws)
        return JobOutcome(
            result.outcome, result.failure_reason, model_uri, output_uri, self.runtime
        )

    def _choose_python(self) -> None:
        """Runs the script on its job's runtime, built first on its first use.

        While it is built the job's secondary status is PreparingTrainingStack and the build's
        steps go to its log.
        """
        name = self.assignment.script_runtime
        if not name or self.env.python_for is None:
            return
        building: list[str] = []

        def progress(text: str) -> None:
            if not building:
                building.append(name)
                self.reporter.secondary_status(PREPARING_STATUS)
            self._platform_line(text)

        try:
            python = self.env.python_for(name, progress)
        except RuntimeUnavailable as err:
            raise JobClientError(str(err)) from err
        self._platform_line(f"script runtime {name}: {python}")
        self.env = replace(self.env, python=python)

    def _prepare(self) -> workspace.Workspace:
        """Lays out the workspace and fetches code and data (secondary status Downloading)."""
        assignment = self.assignment
        self.reporter.secondary_status("Downloading")
        if self.root.exists():
            shutil.rmtree(self.root)  # a previous attempt of this job on this worker
        ws = workspace.create(self.root)
        channels = {
            c.name: workspace.ChannelConfig(content_type=c.content_type or None)
            for c in assignment.channels
        }
        try:
            workspace.write_config_files(ws, assignment.hyperparameters, channels)
        except ValueError as err:
            raise JobClientError(str(err)) from err
        self._fetch_code(ws)
        for channel in assignment.channels:
            self._fetch_channel(ws, channel)
        self._home(ws).mkdir()
        if self.env.sandbox is not None:
            self.env.sandbox.give(self.root)  # the job user owns its workspace, nothing else
        return ws

    def _home(self, ws: workspace.Workspace) -> Path:
        return ws.root / "home"

    def _fetch_code(self, ws: workspace.Workspace) -> None:
        bundle = self.root / "sourcedir.tar.gz"
        try:
            bundle_uri = self.assignment.source_bundle_uri or self.assignment.source_uri
            self.artifacts.download_file(bundle_uri, bundle)
            _check_bundle_digest(bundle, self.assignment.source_sha256)
            archives.safe_extract_tar(bundle, ws.code_dir, self.env.archive_limits)
        except (OSError, ValueError) as err:
            raise JobClientError(f"cannot unpack the source bundle: {err}") from err
        finally:
            bundle.unlink(missing_ok=True)
        entry = ws.code_dir / self.assignment.entry_point
        if not entry.is_file():
            present = sorted(p.name for p in ws.code_dir.iterdir())[:10]
            raise JobClientError(
                f"entry point {self.assignment.entry_point!r} is not in the source bundle "
                f"(it holds: {', '.join(present) or 'nothing'})"
            )

    def _fetch_channel(self, ws: workspace.Workspace, channel: ChannelSpec) -> None:
        target = ws.channel_dir(channel.name)
        self._platform_line(f"downloading channel {channel.name} from {channel.uri}")
        if channel.uri.startswith("file://"):
            source = Path(unquote(urlparse(channel.uri).path))
            self._check_file_channel(channel.name, source)
            if not source.exists():
                raise JobClientError(f"channel {channel.name!r}: {source} does not exist")
            sandbox = self.env.sandbox
            if sandbox is not None and not sandbox.can_reach(source):
                # Linked data the job user cannot read is no data: copy what the operator
                # allowed (links inside stay links, so nothing outside the roots comes along).
                self._platform_line(f"copying {source}: the job user cannot reach it")
                if source.is_dir():
                    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
                else:
                    shutil.copy2(source, target / source.name, follow_symlinks=False)
                return
            # Local data is linked, not copied: the embedded default trains in seconds even
            # on big local folders. Scripts only read channels.
            if source.is_dir():
                target.rmdir()
                target.symlink_to(source, target_is_directory=True)
            else:
                (target / source.name).symlink_to(source)
            return
        try:
            written = self.artifacts.download_prefix(channel.uri, target)
        except (OSError, ValueError) as err:
            raise JobClientError(f"channel {channel.name!r}: {err}") from err
        if not written:
            raise JobClientError(f"channel {channel.name!r}: nothing found at {channel.uri}")

    def _check_file_channel(self, name: str, source: Path) -> None:
        roots = self.env.file_channel_roots
        if not roots:
            raise JobClientError(
                f"channel {name!r}: file:// channels are turned off on this trainer (its "
                "operator allows folders with --file-channel-roots); use store:// data"
            )
        real = Path(os.path.realpath(source))
        if not any(real == root or root in real.parents for root in roots):
            raise JobClientError(
                f"channel {name!r}: {source} is outside the folders this trainer allows for "
                f"file:// channels ({', '.join(str(r) for r in roots)})"
            )

    def _script_environment(self, ws: workspace.Workspace, deps_dir: Path | None) -> dict[str, str]:
        """The job's environment with the job user's HOME and names."""
        env = self._environment(ws, deps_dir)
        env["HOME"] = str(self._home(ws))
        if self.env.sandbox is not None:
            env["USER"] = env["LOGNAME"] = self.env.sandbox.user.name
        return env

    def _environment(self, ws: workspace.Workspace, deps_dir: Path | None) -> dict[str, str]:
        assignment = self.assignment
        channels = {
            c.name: workspace.ChannelConfig(content_type=c.content_type or None)
            for c in assignment.channels
        }
        try:
            return workspace.build_environment(
                ws,
                job_name=assignment.job_name,
                entry_point=assignment.entry_point,
                hyperparameters_encoded=assignment.hyperparameters,
                channels=channels,
                module_dir_uri=assignment.source_uri,
                user_environment=assignment.environment,
                base_environment=self.env.base_environment,
                deps_dir=deps_dir,
            )
        except ValueError as err:
            raise JobClientError(str(err)) from err

    def _train(self, ws: workspace.Workspace) -> runner.RunResult:
        """Installs requirements and runs the entry point (secondary status Training)."""
        assignment = self.assignment
        self.reporter.secondary_status("Training")
        try:
            parser = runner.MetricParser(assignment.metric_definitions)
        except ValueError as err:
            raise JobClientError(str(err)) from err

        def on_line(stream: str, text: str, timestamp: float) -> None:
            self.reporter.log_line(stream, text, timestamp)
            for name, value in parser.parse(text):
                self.reporter.metric(name, value, timestamp)

        stop = threading.Event()
        watcher = threading.Thread(target=self._relay_stop, args=(stop,), daemon=True)
        watcher.start()
        try:
            deps_dir = requirements.install_requirements(
                ws.code_dir,
                self.env.deps_root,
                self.env.python,
                on_line,
                env=self._script_environment(ws, None),
                timeout_s=self.env.pip_timeout_s,
                stop_requested=stop,
                sandbox=self.env.sandbox,
            )
            env = self._script_environment(ws, deps_dir)
            decoded = hyperparameters.decode_hyperparameters(assignment.hyperparameters)
            user_hps, _framework = hyperparameters.split_hyperparameters(decoded)
            tokens = hyperparameters.render_argv_tokens(user_hps)
            try:
                command = hyperparameters.command_for_entry_point(
                    assignment.entry_point,
                    ws.code_dir,
                    tokens,
                    self.env.python,
                    shell_compat=assignment.shell_compat,
                )
            except ValueError as err:
                raise JobClientError(str(err)) from err
            self._platform_line(f"running {' '.join(command)}")
            # Asked beside the script, in its environment, so it costs the job no time.
            prober = threading.Thread(
                target=self._probe_runtime, args=(env, ws.code_dir), name="runtime-probe"
            )
            prober.start()
            try:
                return runner.ScriptRunner(on_line).run(
                    command,
                    cwd=ws.code_dir,
                    env=env,
                    max_runtime_s=assignment.max_runtime_s or None,
                    stop_requested=stop,
                    grace_s=self.env.stop_grace_s,
                    failure_file=ws.failure_file,
                    box=self.env.sandbox.box("job") if self.env.sandbox is not None else None,
                )
            finally:
                prober.join()
        finally:
            stop.set()  # also ends the watcher thread
            watcher.join()

    def _probe_runtime(self, env: dict[str, str], code_dir: Path) -> None:
        # The probe runs in the job's folder and PYTHONPATH, where a json.py of the bundle
        # would be imported: it runs as the job user, like the script.
        sandbox = self.env.sandbox
        wrap = sandbox.box("probe").wrap if sandbox is not None else None
        self.runtime = probe(self.env.python, env=env, cwd=code_dir, wrap=wrap)

    def _relay_stop(self, stop: threading.Event) -> None:
        # The runner polls one event; a stop and an abandonment both end the script.
        while not stop.is_set():
            if self.stop_requested.is_set() or self.abandoned.is_set():
                stop.set()
                return
            stop.wait(0.05)

    def _upload(self, ws: workspace.Workspace) -> tuple[str, str]:
        """Packs and uploads model/ and output/data/ (secondary status Uploading)."""
        self.reporter.secondary_status("Uploading")
        prefix = artifact_prefix(self.assignment)
        uploaded = []
        archive_sources = ((ws.model_dir, MODEL_ARCHIVE), (ws.output_data_dir, OUTPUT_ARCHIVE))
        for source_dir, name in archive_sources:
            archive = self.root / name
            if not is_inside_without_links(source_dir, self.root):
                # The script replaced the folder by a link: packing it with the trainer's
                # rights would upload whatever the link points to.
                self._platform_line(f"{source_dir.name}/ is a link, not a folder: not packed")
                source_dir = Path(tempfile.mkdtemp(prefix=".empty-", dir=self.root))
            archives.make_tar_gz(source_dir, archive)
            uri = self.artifacts.upload_file(archive, f"{prefix}/{name}")
            archive.unlink(missing_ok=True)
            self._platform_line(f"uploaded {uri}")
            uploaded.append(uri)
        return uploaded[0], uploaded[1]
