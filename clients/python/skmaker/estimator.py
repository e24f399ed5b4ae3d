"""`SKLearn`: the estimator a SageMaker notebook uses, training on skmaker instead.

`SKLearn(entry_point=..., hyperparameters=...).fit({"train": uri})` packs the code into
`sourcedir.tar.gz`, uploads it, creates a training job with SageMaker's hyperparameter encoding
and streams the job's log until it ends. `deploy()` serves the job's model on an endpoint and
returns an `SKLearnPredictor`, `transformer()` a `Transformer` that scores files with it in batch;
`create_model()` gives the `SKLearnModel` in between. `framework_version` picks the scikit-learn;
arguments that only mean something on AWS (`role`, ...) are ignored with one warning.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from skmaker import descriptions, naming
from skmaker import hyperparameters as hp
from skmaker.arguments import warn_ignored
from skmaker.autoscaling import AutoScalingPolicy
from skmaker.code_staging import StagedCode, stage_training_code
from skmaker.deserializers import BaseDeserializer
from skmaker.inputs import TrainingInput, channels_from_inputs
from skmaker.model import DEPLOY_SAGEMAKER_ONLY_ARGS, SKLearnModel
from skmaker.predictor import Predictor, SKLearnPredictor
from skmaker.serializers import BaseSerializer
from skmaker.session import Session
from skmaker.training_job import TrainingJob
from skmaker.transformer import Transformer

log = logging.getLogger("skmaker")

# Arguments of sagemaker.sklearn.SKLearn and EstimatorBase that have no effect on skmaker.
SAGEMAKER_ONLY_ARGS = frozenset(
    {
        "role",
        "instance_type",
        "py_version",
        "image_uri",
        "image_uri_region",
        "git_config",
        "enable_network_isolation",
        "checkpoint_s3_uri",
        "checkpoint_local_path",
        "enable_sagemaker_metrics",
        "volume_size",
        "volume_kms_key",
        "input_mode",
        "output_kms_key",
        "tags",
        "subnets",
        "security_group_ids",
        "use_spot_instances",
        "max_wait",
        "max_retry_attempts",
        "keep_alive_period_in_seconds",
        "disable_output_compression",
        "model_uri",
        "model_channel_name",
        "rules",
        "debugger_hook_config",
        "tensorboard_output_config",
        "profiler_config",
        "disable_profiler",
        "distribution",
        "instance_groups",
        "encrypt_inter_container_traffic",
        "container_entry_point",
        "container_arguments",
        "training_repository_access_mode",
        "training_repository_credentials_provider_arn",
        "environment_variables",
        "sagemaker_session",
    }
)


class SKLearn:
    """Trains a scikit-learn script on skmaker with `sagemaker.sklearn.SKLearn`'s API.

    Args:
        entry_point: the training script; relative to `source_dir` when that is given.
        source_dir: a local folder archived whole, or the `store://` URI of an existing
            sourcedir.tar.gz.
        hyperparameters: passed to the script as `--key value` (JSON-encoded on the wire).
        metric_definitions: `[{"Name": ..., "Regex": ...}]`; matching log lines become metrics.
        max_run: maximum run time in seconds; the job is stopped after it.
        environment: environment variables for the script.
        base_job_name: prefix of generated job names (default "sagemaker-scikit-learn").
        session: the skmaker `Session`; default `Session()` (reads $SKMAKER_ADDRESS).
        dependencies: local files or folders added at the root of the code archive.
        output_path: `store://` prefix; as in SageMaker, the job's model.tar.gz and
            output.tar.gz go to `<output_path>/<job>/output/`. Default: the server's.
        sagemaker_session: alias of `session`; a real SageMaker session is ignored.
        shell_compat: run the script through /bin/sh as SageMaker's toolkit does (values with
            spaces are split); by default each hyperparameter value stays one argument.
        container_log_level: sent as `sagemaker_container_log_level` (SM_LOG_LEVEL).
        instance_count: must be 1, as in SageMaker.
        code_location: where the code archive goes, as in SageMaker:
            `<code_location>/<job name>/source/sourcedir.tar.gz` (a `store://` or
            `s3://<default bucket>/` prefix); default `store://jobs`.
        framework_version: the scikit-learn the script (and its models) runs on: `"1.2-1"`,
            `"1.5"`, `"1.5.2"`; default the server's newest (InvalidArgument if it has none).
        **sagemaker_only_args: `role`, `instance_type` and the rest of `SAGEMAKER_ONLY_ARGS`,
            and ones SageMaker's SKLearn lacks (`script_mode=True`): ignored with a warning.

    Raises:
        AttributeError: when `instance_count` is not 1 (SageMaker's error).
    """

    def __init__(
        self,
        entry_point: str,
        source_dir: str | os.PathLike[str] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        metric_definitions: Sequence[Mapping[str, str]] | None = None,
        max_run: int = 86400,
        environment: Mapping[str, str] | None = None,
        base_job_name: str | None = None,
        session: Session | None = None,
        dependencies: Sequence[str | os.PathLike[str]] | None = None,
        output_path: str | None = None,
        sagemaker_session: Any = None,
        shell_compat: bool = False,
        container_log_level: int = logging.INFO,
        instance_count: int = 1,
        code_location: str | None = None,
        framework_version: str | None = None,
        **sagemaker_only_args: Any,
    ) -> None:
        if instance_count != 1:
            raise AttributeError(
                "Scikit-Learn does not support distributed training. Please remove the "
                "'instance_count' argument or set 'instance_count=1' when initializing SKLearn."
            )
        ignored_args = dict(sagemaker_only_args)
        if isinstance(sagemaker_session, Session):
            if session is not None and session is not sagemaker_session:
                raise ValueError("pass either session or sagemaker_session, not both")
            session = sagemaker_session
        elif sagemaker_session is not None:
            ignored_args["sagemaker_session"] = sagemaker_session
        warn_ignored(
            ignored_args,
            SAGEMAKER_ONLY_ARGS,
            "SKLearn",
            known=inspect.signature(SKLearn).parameters,
        )
        self.entry_point = entry_point
        self.source_dir = source_dir
        self.dependencies = list(dependencies or [])
        self._hyperparameters: dict[str, Any] = dict(hyperparameters or {})
        self.metric_definitions = [dict(m) for m in metric_definitions or []]
        self.max_run = max_run
        self.environment = dict(environment or {})
        self.base_job_name = base_job_name
        self.output_path = output_path
        self.code_location = code_location
        self.framework_version = framework_version
        self.shell_compat = shell_compat
        self.container_log_level = container_log_level
        self.instance_count = 1
        self._session = session
        self._reserved_hyperparameters: dict[str, str] = {}
        self._current_job_name: str | None = None
        self.latest_training_job: TrainingJob | None = None

    def __repr__(self) -> str:
        return f"SKLearn(entry_point={self.entry_point!r}, job={self._current_job_name!r})"

    @property
    def sagemaker_session(self) -> Session:
        """The session, created from the environment on first use when none was given."""
        if self._session is None:
            self._session = Session()
        return self._session

    def enable_network_isolation(self) -> bool:
        """False, as SageMaker's estimators without network isolation: skmaker's trainers do
        not cut a script off the network (`EnableNetworkIsolation` in the job's description)."""
        return False

    # -- hyperparameters ---------------------------------------------------------------------

    def set_hyperparameters(self, **kwargs: Any) -> None:
        """Adds or replaces hyperparameters for the next `fit()`."""
        self._hyperparameters.update(kwargs)

    def hyperparameters(self) -> dict[str, str]:
        """The hyperparameters as sent to the server, as SageMaker's method returns them.

        Values are JSON-encoded; once `fit()` ran, the latest job's `sagemaker_*` keys are
        included.
        """
        return {**hp.encode(self._hyperparameters), **self._reserved_hyperparameters}

    # -- training ----------------------------------------------------------------------------

    def fit(
        self,
        inputs: str | TrainingInput | Mapping[str, str | TrainingInput] | None = None,
        wait: bool = True,
        logs: bool | str = True,
        job_name: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
    ) -> None:
        """Uploads the code, creates a training job and, with `wait`, follows it to the end.

        Args:
            inputs: a URI (the channel "training"), a `TrainingInput`, or a dict of channel
                name -> URI or `TrainingInput`. URIs are `store://...` (from
                `Session.upload_data`), `file:///abs/path` or `s3://...`; local paths are not
                uploaded implicitly.
            wait: block until the job ends.
            logs: with `wait`, print the job's log as it runs (True/"All"/"Training") or not
                (False/"None"/"Rules").
            job_name: the job's name; default `<base_job_name>-<UTC timestamp>`.
            experiment_config: accepted for compatibility; ignored.

        Raises:
            ValueError: for bad inputs, a bad job name, or an entry point, source_dir or
                dependency that does not exist (all before any call to the server).
            UnexpectedStatusException: when `wait` and the job ended Failed.
            SkmakerClientError: when the server refuses a call (e.g. AlreadyExists).
        """
        del experiment_config
        channels = channels_from_inputs(inputs)
        if job_name is not None:
            name = naming.validate_name(job_name)
        else:
            name = naming.name_from_base(self.base_job_name or naming.DEFAULT_BASE_NAME)
        encoded_user_hyperparameters = hp.encode(self._hyperparameters)
        session = self.sagemaker_session
        program, source_uri, source_sha256 = self._stage_code(name)
        reserved = hp.reserved(
            entry_point=program,
            submit_directory=source_uri,
            job_name=name,
            log_level=self.container_log_level,
        )
        log.info("Creating training-job with name: %s", name)
        session.create_training_job(
            name,
            entry_point=program,
            source_uri=source_uri,
            hyperparameters={**encoded_user_hyperparameters, **reserved},
            channels=channels,
            metric_definitions=self.metric_definitions,
            environment={str(k): str(v) for k, v in self.environment.items()},
            max_run=self.max_run,
            output_uri=self.output_path or "",
            shell_compat=self.shell_compat,
            source_sha256=source_sha256,
            framework_version=self.framework_version or "",
        )
        self._reserved_hyperparameters = reserved
        self._current_job_name = name
        self.latest_training_job = TrainingJob(session, name)
        if wait:
            self.latest_training_job.wait(logs=logs)

    def _stage_code(self, job_name: str) -> StagedCode:
        """Packs and uploads the code for `job_name` (the tuner's fit uses it too).

        A remote `source_dir` (store:// or s3://) is used as it is; a local one is archived
        with the dependencies into sourcedir.tar.gz under `store://jobs/<job_name>/source/`.

        Returns:
            The entry point relative to the archive's root, the archive's URI and sha256.

        Raises:
            ValueError: the entry point, source_dir or a dependency does not exist.
        """
        return stage_training_code(
            self.sagemaker_session,
            job_name,
            self.entry_point,
            self.source_dir,
            self.dependencies,
            self.code_location,
        )

    def _require_job(self) -> TrainingJob:
        if self.latest_training_job is None:
            raise ValueError("Estimator is not associated with a training job; call fit() first")
        return self.latest_training_job

    @property
    def model_data(self) -> str:
        """URI of the latest job's model.tar.gz (`s3://` when the store is S3).

        Raises:
            ValueError: before `fit()`, or when the job has no model artifact (yet).
        """
        description = self._require_job().describe()
        uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
        if not uri:
            raise ValueError(
                f"training job {description['TrainingJobName']} has no model artifact "
                f"(status {description['TrainingJobStatus']})"
            )
        return self.sagemaker_session.public_uri(str(uri))

    def logs(self) -> None:
        """Prints the latest job's whole log to stdout, following it while the job runs."""
        job = self._require_job()
        self.sagemaker_session.logs_for_job(job.name, wait=True, out=sys.stdout)

    # -- serving -----------------------------------------------------------------------------

    def create_model(
        self,
        model_server_workers: int | None = None,
        role: str | None = None,
        vpc_config_override: Any = None,
        entry_point: str | None = None,
        source_dir: str | os.PathLike[str] | None = None,
        dependencies: Sequence[str | os.PathLike[str]] | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        predictor_cls: type[Predictor] | None = SKLearnPredictor,
        **sagemaker_only_args: Any,
    ) -> SKLearnModel:
        """The `SKLearnModel` of the latest training job, not yet created on skmaker.

        As in SageMaker, the model serves the job's model.tar.gz with the job's own code
        bundle and entry point unless `entry_point` / `source_dir` say otherwise.

        Args:
            model_server_workers: passed as SAGEMAKER_MODEL_SERVER_WORKERS.
            role: SageMaker-only; ignored with a warning.
            vpc_config_override: SageMaker-only; ignored.
            entry_point: the serving script; default the training entry point.
            source_dir: the serving code; default the training job's sourcedir.tar.gz.
            dependencies: local files or folders added to a local `source_dir`.
            env: environment variables of the serving process (separate from the training
                environment, as in SageMaker).
            name: the model name; default `sagemaker-scikit-learn-<UTC timestamp>`.
            predictor_cls: what the model's `deploy()` returns.
            **sagemaker_only_args: further SageMaker model arguments; ignored with a warning.

        Raises:
            ValueError: before `fit()`, or when the job has no model artifact (it failed).
        """
        del vpc_config_override  # SageMaker's sentinel default would trip the warning
        job = self._require_job()
        description = job.describe()
        model_data = self.model_data
        return SKLearnModel(
            model_data,
            role=role,
            entry_point=entry_point or descriptions.entry_point_of(description),
            predictor_cls=predictor_cls,
            model_server_workers=model_server_workers,
            source_dir=source_dir or description["AlgorithmSpecification"]["SourceUri"] or None,
            env=env,
            name=name,
            container_log_level=self.container_log_level,
            dependencies=dependencies,
            session=self.sagemaker_session,
            training_job_name=job.name,
            framework_version=sagemaker_only_args.pop("framework_version", self.framework_version),
            **sagemaker_only_args,
        )

    def deploy(
        self,
        initial_instance_count: int = 1,
        instance_type: str | None = None,
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
        endpoint_name: str | None = None,
        wait: bool = True,
        model_name: str | None = None,
        autoscaling: AutoScalingPolicy | Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        entry_point: str | None = None,
        source_dir: str | os.PathLike[str] | None = None,
        dependencies: Sequence[str | os.PathLike[str]] | None = None,
        model_server_workers: int | None = None,
        **sagemaker_only_args: Any,
    ) -> Predictor:
        """Serves the latest job's model on a new endpoint and returns its `SKLearnPredictor`.

        Creates a model from the job's model.tar.gz and code, then an endpoint with
        `initial_instance_count` replicas, waits until it is InService (with `wait`) and
        returns a predictor that sends and reads NumPy arrays unless told otherwise.

        Args:
            initial_instance_count: replicas to start, at least 1.
            instance_type: SageMaker-only; ignored with a warning.
            serializer: the predictor's serializer (default `NumpySerializer()`).
            deserializer: the predictor's deserializer (default `NumpyDeserializer()`).
            endpoint_name: default the model's name.
            wait: wait until the endpoint is InService.
            model_name: default `<base_job_name>-<UTC timestamp>`, as SageMaker names both.
            autoscaling: a target-tracking policy (`AutoScalingPolicy` or a dict of its
                fields, e.g. `{"max_replicas": 4, "target_value": 8}`); None for a fixed count.
            env: environment variables of the serving process.
            entry_point: the serving script; default the training entry point.
            source_dir: the serving code; default the training job's code bundle.
            dependencies: local files or folders added to a local `source_dir`.
            model_server_workers: passed as SAGEMAKER_MODEL_SERVER_WORKERS.
            **sagemaker_only_args: `kms_key`, `tags`, `data_capture_config` and the other
                SageMaker arguments in `skmaker.model.DEPLOY_SAGEMAKER_ONLY_ARGS`; ignored
                with a warning.

        Raises:
            ValueError: before `fit()`, or when the job has no model artifact.
            UnexpectedStatusException: when `wait` and the endpoint ended Failed.
            SkmakerClientError: when the server refuses a call.
        """
        warn_ignored(
            {"instance_type": instance_type, **sagemaker_only_args},
            DEPLOY_SAGEMAKER_ONLY_ARGS,
            "deploy",
        )
        model = self._new_model(
            model_name,
            model_server_workers=model_server_workers,
            entry_point=entry_point,
            source_dir=source_dir,
            dependencies=dependencies,
            env=env,
        )
        predictor = model.deploy(
            initial_instance_count,
            serializer=serializer,
            deserializer=deserializer,
            endpoint_name=endpoint_name or model.name,
            wait=wait,
            autoscaling=autoscaling,
        )
        assert predictor is not None, "the model's predictor_cls is Predictor"
        return predictor

    def _new_model(
        self,
        model_name: str | None,
        *,
        model_server_workers: int | None,
        entry_point: str | None,
        source_dir: str | os.PathLike[str] | None,
        dependencies: Sequence[str | os.PathLike[str]] | None,
        env: Mapping[str, str] | None,
    ) -> SKLearnModel:
        """The model `deploy()` and `transformer()` create, named `<base_job_name>-<stamp>`."""
        default_name = naming.name_from_base(self.base_job_name or naming.DEFAULT_BASE_NAME)
        return self.create_model(
            model_server_workers=model_server_workers,
            entry_point=entry_point,
            source_dir=source_dir,
            dependencies=dependencies,
            env=env,
            name=model_name or default_name,
        )

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
        role: str | None = None,
        model_server_workers: int | None = None,
        volume_kms_key: str | None = None,
        entry_point: str | None = None,
        vpc_config_override: Any = None,
        enable_network_isolation: bool | None = None,
        model_name: str | None = None,
        source_dir: str | os.PathLike[str] | None = None,
        dependencies: Sequence[str | os.PathLike[str]] | None = None,
        **sagemaker_only_args: Any,
    ) -> Transformer:
        """Creates a model from the latest job and returns a `Transformer` scoring with it.

        As SageMaker's `Framework.transformer`: the model is created now (as `deploy()`
        creates it: the job's model.tar.gz and code), and the transformer's jobs are named
        after the estimator's `base_job_name`.

        Args:
            instance_count: batch workers to share each transform job.
            instance_type: SageMaker-only; ignored with a warning.
            strategy: "MultiRecord" or "SingleRecord"; unset, the model's
                execution_parameters_fn decides, else MultiRecord.
            assemble_with: "None" (default) or "Line".
            output_path: `store://` prefix for the outputs; default per job.
            output_kms_key: SageMaker-only; ignored with a warning.
            accept: MIME type of the outputs; default the model's (JSON).
            env: environment variables for the model's handlers in the transform jobs.
            max_concurrent_transforms: mini-batches scored at once per worker; unset,
                execution_parameters_fn, else 1.
            max_payload: MaxPayloadInMB, 1-100; unset, execution_parameters_fn, else 6.
            tags: SageMaker-only; ignored with a warning.
            role: SageMaker-only; ignored with a warning.
            model_server_workers: passed to the model as SAGEMAKER_MODEL_SERVER_WORKERS.
            volume_kms_key: SageMaker-only; ignored with a warning.
            entry_point: the serving script; default the training entry point.
            vpc_config_override: SageMaker-only; ignored.
            enable_network_isolation: SageMaker-only; ignored with a warning.
            model_name: default `<base_job_name>-<UTC timestamp>`.
            source_dir: the serving code; default the training job's code bundle.
            dependencies: local files or folders added to a local `source_dir`.
            **sagemaker_only_args: other SageMaker arguments, or unknown ones; ignored with
                a warning.

        Raises:
            ValueError: before `fit()`, or when the job has no model artifact.
            SkmakerClientError: when the server refuses to create the model.
        """
        del vpc_config_override  # SageMaker's sentinel default would trip the warning
        warn_ignored(
            {
                "role": role,
                "enable_network_isolation": enable_network_isolation,
                **sagemaker_only_args,
            },
            DEPLOY_SAGEMAKER_ONLY_ARGS | {"enable_network_isolation"},
            "transformer",
            known=inspect.signature(SKLearn.transformer).parameters,
        )
        model = self._new_model(
            model_name,
            model_server_workers=model_server_workers,
            entry_point=entry_point,
            source_dir=source_dir,
            dependencies=dependencies,
            env=None,
        )
        return model.transformer(
            instance_count,
            instance_type,
            strategy=strategy,
            assemble_with=assemble_with,
            output_path=output_path,
            output_kms_key=output_kms_key,
            accept=accept,
            env=env,
            max_concurrent_transforms=max_concurrent_transforms,
            max_payload=max_payload,
            tags=tags,
            volume_kms_key=volume_kms_key,
            base_transform_job_name=self.base_job_name,
        )

    @classmethod
    def attach(
        cls,
        training_job_name: str,
        session: Session | None = None,
        sagemaker_session: Any = None,
        model_channel_name: str = "model",
    ) -> SKLearn:
        """Rebuilds the estimator of an existing training job, waiting for it if it runs.

        As SageMaker's `attach`, the hyperparameters are decoded and the reserved `sagemaker_*`
        keys dropped; the entry point and the code archive come from the job.

        Raises:
            NotFound: when there is no such job.
            UnexpectedStatusException: when the job ended Failed (as SageMaker does).
        """
        del model_channel_name
        if session is None and isinstance(sagemaker_session, Session):
            session = sagemaker_session
        session = session or Session()
        description = session.describe_training_job(training_job_name)
        encoded = description["HyperParameters"]
        algorithm = description["AlgorithmSpecification"]
        log_level = hp.decode_value(encoded.get(hp.CONTAINER_LOG_LEVEL, "20"))
        estimator = cls(
            entry_point=descriptions.entry_point_of(description),
            source_dir=algorithm.get("SourceUri") or None,
            hyperparameters=hp.user_hyperparameters(encoded),
            metric_definitions=algorithm["MetricDefinitions"],
            max_run=description["StoppingCondition"]["MaxRuntimeInSeconds"],
            environment=description["Environment"],
            base_job_name=naming.base_from_name(training_job_name),
            session=session,
            output_path=description["OutputDataConfig"]["S3OutputPath"] or None,
            shell_compat=bool(algorithm.get("ShellCompat", False)),
            container_log_level=log_level if isinstance(log_level, int) else logging.INFO,
        )
        estimator._reserved_hyperparameters = {
            key: value for key, value in encoded.items() if hp.is_reserved(key)
        }
        estimator._current_job_name = training_job_name
        estimator.latest_training_job = TrainingJob(session, training_job_name)
        estimator.latest_training_job.wait(logs=False)
        return estimator
