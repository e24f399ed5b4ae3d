"""The models a batch worker holds in memory: each loaded once per process, as a replica loads it.

`ModelCache.handler(model, job_environment, source)` returns the model's `ModelHandler`,
loading it on first use through `services.sagemaker.serving.model_loader` (download, safe
extraction, `requirements.txt`, environment, `model_fn`, warm-up) into its own folder, so two
models never share files. The batch variables (contract §4.2: `SAGEMAKER_BATCH=true` and,
when the request set them, `SAGEMAKER_MAX_PAYLOAD_IN_MB`, `SAGEMAKER_BATCH_STRATEGY`,
`SAGEMAKER_MAX_CONCURRENT_TRANSFORMS`), the model's and the job's environment are written into
the process environment before every shard, and before the first load, since the user's module
may read them at import time; a model loaded for an earlier job keeps what its module read
then. `ModelCache.execution_parameters` asks a loaded model's `execution_parameters_fn` once
and keeps its answer (or its error) as long as the model stays loaded. The least recently used
model is dropped when more than `capacity` are held.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from pathlib import Path

from services.batch.execution_parameters import (
    ExecutionParameters,
    ExecutionParametersError,
    ask_model,
)
from services.sagemaker.serving.fast_path import PredictPath
from services.sagemaker.serving.handler import ModelHandler
from services.sagemaker.serving.model_loader import ModelLoader, ModelSource, ModelSpec

log = logging.getLogger(__name__)

_STRATEGY_NAMES = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def batch_environment(
    *,
    max_payload_mb: int | None,
    strategy: str | None,
    max_concurrent: int | None,
    job_environment: Mapping[str, str],
) -> dict[str, str]:
    """What the model's code sees in a batch worker: the job's variables and SageMaker's batch ones.

    As in SageMaker, a knob's variable is set only when the request set the knob (contract
    §4.2); values the model's `execution_parameters_fn` chose are not written back.

    Args:
        max_payload_mb: MaxPayloadInMB, None when the request left it unset.
        strategy: `"MultiRecord"` or `"SingleRecord"`, None when unset.
        max_concurrent: MaxConcurrentTransforms, None when unset.
        job_environment: The transform job's Environment.
    """
    variables = {**job_environment, "SAGEMAKER_BATCH": "true"}
    if max_payload_mb is not None:
        variables["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(max_payload_mb)
    if strategy is not None:
        variables["SAGEMAKER_BATCH_STRATEGY"] = _STRATEGY_NAMES.get(strategy, strategy.upper())
    if max_concurrent is not None:
        variables["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(max_concurrent)
    return variables


class ModelCache:
    """Loaded models by identity (name, archive, code, entry point); one shard at a time uses it.

    Args:
        work_dir: Each model is unpacked below `work_dir/models/<name>-<hash>`.
        deps_dir: The shared `requirements.txt` install cache.
        environ: The process environment (`os.environ`); variables are written into it.
        region: `SAGEMAKER_REGION` unless the model's environment sets it.
        pip_timeout_s: Time limit for installing `requirements.txt`.
        capacity: How many models stay loaded.
    """

    def __init__(
        self,
        work_dir: Path,
        deps_dir: Path,
        environ: MutableMapping[str, str],
        *,
        region: str = "local",
        pip_timeout_s: float = 900.0,
        capacity: int = 2,
    ) -> None:
        self._work_dir = work_dir
        self._deps_dir = deps_dir
        self._environ = environ
        self._region = region
        self._pip_timeout_s = pip_timeout_s
        self._capacity = max(1, capacity)
        self._handlers: OrderedDict[tuple[str, ...], ModelHandler] = OrderedDict()
        # Which path serves each loaded model's predict step (see fast_path.PredictPath).
        self._paths: dict[tuple[str, ...], PredictPath] = {}
        # What each loaded model's execution_parameters_fn answered (or the error it gave).
        self._parameters: dict[tuple[str, ...], ExecutionParameters | ExecutionParametersError] = {}
        # What the process environment held before the current shard's variables were set,
        # so the next shard starts from the worker's own environment (None: was unset).
        self._originals: dict[str, str | None] = {}

    def _apply_environment(self, variables: Mapping[str, str]) -> None:
        """Sets `variables`, first undoing what the previous shard set and this one does not."""
        for key, original in self._originals.items():
            if key in variables:
                continue
            if original is None:
                self._environ.pop(key, None)
            else:
                self._environ[key] = original
        self._originals = {
            key: self._originals[key] if key in self._originals else self._environ.get(key)
            for key in variables
        }
        self._environ.update(variables)

    def handler(
        self, model: ModelSpec, environment: Mapping[str, str], source: ModelSource
    ) -> ModelHandler:
        """The model's handler, loaded now unless an earlier shard loaded it.

        Args:
            model: The model, as the task describes it.
            environment: The job's and batch variables (see `batch_environment`).
            source: Where the model's archives come from.

        Raises:
            ModelLoadFailed: the model could not be loaded; the message says why.
        """
        # Before every shard, not only the first load: a model's code reads them when it
        # predicts too, and another model (or job) may have changed them since.
        self._apply_environment({**model.environment, **environment})
        key = _key(model)
        cached = self._handlers.get(key)
        if cached is not None:
            self._handlers.move_to_end(key)
            return cached
        digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:12]
        folder = self._work_dir / "models" / f"{_UNSAFE.sub('_', model.name)}-{digest}"
        loader = ModelLoader(
            folder,
            self._deps_dir,
            self._environ,
            region=self._region,
            pip_timeout_s=self._pip_timeout_s,
        )
        # The model's own environment first, the job's over it, as SageMaker merges them.
        merged = replace(model, environment={**model.environment, **environment})
        loaded = loader.load_model(_Fixed(source, merged), model.name)
        log.info(
            "model %s loaded in %.2fs (warm-up %s); %s",
            model.name,
            loaded.load_seconds,
            "passed" if loaded.warmed_up else "skipped",
            loaded.predict_path.describe(),
        )
        self._handlers[key] = loaded.handler
        self._paths[key] = loaded.predict_path
        while len(self._handlers) > self._capacity:
            evicted, _ = self._handlers.popitem(last=False)
            self._parameters.pop(evicted, None)
            self._paths.pop(evicted, None)
            log.info("model %s dropped from memory (cache of %d)", evicted[0], self._capacity)
        return loaded.handler

    def predict_path(self, model: ModelSpec) -> PredictPath:
        """Which path serves the predict step of a model `handler` returned, still loaded.

        Raises:
            KeyError: the model is not loaded.
        """
        return self._paths[_key(model)]

    def execution_parameters(self, model: ModelSpec) -> ExecutionParameters:
        """What the model's `execution_parameters_fn` asks for; called once per loaded model.

        Args:
            model: A model `handler` returned, still loaded.

        Raises:
            ExecutionParametersError: the function failed or answered something unusable
                (again on every call, without calling it again).
            KeyError: the model is not loaded.
        """
        key = _key(model)
        outcome = self._parameters.get(key)
        if outcome is None:
            handler = self._handlers[key]
            try:
                outcome = ask_model(handler.module)
            except ExecutionParametersError as err:
                outcome = err
            self._parameters[key] = outcome
            log.info("model %s: execution parameters %s", model.name, outcome)
        if isinstance(outcome, ExecutionParametersError):
            raise ExecutionParametersError(str(outcome))
        return outcome


def _key(model: ModelSpec) -> tuple[str, ...]:
    """A model's identity in the cache: its name, archive, code and entry point."""
    return (model.name, model.model_data_uri, model.source_uri, model.entry_point)


class _Fixed:
    """A ModelSource whose description is the merged one (the archives come from `source`)."""

    def __init__(self, source: ModelSource, model: ModelSpec) -> None:
        self._source = source
        self._model = model

    def describe_model(self, name: str) -> ModelSpec:
        return self._model

    def download(self, uri: str, dest: Path) -> None:
        self._source.download(uri, dest)

    def trained_sklearn_version(self, training_job_name: str) -> str | None:
        return self._source.trained_sklearn_version(training_job_name)
