"""`SKLearnModel`: a model artifact plus its serving code, deployable to an endpoint.

As SageMaker's `sagemaker.sklearn.SKLearnModel`: `SKLearnModel(model_data, entry_point=...)
.deploy(initial_instance_count=1)` creates the model, creates an endpoint serving it, waits
until it is InService and returns an `SKLearnPredictor`; `.transformer(instance_count=2)`
creates the model and returns a `Transformer` for batch transform. Local files are uploaded
first: a local `model.tar.gz` to `store://models/<name>/`, and the code (a `source_dir`
folder, or a lone entry-point file) as `sourcedir.tar.gz`, packed by the same rules as
training (`skmaker.packaging`). Arguments that only mean something on AWS are accepted and
ignored with one warning.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skmaker import naming, packaging
from skmaker.arguments import warn_ignored
from skmaker.autoscaling import AutoScalingPolicy
from skmaker.deserializers import BaseDeserializer
from skmaker.errors import AlreadyExists, NotFound
from skmaker.predictor import Predictor, SKLearnPredictor
from skmaker.serializers import BaseSerializer
from skmaker.session import Session
from skmaker.transformer import Transformer

log = logging.getLogger("skmaker")

# Arguments of SageMaker's SKLearnModel / FrameworkModel with no effect on skmaker.
MODEL_SAGEMAKER_ONLY_ARGS = frozenset(
    {
        "role",
        "py_version",
        "image_uri",
        "git_config",
        "vpc_config",
        "enable_network_isolation",
        "model_kms_key",
        "image_config",
        "predictor_kwargs",
        "model_reference_arn",
    }
)

# Arguments of SageMaker's deploy() (Model's and Estimator's) with no effect on skmaker.
DEPLOY_SAGEMAKER_ONLY_ARGS = frozenset(
    {
        "instance_type",
        "accelerator_type",
        "use_compiled_model",
        "kms_key",
        "tags",
        "data_capture_config",
        "serverless_inference_config",
        "async_inference_config",
        "volume_size",
        "model_data_download_timeout",
        "container_startup_health_check_timeout",
        "inference_recommendation_id",
        "explainer_config",
        "endpoint_logging",
        "resources",
        "endpoint_type",
        "managed_instance_scaling",
        "inference_component_name",
        "routing_config",
        "inference_ami_version",
        "role",
        "vpc_config_override",
    }
)

LOG_LEVEL_VARIABLE = "SAGEMAKER_CONTAINER_LOG_LEVEL"
WORKERS_VARIABLE = "SAGEMAKER_MODEL_SERVER_WORKERS"

_REMOTE_SCHEMES = ("store://", "s3://")
_MODEL_KEY_PREFIX = "models"


def _is_remote(location: str | os.PathLike[str] | None) -> bool:
    return isinstance(location, str) and location.startswith(_REMOTE_SCHEMES)


class SKLearnModel:
    """A scikit-learn model and the script that serves it, as `sagemaker.sklearn.SKLearnModel`.

    The parameters keep SageMaker's order (`model_data, role, entry_point, ...`), so
    positional SageMaker code works.

    Args:
        model_data: the `store://` (or `s3://`) URI of model.tar.gz, or a local model.tar.gz
            uploaded on `deploy()`.
        role: SageMaker-only; ignored.
        entry_point: the serving script defining `model_fn` (and optionally `input_fn`,
            `predict_fn`, `output_fn` or `transform_fn`); relative to `source_dir` when that
            is given. Without `source_dir`, a local file is packed alone; a path that is not
            a local file names the script inside the model archive's `code/` folder.
        framework_version: the scikit-learn its replicas and batch workers run on (`"1.2-1"`,
            `"1.5"`); default its training job's, else the newest the server has. Another
            one than the training job's is allowed: the endpoint's events then name what
            differs.
        py_version: SageMaker-only; ignored.
        image_uri: SageMaker-only; ignored.
        predictor_cls: what `deploy()` returns, built as `predictor_cls(endpoint_name,
            session)`; None makes `deploy()` return None, as in SageMaker.
        model_server_workers: passed as SAGEMAKER_MODEL_SERVER_WORKERS, as SageMaker does.
        source_dir: a local folder packed whole, or the `store://` URI of a sourcedir.tar.gz
            (what a training job used).
        env: environment variables of the serving process.
        name: the model name; default `sagemaker-scikit-learn-<UTC timestamp>`.
        container_log_level: passed as SAGEMAKER_CONTAINER_LOG_LEVEL.
        dependencies: local files or folders added at the root of the code archive.
        session: the skmaker `Session`; default `Session()` from the environment.
        sagemaker_session: alias of `session`; a SageMaker session is ignored.
        training_job_name: the training job the model came from, recorded on the model
            (`SKLearn.create_model` sets it).
        code_location: where a local code folder's archive goes (a `store://` or
            `s3://<default bucket>/` prefix): `<code_location>/<model name>/source/`;
            default `store://models`.
        **sagemaker_only_args: the SageMaker arguments in `MODEL_SAGEMAKER_ONLY_ARGS`;
            accepted and ignored with a warning, as are ones SageMaker's SKLearnModel does not
            have.

    Raises:
        ValueError: without an entry point.
    """

    def __init__(
        self,
        model_data: str | os.PathLike[str],
        role: str | None = None,
        entry_point: str | None = None,
        framework_version: str | None = None,
        py_version: str | None = "py3",
        image_uri: str | None = None,
        predictor_cls: type[Predictor] | None = SKLearnPredictor,
        model_server_workers: int | None = None,
        source_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        container_log_level: int = logging.INFO,
        dependencies: Sequence[str | os.PathLike[str]] | None = None,
        session: Session | None = None,
        sagemaker_session: Any = None,
        training_job_name: str = "",
        code_location: str | None = None,
        **sagemaker_only_args: Any,
    ) -> None:
        if py_version == "py3":
            py_version = None  # SageMaker's default, not worth a warning
        warn_ignored(
            {
                "role": role,
                "py_version": py_version,
                "image_uri": image_uri,
                **sagemaker_only_args,
            },
            MODEL_SAGEMAKER_ONLY_ARGS,
            "SKLearnModel",
            known=inspect.signature(SKLearnModel).parameters,
        )
        if not entry_point:
            raise ValueError("SKLearnModel needs an entry_point: the script defining model_fn")
        if isinstance(sagemaker_session, Session):
            if session is not None and session is not sagemaker_session:
                raise ValueError("pass either session or sagemaker_session, not both")
            session = sagemaker_session
        if name is not None:
            naming.validate_name(name, kind="model")
        self.model_data = model_data
        self.entry_point = entry_point
        self.source_dir = source_dir
        self.dependencies = list(dependencies or [])
        self.env = {str(key): str(value) for key, value in (env or {}).items()}
        self.name = name
        self.predictor_cls = predictor_cls
        self.model_server_workers = model_server_workers
        self.container_log_level = container_log_level
        self.training_job_name = training_job_name
        self.framework_version = framework_version
        self.code_location = code_location
        self.endpoint_name: str | None = None
        self._session = session
        self._created = False

    def __repr__(self) -> str:
        return f"SKLearnModel(name={self.name!r}, model_data={str(self.model_data)!r})"

    @property
    def sagemaker_session(self) -> Session:
        """The session, created from the environment on first use when none was given."""
        if self._session is None:
            self._session = Session()
        return self._session

    def _environment(self) -> dict[str, str]:
        environment = dict(self.env)
        environment.setdefault(LOG_LEVEL_VARIABLE, str(self.container_log_level))
        if self.model_server_workers is not None:
            environment.setdefault(WORKERS_VARIABLE, str(self.model_server_workers))
        return environment

    def _upload_model_data(self, name: str) -> str:
        if _is_remote(self.model_data):
            return str(self.model_data)
        local = Path(self.model_data)
        if not local.is_file():
            raise ValueError(
                f"model_data {str(self.model_data)!r} is neither a store:// URI nor a local file"
            )
        session = self.sagemaker_session
        return session.upload_to_store(local, f"{_MODEL_KEY_PREFIX}/{name}")

    def _upload_code(self, name: str) -> tuple[str, str]:
        """(entry point relative to the code root, source_uri; "" for code in the archive)."""
        entry_point = str(self.entry_point)
        if _is_remote(self.source_dir):
            if self.dependencies:
                raise ValueError(
                    "dependencies cannot be added to a source_dir that is already uploaded"
                )
            return entry_point, str(self.source_dir)
        if self.source_dir is None and not Path(entry_point).is_file():
            if self.dependencies:
                raise ValueError(
                    f"entry_point {entry_point!r} is not a local file, so the code is expected "
                    "in the model archive under code/; dependencies cannot be added there"
                )
            return entry_point, ""
        bundle = packaging.plan(entry_point, self.source_dir, self.dependencies)
        with tempfile.TemporaryDirectory(prefix="skmaker-source-") as scratch:
            archive = packaging.write(bundle, Path(scratch) / packaging.ARCHIVE_NAME)
            session = self.sagemaker_session
            code_prefix = (
                session.store_key(self.code_location) if self.code_location else _MODEL_KEY_PREFIX
            )
            uri = session.upload_to_store(archive, f"{code_prefix}/{name}/source")
        return bundle.program, uri

    def create(self) -> dict[str, Any]:
        """Uploads what is local and creates the model on skmaker; returns its description.

        `deploy()` calls this when the model was not created yet.

        Raises:
            AlreadyExists: when a model with this name exists (checked before uploading, so
                an existing model's artifacts are never overwritten).
            ValueError: for model data or code that does not exist.
        """
        session = self.sagemaker_session
        name = self.name or naming.name_from_base(naming.DEFAULT_BASE_NAME)
        try:
            session.describe_model(name)
        except NotFound:
            pass
        else:
            raise AlreadyExists(
                f"model {name} exists already; give another name or delete it first"
            )
        model_data_uri = self._upload_model_data(name)
        entry_point, source_uri = self._upload_code(name)
        log.info("Creating model with name: %s", name)
        description = session.create_model(
            name,
            model_data_uri=model_data_uri,
            entry_point=entry_point,
            source_uri=source_uri,
            environment=self._environment(),
            training_job_name=self.training_job_name,
            framework_version=self.framework_version or "",
        )
        self.name = name
        self._created = True
        return description

    def deploy(
        self,
        initial_instance_count: int = 1,
        instance_type: str | None = None,
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
        endpoint_name: str | None = None,
        wait: bool = True,
        autoscaling: AutoScalingPolicy | Mapping[str, Any] | None = None,
        **sagemaker_only_args: Any,
    ) -> Predictor | None:
        """Creates the model (if needed) and an endpoint serving it; returns a predictor.

        Args:
            initial_instance_count: replicas to start, at least 1.
            instance_type: SageMaker-only; ignored with a warning.
            serializer: set on the predictor (default: the predictor's, numpy).
            deserializer: set on the predictor (default: the predictor's, numpy).
            endpoint_name: the endpoint name; default the model's name.
            wait: wait until the endpoint is InService.
            autoscaling: a target-tracking policy (`AutoScalingPolicy` or a dict of its
                fields); None for a fixed replica count.
            **sagemaker_only_args: the SageMaker arguments in `DEPLOY_SAGEMAKER_ONLY_ARGS`
                (`kms_key`, `tags`, `data_capture_config`, ...); ignored with a warning.

        Returns:
            `predictor_cls(endpoint_name, session)` with the serializers set, or None when
            `predictor_cls` is None.

        Raises:
            ValueError: for fewer than 1 replica, or local files that do not exist.
            UnexpectedStatusException: when `wait` and the endpoint ended Failed (the reason
                says why, e.g. the script defines no model_fn).
            SkmakerClientError: when the server refuses a call (AlreadyExists, NotFound...).
        """
        warn_ignored(
            {"instance_type": instance_type, **sagemaker_only_args},
            DEPLOY_SAGEMAKER_ONLY_ARGS,
            "deploy",
            known=inspect.signature(SKLearnModel.deploy).parameters,
        )
        if initial_instance_count < 1:
            raise ValueError(
                f"initial_instance_count must be at least 1, not {initial_instance_count}"
            )
        if not self._created:
            self.create()
        assert self.name is not None, "create() names the model"
        name = endpoint_name or self.name
        naming.validate_name(name, kind="endpoint")
        log.info("Creating endpoint with name %s", name)
        self.sagemaker_session.create_endpoint(
            name,
            model_name=self.name,
            initial_replicas=initial_instance_count,
            autoscaling=autoscaling,
            wait=wait,
        )
        self.endpoint_name = name
        if self.predictor_cls is None:
            return None
        predictor = self.predictor_cls(name, self.sagemaker_session)
        if serializer is not None:
            predictor.serializer = serializer
        if deserializer is not None:
            predictor.deserializer = deserializer
        return predictor

    def transformer(
        self,
        instance_count: int = 1,
        instance_type: str | None = None,
        strategy: str | None = None,
        assemble_with: str | None = None,
        output_path: str | None = None,
        output_kms_key: str | None = None,
        accept: str | None = None,
        env: Mapping[str, str] | None = None,
        max_concurrent_transforms: int | None = None,
        max_payload: int | None = None,
        tags: Any = None,
        volume_kms_key: str | None = None,
        base_transform_job_name: str | None = None,
        **sagemaker_only_args: Any,
    ) -> Transformer:
        """Creates the model (if needed) and returns a `Transformer` scoring with it.

        Arguments are the `Transformer`'s (SageMaker's `Model.transformer`); `env` is the
        transform jobs' extra environment, on top of the model's own. Others are ignored with
        a warning.

        Raises:
            AlreadyExists: when the model is not created yet and its name is taken.
            ValueError: for model data or code that does not exist.
        """
        warn_ignored(
            sagemaker_only_args,
            DEPLOY_SAGEMAKER_ONLY_ARGS,
            "transformer",
            known=inspect.signature(SKLearnModel.transformer).parameters,
        )
        if not self._created:
            self.create()
        assert self.name is not None, "create() names the model"
        return Transformer(
            self.name,
            instance_count,
            instance_type,
            strategy=strategy,
            assemble_with=assemble_with,
            output_path=output_path,
            output_kms_key=output_kms_key,
            accept=accept,
            max_concurrent_transforms=max_concurrent_transforms,
            max_payload=max_payload,
            tags=tags,
            env=env,
            base_transform_job_name=base_transform_job_name,
            volume_kms_key=volume_kms_key,
            session=self.sagemaker_session,
        )

    def delete_model(self) -> None:
        """Deletes the model on skmaker (its uploaded files stay in the store); endpoints
        serving it keep serving it.

        Raises:
            ValueError: when the model was never created, as SageMaker.
        """
        if self.name is None:
            raise ValueError(
                "The SageMaker model must be created first before attempting to delete."
            )
        self.sagemaker_session.delete_model(self.name)
        self._created = False
