"""Models (SageMaker's CreateModel): validation, creation, lookup, listing and deletion.

A model is immutable: an artifact (`model.tar.gz` in the artifact store), the entry point that
defines `model_fn`, an optional code bundle and an environment. Deleting it while an endpoint
serves it (or may roll back to it) hides it from everyone but those endpoints, which keep
serving it, as on SageMaker; it is removed once none uses it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import PurePosixPath

from services.control.artifacts.store import SCHEME, ArtifactStore, key_of
from services.control.hosting.endpoint_store import EndpointStore
from services.control.hosting.endpoint_values import EndpointEvent
from services.control.hosting.model_store import ModelStore
from services.control.hosting.model_values import Model
from services.control.names import Resource, require_resource_name
from services.control.state import ControlStore
from services.control.training.values import RuntimeVersions
from services.runtime.errors import InvalidArgument, NotFound

ENVIRONMENT_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# SageMaker's limits on a model's Environment (contract §2.6).
MAX_ENVIRONMENT_ENTRIES = 100
MAX_ENVIRONMENT_ITEM_BYTES = 1024
MAX_ENVIRONMENT_TOTAL_BYTES = 32 * 1024


class ModelRegistry:
    """The model API's behaviour, over the store and the artifact store."""

    def __init__(
        self,
        store: ControlStore,
        artifacts: ArtifactStore,
        *,
        clock: Callable[[], float] = time.time,
        resolve_runtime: Callable[[str], str] | None = None,
    ) -> None:
        """Serves models stored in `store` whose archives live in `artifacts`.

        `resolve_runtime(framework_version)` names the script runtime a model is served on
        (raising InvalidArgument for a version no runtime serves); None records none.
        """
        self._resolve_runtime = resolve_runtime
        self._store = store
        self._models = ModelStore(store)
        self._endpoints = EndpointStore(store)
        self._artifacts = artifacts
        self._clock = clock

    def create(self, model: Model) -> Model:
        """Validates and stores a model; returns it with its creation time.

        Raises:
            InvalidArgument: a field breaks a rule.
            NotFound: the model archive, the code bundle or the training job does not exist.
            AlreadyExists: a model with this name exists.
        """
        require_resource_name(Resource.MODEL, model.name)
        _check_entry_point(model.entry_point)
        _check_environment(model.environment)
        self._check_artifact("model_data_uri", model.model_data_uri, "model.tar.gz")
        if model.source_uri:
            self._check_artifact("source_uri", model.source_uri, "the code bundle")
        runtime = RuntimeVersions()
        script_runtime = ""
        if model.training_job_name:
            job = self._store.get_training_job(model.training_job_name)
            if job is None:
                raise NotFound(f"training job {model.training_job_name!r} not found")
            runtime = job.runtime_versions
            script_runtime = job.spec.script_runtime
        if self._resolve_runtime is not None and (model.framework_version or not script_runtime):
            # Asked for, else the training job's, else the newest.
            script_runtime = self._resolve_runtime(model.framework_version)
        stored = replace(
            model,
            environment=dict(model.environment),
            creation_time=self._clock(),
            runtime_versions=runtime,
            script_runtime=script_runtime,
        )
        with self._store.transaction():
            self._models.purge_released()
            self._models.insert(stored)
        return stored

    def describe(self, name: str, *, endpoint_name: str = "") -> Model:
        """The model named `name`; with `endpoint_name`, also a deleted model that endpoint
        still serves (or may roll back to), so its new replicas load it.

        Raises:
            NotFound: no such model (for that endpoint).
        """
        with self._store.transaction():
            model = self._models.get(name)
            if model is None and endpoint_name:
                if endpoint_name in self._endpoints.names_using_model(name):
                    model = self._models.get(name, include_deleted=True)
        if model is None:
            raise NotFound(f"model {name!r} not found")
        return model

    def list(self, name_prefix: str) -> list[Model]:
        """Models whose name starts with `name_prefix`, newest first."""
        return self._models.list_models(name_prefix)

    def delete(self, name: str) -> None:
        """Removes a model, as SageMaker's DeleteModel: endpoints serving it (or able to roll
        back to it) keep it, hidden from everyone else, until they no longer use it, so they
        keep serving and can still start replicas; its name stays taken until then.

        Raises:
            NotFound: no such model.
        """
        with self._store.transaction():
            self._models.purge_released()
            users = self._endpoints.names_using_model(name)
            if users:
                if not self._models.mark_deleted(name):
                    raise NotFound(f"model {name!r} not found")
                message = f"model {name} deleted; this endpoint keeps serving it"
                for endpoint in users:
                    self._endpoints.append_event(endpoint, EndpointEvent(self._clock(), message))
            elif not self._models.delete(name):
                raise NotFound(f"model {name!r} not found")

    def _check_artifact(self, field: str, uri: str, what: str) -> None:
        if not uri:
            raise InvalidArgument(f"{field} is empty: give the store:// URI of {what}")
        if not uri.startswith(SCHEME):
            raise InvalidArgument(f"{field} {uri!r} is not a store:// URI")
        try:
            key = key_of(uri)
        except InvalidArgument as err:
            raise InvalidArgument(f"{field}: {err}") from None
        try:
            self._artifacts.stat(key)
        except NotFound:
            raise NotFound(f"{field}: no artifact at {uri}; upload {what} there first") from None


def _check_entry_point(entry_point: str) -> None:
    if not entry_point:
        raise InvalidArgument(
            "entry_point is empty: name the script that defines model_fn, e.g. inference.py"
        )
    parts = PurePosixPath(entry_point).parts
    if entry_point.startswith("/") or ".." in parts or "\\" in entry_point:
        raise InvalidArgument(
            f"entry_point {entry_point!r} must be a path relative to the code folder"
        )


def _check_environment(environment: Mapping[str, str]) -> None:
    if len(environment) > MAX_ENVIRONMENT_ENTRIES:
        raise InvalidArgument(
            f"{len(environment)} environment variables; at most {MAX_ENVIRONMENT_ENTRIES} "
            "are allowed"
        )
    total = 0
    for key, value in environment.items():
        if not ENVIRONMENT_KEY.fullmatch(key):
            raise InvalidArgument(
                f"environment variable name {key[:40]!r} is invalid: use [a-zA-Z_][a-zA-Z0-9_]*"
            )
        key_bytes, value_bytes = len(key.encode()), len(value.encode())
        if key_bytes > MAX_ENVIRONMENT_ITEM_BYTES or value_bytes > MAX_ENVIRONMENT_ITEM_BYTES:
            raise InvalidArgument(
                f"environment variable {key[:40]!r}: names and values are limited to "
                f"{MAX_ENVIRONMENT_ITEM_BYTES} bytes"
            )
        total += key_bytes + value_bytes
    if total > MAX_ENVIRONMENT_TOTAL_BYTES:
        raise InvalidArgument(
            f"the environment holds {total} bytes; at most {MAX_ENVIRONMENT_TOTAL_BYTES} "
            "are allowed"
        )
