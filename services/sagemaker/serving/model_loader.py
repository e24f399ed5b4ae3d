"""Gets a replica's model ready: fetch, unpack, install, set the environment, load, warm up.

`ModelLoader.load_model(source, name)` follows SageMaker's serving start-up (contract §2.1, §2.7):
describe the model, download `model.tar.gz` (the source checks its sha256) and extract it safely
into `<work_dir>/model`; take the code from the model's `source_uri` (extracted into
`<work_dir>/code`) or else from `<work_dir>/model/code`; install the bundle's `requirements.txt`
into a content-addressed cache shared by replicas and put it on `sys.path`; apply the model's
environment (plus `SAGEMAKER_PROGRAM`, `SAGEMAKER_SUBMIT_DIRECTORY`, `SAGEMAKER_REGION`,
`SAGEMAKER_BASE_DIR`) before the user's module is imported, because it may read them at import
time; then `ModelHandler.load` and a warm-up prediction. `load_local` does the same from folders
already unpacked.

Any failure becomes `ModelLoadFailed` with a one-paragraph reason a person can act on; it is what
the replica writes to its failure file. Knows nothing of grpc: the control is reached through the
`ModelSource` protocol.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.runtime.archives import MODEL_ARCHIVE_LIMITS, safe_extract_tar
from services.sagemaker.scripts.requirements import RequirementsInstallError, install_requirements
from services.sagemaker.serving import fast_path
from services.sagemaker.serving.codecs import DEFAULT_ACCEPT
from services.sagemaker.serving.handler import ModelHandler, sklearn_version_warning

log = logging.getLogger(__name__)

DEFAULT_ACCEPT_VARIABLE = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
# A failure file is read by the control into an endpoint's failure reason (SageMaker's limit).
MAX_REASON_CHARS = 1024


class ModelLoadFailed(Exception):
    """The model could not be made ready; `str(err)` is the reason for the failure file."""


@dataclass(frozen=True)
class ModelSpec:
    """A model as the control describes it (the proto `Model`, as plain values)."""

    name: str
    model_data_uri: str
    entry_point: str
    source_uri: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    training_job_name: str = ""


class ModelSource(Protocol):
    """Where a model's description and archives come from (the control, in production)."""

    def describe_model(self, name: str) -> ModelSpec:
        """The model named `name`.

        Raises:
            ModelLoadFailed: It does not exist or the control cannot be reached.
        """
        ...

    def download(self, uri: str, dest: Path) -> None:
        """Writes the artifact at `uri` to the file `dest`, its sha256 checked.

        Raises:
            ModelLoadFailed: The download failed or arrived corrupt.
        """
        ...

    def trained_sklearn_version(self, training_job_name: str) -> str | None:
        """The scikit-learn version the job trained with, or None when unknown."""
        ...


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve and how it got there."""

    handler: ModelHandler
    model_dir: Path
    code_dir: Path
    entry_point: str
    warmed_up: bool
    load_seconds: float
    predict_path: fast_path.PredictPath


class ModelLoader:
    """Prepares one model in a replica's work folder.

    Args:
        work_dir: The replica's own folder; `model/` and `code/` are created inside.
        deps_dir: The shared requirements cache (content-addressed, safe across replicas).
        environ: The process environment (`os.environ` in the replica); the model's
            environment is written into it, as the user's code reads it from there.
        region: `SAGEMAKER_REGION` unless the model's environment sets it.
        pip_timeout_s: Time limit for installing `requirements.txt`.
        python: The interpreter whose pip installs the requirements (this one).
    """

    def __init__(
        self,
        work_dir: Path,
        deps_dir: Path,
        environ: MutableMapping[str, str],
        *,
        region: str = "local",
        pip_timeout_s: float = 900.0,
        python: str = sys.executable,
    ) -> None:
        self._work_dir = work_dir
        self._deps_dir = deps_dir
        self._environ = environ
        self._region = region
        self._pip_timeout_s = pip_timeout_s
        self._python = python

    def load_model(self, source: ModelSource, name: str) -> LoadedModel:
        """Describe, download, unpack and load model `name` from `source`.

        Raises:
            ModelLoadFailed: Any step failed; the message says which and why.
        """
        started = time.monotonic()
        spec = source.describe_model(name)
        if not spec.model_data_uri:
            raise ModelLoadFailed(f"model {name!r} has no model data URI")
        model_dir = self._work_dir / "model"
        self._fetch_archive(source, spec.model_data_uri, "model.tar.gz", model_dir)
        if spec.source_uri:
            code_dir = self._work_dir / "code"
            self._fetch_archive(source, spec.source_uri, "sourcedir.tar.gz", code_dir)
        else:
            code_dir = model_dir / "code"
        trained_with = (
            source.trained_sklearn_version(spec.training_job_name)
            if spec.training_job_name
            else None
        )
        return self._load(
            model_dir, code_dir, spec.entry_point, spec.environment, trained_with, started
        )

    def load_local(self, model_dir: Path, code_dir: Path | None, entry_point: str) -> LoadedModel:
        """Load a model from folders already unpacked (standalone replicas, tests, benchmarks).

        Args:
            model_dir: The unpacked model archive.
            code_dir: The folder holding the entry point; None means `model_dir/code`.
            entry_point: The script defining `model_fn`.

        Raises:
            ModelLoadFailed: Any step failed; the message says which and why.
        """
        started = time.monotonic()
        if not model_dir.is_dir():
            raise ModelLoadFailed(f"model folder {model_dir} does not exist")
        code = code_dir if code_dir is not None else model_dir / "code"
        return self._load(model_dir, code, entry_point, {}, None, started)

    def _fetch_archive(self, source: ModelSource, uri: str, file_name: str, dest: Path) -> None:
        archive = self._work_dir / "downloads" / file_name
        source.download(uri, archive)
        # A replacement replica may reuse the folder: leftovers of an older model must not mix in.
        shutil.rmtree(dest, ignore_errors=True)
        try:
            safe_extract_tar(archive, dest, MODEL_ARCHIVE_LIMITS)
        except ValueError as err:
            raise ModelLoadFailed(f"cannot unpack {file_name} from {uri}: {err}") from err
        finally:
            # The extracted copy is what serves; the archive would only double the disk use.
            archive.unlink(missing_ok=True)

    def _load(
        self,
        model_dir: Path,
        code_dir: Path,
        entry_point: str,
        environment: dict[str, str],
        trained_with: str | None,
        started: float,
    ) -> LoadedModel:
        self._install_requirements(code_dir)
        self._apply_environment(code_dir, entry_point, environment)
        default_accept = self._environ.get(DEFAULT_ACCEPT_VARIABLE) or DEFAULT_ACCEPT
        try:
            handler = ModelHandler.load(model_dir, code_dir, entry_point, default_accept)
            # Before the warm-up, so that it runs through the path that will serve.
            handler, predict_path = fast_path.apply(handler, self._environ)
            warmed_up = handler.warm_up()
        except Exception as err:
            # HandlerLoadError carries the actionable sentence ("... defines no model_fn: ...").
            raise ModelLoadFailed(str(err)) from err
        warning = sklearn_version_warning(trained_with)
        if warning:
            log.warning("%s", warning)
        log.info("%s", predict_path.describe())
        return LoadedModel(
            handler=handler,
            model_dir=model_dir,
            code_dir=code_dir,
            entry_point=entry_point,
            warmed_up=warmed_up,
            load_seconds=time.monotonic() - started,
            predict_path=predict_path,
        )

    def _install_requirements(self, code_dir: Path) -> None:
        def forward(stream: str, text: str, timestamp: float) -> None:
            log.info("pip %s: %s", stream, text)

        try:
            deps = install_requirements(
                code_dir,
                self._deps_dir,
                self._python,
                forward,
                env=dict(self._environ),
                timeout_s=self._pip_timeout_s,
            )
        except RequirementsInstallError as err:
            raise ModelLoadFailed(err.message) from err
        if deps is not None and str(deps) not in sys.path:
            # Before site-packages, so the bundle's pins win over the replica's own packages,
            # as they would in SageMaker's container after `pip install -r requirements.txt`.
            sys.path.insert(0, str(deps))

    def _apply_environment(
        self, code_dir: Path, entry_point: str, environment: dict[str, str]
    ) -> None:
        self._environ.update(environment)
        self._environ["SAGEMAKER_PROGRAM"] = entry_point
        self._environ["SAGEMAKER_SUBMIT_DIRECTORY"] = str(code_dir)
        self._environ.setdefault("SAGEMAKER_REGION", self._region)
        # SageMaker's folder layout with the model in `model/`: sagemaker_training's
        # environment reads its paths from here, and creates a home-folder tree without it.
        self._environ.setdefault("SAGEMAKER_BASE_DIR", str(self._work_dir))


def failure_reason(err: BaseException) -> str:
    """One paragraph for the failure file: the error's message, on one line, within the limit."""
    text = str(err) if isinstance(err, ModelLoadFailed) else f"{type(err).__name__}: {err}"
    text = " ".join(text.split()) or type(err).__name__
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text
