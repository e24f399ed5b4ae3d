"""Validation of CreateTrainingJob: SageMaker's limits, plus checks that the inputs exist.

`validate_training_job` raises the first problem it finds, with a message that names the field
and what to do, and returns the spec with defaults filled in (max runtime, output path). Static
checks come first; the artifact store is only read for a spec that is otherwise valid.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path, PurePosixPath

from services.control.artifacts.base import SCHEME, ArtifactStore, key_of, s3_bucket_uri
from services.control.names import Resource, require_channel_name, require_resource_name
from services.control.training.values import DEFAULT_MAX_RUNTIME_S, TrainingJobSpec
from services.runtime.archives import (
    DEFAULT_ARCHIVE_LIMITS,
    ArchiveLimits,
    ArchiveTooLarge,
    list_tar_files,
)
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

ENVIRONMENT_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")

MAX_CHANNELS = 20
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_KEY_CHARS = 256
MAX_HYPERPARAMETER_VALUE_CHARS = 2500
MAX_METRIC_DEFINITIONS = 40
MAX_METRIC_NAME_CHARS = 255
MAX_METRIC_REGEX_CHARS = 500
MAX_ENVIRONMENT_ENTRIES = 100
MAX_RUNTIME_S = 28 * 86_400
FILE_SCHEME = "file://"
# The default output path (SageMaker's output_path): the trainer appends <job>/output, so
# archives land at store://jobs/<job>/output/model.tar.gz, beside the code under store://jobs.
DEFAULT_OUTPUT_KEY = "jobs"
# How many bundle members a "not in the bundle" message lists.
_MEMBERS_SHOWN = 8


class _RecentListings:
    """The file lists of the last few bundle versions read, by sha256 and limits."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lists: OrderedDict[tuple[str, ArchiveLimits], list[str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ArchiveLimits]) -> list[str] | None:
        with self._lock:
            found = self._lists.get(key)
            if found is not None:
                self._lists.move_to_end(key)
            return found

    def put(self, key: tuple[str, ArchiveLimits], files: list[str]) -> None:
        with self._lock:
            self._lists[key] = files
            while len(self._lists) > self._size:
                self._lists.popitem(last=False)


_BUNDLE_FILES = _RecentListings(256)


def validate_job_name(name: str) -> None:
    """Raises InvalidArgument unless `name` follows SageMaker's training-job name rule."""
    require_resource_name(Resource.TRAINING_JOB, name)


def validate_training_job(
    name: str,
    spec: TrainingJobSpec,
    artifacts: ArtifactStore,
    archive_limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
) -> TrainingJobSpec:
    """Checks a job's spec; returns it with defaults filled in and the bundle's sha256.

    Args:
        name: the job name (already checked by `validate_job_name`).
        spec: the spec as asked.
        artifacts: the store holding the source bundle and store:// channels.
        archive_limits: how far the source bundle may unpack.

    Raises:
        InvalidArgument: a field breaks a rule, the entry point is not in the bundle.
        ResourceExhausted: the source bundle unpacks beyond `archive_limits`.
        FailedPrecondition: the bundle's sha256 is not the `source_sha256` asked for.
        NotFound: the source bundle, a store:// channel or a file:// path does not exist.
    """
    _check_entry_point_path(spec.entry_point)
    source_key = _store_key("source_uri", spec.source_uri)
    _check_channel_names(spec)
    _check_hyperparameters(spec)
    _check_metric_definitions(spec)
    _check_environment(spec)
    max_runtime_s = _max_runtime(spec.max_runtime_seconds)
    output_uri = SCHEME + (
        _store_key("output_uri", spec.output_uri) if spec.output_uri else DEFAULT_OUTPUT_KEY
    )
    if spec.source_sha256 and not _SHA256.fullmatch(spec.source_sha256):
        raise InvalidArgument(f"source_sha256 {spec.source_sha256[:80]!r} is not 64 hex digits")
    sha256 = _check_bundle_holds_entry_point(spec, source_key, artifacts, archive_limits)
    for channel in spec.channels:
        _check_channel_exists(channel.name, channel.uri, artifacts)
    return replace(
        spec, max_runtime_seconds=max_runtime_s, output_uri=output_uri, source_sha256=sha256
    )


def _check_entry_point_path(entry_point: str) -> None:
    if not entry_point:
        raise InvalidArgument("entry_point is empty: name the script to run, e.g. train.py")
    parts = PurePosixPath(entry_point).parts
    if entry_point.startswith("/") or ".." in parts or "\\" in entry_point:
        raise InvalidArgument(
            f"entry_point {entry_point!r} must be a path relative to the source bundle's root"
        )


def _store_key(field: str, uri: str) -> str:
    if not uri:
        raise InvalidArgument(f"{field} is empty: give a store:// URI")
    if not uri.startswith(SCHEME):
        raise InvalidArgument(f"{field} {uri!r} is not a store:// URI")
    try:
        return key_of(uri)
    except InvalidArgument as err:
        raise InvalidArgument(f"{field}: {err}") from None


def _check_channel_names(spec: TrainingJobSpec) -> None:
    if len(spec.channels) > MAX_CHANNELS:
        raise InvalidArgument(f"{len(spec.channels)} channels; at most {MAX_CHANNELS} are allowed")
    seen: set[str] = set()
    for channel in spec.channels:
        require_channel_name(channel.name)
        if channel.name in seen:
            raise InvalidArgument(f"channel {channel.name!r} is given twice")
        seen.add(channel.name)


def _check_hyperparameters(spec: TrainingJobSpec) -> None:
    if len(spec.hyperparameters) > MAX_HYPERPARAMETERS:
        raise InvalidArgument(
            f"{len(spec.hyperparameters)} hyperparameters; "
            f"at most {MAX_HYPERPARAMETERS} are allowed"
        )
    for key, value in spec.hyperparameters.items():
        if not key or len(key) > MAX_HYPERPARAMETER_KEY_CHARS:
            raise InvalidArgument(
                f"hyperparameter key {key[:40]!r} must be 1-{MAX_HYPERPARAMETER_KEY_CHARS} chars"
            )
        if len(value) > MAX_HYPERPARAMETER_VALUE_CHARS:
            raise InvalidArgument(
                f"hyperparameter {key!r} is {len(value)} chars; "
                f"at most {MAX_HYPERPARAMETER_VALUE_CHARS} are allowed"
            )


def _check_metric_definitions(spec: TrainingJobSpec) -> None:
    definitions = spec.metric_definitions
    if len(definitions) > MAX_METRIC_DEFINITIONS:
        raise InvalidArgument(
            f"{len(definitions)} metric definitions; at most {MAX_METRIC_DEFINITIONS} are allowed"
        )
    seen: set[str] = set()
    for definition in definitions:
        if not definition.name or len(definition.name) > MAX_METRIC_NAME_CHARS:
            raise InvalidArgument(
                f"metric name {definition.name[:40]!r} must be 1-{MAX_METRIC_NAME_CHARS} chars"
            )
        if definition.name in seen:
            raise InvalidArgument(f"metric {definition.name!r} is defined twice")
        seen.add(definition.name)
        if not definition.regex or len(definition.regex) > MAX_METRIC_REGEX_CHARS:
            raise InvalidArgument(
                f"regex of metric {definition.name!r} must be 1-{MAX_METRIC_REGEX_CHARS} chars"
            )
        try:
            re.compile(definition.regex)
        except re.error as err:
            raise InvalidArgument(
                f"regex of metric {definition.name!r} does not compile: {err}"
            ) from None


def _check_environment(spec: TrainingJobSpec) -> None:
    if len(spec.environment) > MAX_ENVIRONMENT_ENTRIES:
        raise InvalidArgument(
            f"{len(spec.environment)} environment variables; "
            f"at most {MAX_ENVIRONMENT_ENTRIES} are allowed"
        )
    for key in spec.environment:
        if not ENVIRONMENT_KEY.fullmatch(key):
            raise InvalidArgument(
                f"environment variable name {key!r} is invalid: use [a-zA-Z_][a-zA-Z0-9_]*"
            )


def _max_runtime(seconds: int) -> int:
    if seconds == 0:
        return DEFAULT_MAX_RUNTIME_S
    if seconds < 0 or seconds > MAX_RUNTIME_S:
        raise InvalidArgument(
            f"max_runtime_seconds {seconds} is out of range: 1-{MAX_RUNTIME_S} (28 days), "
            f"or 0 for the default {DEFAULT_MAX_RUNTIME_S}"
        )
    return seconds


def _check_bundle_holds_entry_point(
    spec: TrainingJobSpec, source_key: str, artifacts: ArtifactStore, limits: ArchiveLimits
) -> str:
    """Checks the bundle (the version there now) and returns that version's sha256."""
    try:
        info, handle = artifacts.open(source_key)
    except NotFound:
        raise NotFound(
            f"source bundle {spec.source_uri} not found: upload sourcedir.tar.gz there first"
        ) from None
    if spec.source_sha256 and spec.source_sha256 != info.sha256:
        handle.close()
        raise FailedPrecondition(
            f"source bundle {spec.source_uri} has sha256 {info.sha256}, not the "
            f"{spec.source_sha256} asked for: it was replaced after it was uploaded (by "
            "another fit with the same job name?); upload it again under a new job name"
        )
    # Read header by header within the limits: a bomb is refused at the header crossing one,
    # before its data is decompressed. A bundle version is read once (tuning trials share one).
    with handle:
        try:
            members = _BUNDLE_FILES.get((info.sha256, limits))
            if members is None:
                members = list_tar_files(handle, limits, f"source bundle {spec.source_uri}")
                _BUNDLE_FILES.put((info.sha256, limits), members)
        except ArchiveTooLarge as err:
            raise ResourceExhausted(
                f"{err}; see --max-archive-bytes/--max-archive-members"
            ) from None
        except ValueError as err:
            raise InvalidArgument(str(err)) from None
    wanted = PurePosixPath(spec.entry_point).as_posix()
    if wanted in members:
        return info.sha256
    shown = ", ".join(sorted(members)[:_MEMBERS_SHOWN]) or "nothing"
    more = len(members) - _MEMBERS_SHOWN
    raise InvalidArgument(
        f"entry point {spec.entry_point!r} is not in the source bundle {spec.source_uri}; "
        f"it holds {shown}" + (f" and {more} more" if more > 0 else "")
    )


def _check_channel_exists(name: str, uri: str, artifacts: ArtifactStore) -> None:
    if uri.startswith(SCHEME):
        try:
            key = key_of(uri)
        except InvalidArgument as err:
            raise InvalidArgument(f"channel {name!r}: {err}") from None
        if not artifacts.exists_at_or_under(key):
            raise NotFound(f"channel {name!r}: no artifact at or under {uri}")
        return
    if uri.startswith(FILE_SCHEME):
        path = uri[len(FILE_SCHEME) :]
        if not path.startswith("/"):
            raise InvalidArgument(
                f"channel {name!r}: {uri!r} must name an absolute path (file:///abs/path)"
            )
        if not Path(path).exists():
            raise NotFound(f"channel {name!r}: {uri} does not exist")
        return
    raise InvalidArgument(
        f"channel {name!r}: unsupported URI {uri!r}; use store://... (or "
        f"{s3_bucket_uri()}/..., the same store) or file:///absolute/path"
    )
