"""`Transformer`: SageMaker's batch transform, scored by skmaker's batch workers.

    transformer = estimator.transformer(instance_count=2, assemble_with="Line",
                                        accept="text/csv")
    transformer.transform("store://iris/batch", content_type="text/csv", split_type="Line")
    transformer.output_path               # store://transform-jobs/<job>: one <input>.out a file

`transform()` creates a transform job over every object at or below the input URI and, with
`wait`, follows it to the end with a progress bar (input bytes scored over all files). As in
SageMaker, arguments left None are not sent, so the service's defaults apply (SplitType None,
MultiRecord, 6 MB payloads, AssembleWith None, the model's accept type); a bad record fails its
file and the job ends Failed with the file and line in its reason, raised as
`UnexpectedStatusException`. skmaker goes further on two points: a large Line-split file is
shared by the workers (SageMaker gives a file to one instance), and `record_errors=True` scores
every good record and lists the bad ones in `<input>.out.errors`. Arguments that only mean
something on AWS (`instance_type`, `tags`, KMS keys, ...) are accepted and ignored with one
warning.
"""

from __future__ import annotations

import inspect
import logging
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm

from skmaker import naming
from skmaker.arguments import warn_ignored
from skmaker.session import Session

log = logging.getLogger("skmaker")

DATA_TYPE = "S3Prefix"

# Transformer arguments of SageMaker's that have no effect on skmaker.
_SAGEMAKER_ONLY_ARGS = frozenset(
    {"instance_type", "output_kms_key", "tags", "volume_kms_key", "sagemaker_session"}
)


def _warn_ignored(arguments: Mapping[str, Any], caller: str) -> None:
    ignored = sorted(name for name, value in arguments.items() if value is not None)
    if ignored:
        warnings.warn(
            f"skmaker ignores these SageMaker-only arguments of {caller}: " + ", ".join(ignored),
            UserWarning,
            stacklevel=3,
        )


class TransformJob:
    """A handle on one transform job: SageMaker's `transformer.latest_transform_job`.

    Args:
        sagemaker_session: the session that reaches the job.
        job_name: the job's name.
    """

    def __init__(self, sagemaker_session: Session, job_name: str) -> None:
        self.sagemaker_session = sagemaker_session
        self.job_name = job_name

    @property
    def name(self) -> str:
        """The job's name."""
        return self.job_name

    def __repr__(self) -> str:
        return f"TransformJob({self.job_name!r})"

    def describe(self) -> dict[str, Any]:
        """The job's DescribeTransformJob-shaped dict, with per-file progress in `Files`."""
        return self.sagemaker_session.describe_transform_job(self.job_name)

    def stop(self) -> None:
        """Asks the job to stop; files already scored keep their `.out`."""
        self.sagemaker_session.stop_transform_job(self.job_name)

    def wait(self, logs: bool = True) -> dict[str, Any]:
        """Waits for the job to end; returns its description.

        Args:
            logs: show a progress bar on stderr (input bytes scored over all files, and files
                done) while waiting; it appears after a second, on a terminal only.

        Raises:
            UnexpectedStatusException: when the job ended Failed. A Stopped job returns
                normally, after a warning in the log, as in SageMaker.
        """
        session = self.sagemaker_session
        if logs:
            with _ProgressBar(self.job_name) as bar:
                description = session.wait_for_transform_job(self.job_name, progress=bar.show)
        else:
            description = session.wait_for_transform_job(self.job_name)
        if description["TransformJobStatus"] == "Stopped":
            log.warning("transform job %s stopped before it completed", self.job_name)
        bad = sum(file["RecordsFailed"] for file in description["Files"])
        if bad:
            log.warning(
                "transform job %s: %d bad record(s), listed in the files' .out.errors",
                self.job_name,
                bad,
            )
        return description


class _ProgressBar:
    """A tqdm bar fed with transform-job descriptions: input bytes done over all files."""

    def __init__(self, job_name: str) -> None:
        # delay: a bar appears only for jobs that take more than a moment.
        self._bar: tqdm[Any] = tqdm(
            total=0,
            desc=f"transform {job_name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            delay=1.0,
            file=sys.stderr,
            disable=None,
            leave=False,
        )

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.close()

    def show(self, description: Mapping[str, Any]) -> None:
        """Moves the bar to what `description` (DescribeTransformJob) reports."""
        files = description["Files"]
        total = sum(file["BytesTotal"] for file in files)
        # A finished file counts whole: a file's last shard may report fewer bytes than it
        # read (its final line end, say), and a failed file will read no more.
        done = sum(
            file["BytesTotal"] if file["Status"] in _FINISHED else file["BytesDone"]
            for file in files
        )
        finished = sum(1 for file in files if file["Status"] in _FINISHED)
        if total != self._bar.total:
            self._bar.total = total
        self._bar.set_postfix_str(f"{finished}/{len(files)} files", refresh=False)
        self._bar.update(min(done, total) - self._bar.n)


_FINISHED = frozenset({"Completed", "Failed", "Stopped"})


class Transformer:
    """Scores files with a model in batch, with `sagemaker.transformer.Transformer`'s API.

    The parameters keep SageMaker's order, so positional SageMaker code works.

    Args:
        model_name: the model to score with (created by `SKLearnModel.create()`, `deploy()`
            or `transformer()`).
        instance_count: batch workers to share the job (SageMaker's instances); a large
            Line-split file is cut into byte ranges that several workers score at once.
        instance_type: SageMaker-only; ignored with a warning.
        strategy: "MultiRecord" or "SingleRecord"; unset, the model's
            `execution_parameters_fn` decides, else MultiRecord (SageMaker's precedence).
        assemble_with: "None" (answers concatenated; the service default) or "Line" (a line
            end after each record's output).
        output_path: `store://` prefix for the outputs; default
            `store://transform-jobs/<job name>`, set after each `transform()`.
        output_kms_key: SageMaker-only; ignored with a warning.
        accept: MIME type of the outputs (e.g. "text/csv"); default the model's (JSON).
        max_concurrent_transforms: mini-batches scored at once per worker; unset,
            `execution_parameters_fn`, else 1.
        max_payload: MaxPayloadInMB, 1-100 (unset: `execution_parameters_fn`, else 6): the
            most bytes of records in one mini-batch; larger mini-batches score faster.
        tags: SageMaker-only; ignored with a warning.
        env: environment variables for the model's handlers.
        base_transform_job_name: prefix of generated job names; default the model's name
            without its timestamp.
        sagemaker_session: the skmaker `Session` (a SageMaker session is ignored).
        volume_kms_key: SageMaker-only; ignored with a warning.
        session: alias of `sagemaker_session`; default `Session()` from the environment.
        **sagemaker_only_args: SageMaker's other arguments (`vpc_config`, `output_filter`...)
            or unknown ones; accepted and ignored with a warning.
    """

    def __init__(
        self,
        model_name: str,
        instance_count: int = 1,
        instance_type: str | None = None,
        strategy: str | None = None,
        assemble_with: str | None = None,
        output_path: str | None = None,
        output_kms_key: str | None = None,
        accept: str | None = None,
        max_concurrent_transforms: int | None = None,
        max_payload: int | None = None,
        tags: Any = None,
        env: Mapping[str, str] | None = None,
        base_transform_job_name: str | None = None,
        sagemaker_session: Any = None,
        volume_kms_key: str | None = None,
        session: Session | None = None,
        **sagemaker_only_args: Any,
    ) -> None:
        ignored = {
            **sagemaker_only_args,
            "instance_type": instance_type,
            "output_kms_key": output_kms_key,
            "tags": tags,
            "volume_kms_key": volume_kms_key,
        }
        if isinstance(sagemaker_session, Session):
            if session is not None and session is not sagemaker_session:
                raise ValueError("pass either session or sagemaker_session, not both")
            session = sagemaker_session
        else:
            ignored["sagemaker_session"] = sagemaker_session
        warn_ignored(
            ignored,
            _SAGEMAKER_ONLY_ARGS,
            "Transformer",
            known=inspect.signature(Transformer).parameters,
        )
        self.model_name = model_name
        self.instance_count = instance_count
        self.instance_type = instance_type
        self.strategy = strategy
        self.assemble_with = assemble_with
        self.output_path = output_path
        self.accept = accept
        self.max_concurrent_transforms = max_concurrent_transforms
        self.max_payload = max_payload
        self.env = dict(env) if env is not None else None
        self.base_transform_job_name = base_transform_job_name
        self.latest_transform_job: TransformJob | None = None
        self._current_job_name: str | None = None
        # As SageMaker: an output path this transformer chose follows each new job.
        self._reset_output_path = False
        self._session = session

    def __repr__(self) -> str:
        return f"Transformer(model_name={self.model_name!r}, job={self._current_job_name!r})"

    def delete_model(self) -> None:
        """Deletes the model this transformer scores with, as SageMaker's.

        Transform jobs already created keep scoring: each carries its copy of the model.

        Raises:
            NotFound: when the model is gone already.
        """
        self.sagemaker_session.delete_model(self.model_name)

    @property
    def sagemaker_session(self) -> Session:
        """The session, created from the environment on first use when none was given."""
        if self._session is None:
            self._session = Session()
        return self._session

    def transform(
        self,
        data: str,
        data_type: str = DATA_TYPE,
        content_type: str | None = None,
        compression_type: str | None = None,
        split_type: str | None = None,
        job_name: str | None = None,
        input_filter: str | None = None,
        output_filter: str | None = None,
        join_source: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
        model_client_config: Mapping[str, Any] | None = None,
        batch_data_capture_config: Any = None,
        wait: bool = True,
        logs: bool = True,
        *,
        record_errors: bool = False,
        skip_header: bool = False,
    ) -> None:
        """Starts a transform job over `data` and, with `wait`, follows it to the end.

        Every object at or below `data` is scored into
        `<output_path>/<key relative to data>.out` (`<name>.out` for a single object).

        Args:
            data: `store://` URI of an object or a prefix (see `Session.upload_data`).
            data_type: "S3Prefix" (the only kind: a manifest file is not supported).
            content_type: MIME type of the records, e.g. "text/csv"; given to input_fn.
            compression_type: "None" or "Gzip" (such objects are scored whole, by one worker).
            split_type: "None" (a whole file is one request; the default) or "Line".
            job_name: default `<base_transform_job_name>-<UTC timestamp>`.
            input_filter: JSONPath applied to each record before scoring, e.g. "$[1:]" to
                drop an ID column of a CSV (slices include their end, as AWS documents).
            output_filter: JSONPath applied to each output record, e.g. "$[0,-1]".
            join_source: "Input" to output each input record joined with its prediction.
            experiment_config: SageMaker-only; ignored with a warning.
            model_client_config: SageMaker-only; ignored with a warning.
            batch_data_capture_config: SageMaker-only; ignored with a warning.
            wait: block until the job ends.
            logs: with `wait`, show a progress bar while waiting.
            record_errors: skmaker extension: a bad record does not fail its file; the good
                ones are scored and the bad ones listed in `<input>.out.errors`.
            skip_header: skmaker extension: drop the first line of each file (a CSV header).

        Raises:
            ValueError: a data type other than S3Prefix, a local path for `data`, or a bad
                job name (all before any call to the server).
            UnexpectedStatusException: with `wait`, when the job ended Failed; the reason
                names the failed files and the line of the first bad record.
            SkmakerClientError: when the server refuses the job (InvalidArgument for a bad
                setting, NotFound for a missing model or input).
        """
        _warn_ignored(
            {
                "experiment_config": experiment_config,
                "model_client_config": model_client_config,
                "batch_data_capture_config": batch_data_capture_config,
            },
            "transform",
        )
        if data_type != DATA_TYPE:
            raise ValueError(f"data_type {data_type!r} is not supported: use {DATA_TYPE!r}")
        if "://" not in data:
            raise ValueError(
                f"data {data!r} is not a URI: upload local files with Session.upload_data() "
                "and pass the store:// URI it returns"
            )
        if job_name is not None:
            name = naming.validate_name(job_name)
        else:
            base = self.base_transform_job_name or naming.base_from_name(self.model_name)
            name = naming.name_from_base(base)
        if self._reset_output_path:
            self.output_path = None
        log.info("Creating transform job with name: %s", name)
        description = self.sagemaker_session.create_transform_job(
            name,
            model_name=self.model_name,
            input_uri=data,
            output_uri=self.output_path,
            content_type=content_type,
            accept=self.accept,
            split_type=split_type,
            compression_type=compression_type,
            strategy=self.strategy,
            max_payload=self.max_payload,
            max_concurrent_transforms=self.max_concurrent_transforms,
            assemble_with=self.assemble_with,
            input_filter=input_filter,
            join_source=join_source,
            output_filter=output_filter,
            instance_count=self.instance_count,
            environment=self.env,
            record_errors=record_errors,
            skip_header=skip_header,
        )
        if self.output_path is None:  # the default one, in the form users see
            output = str(description["TransformOutput"]["S3OutputPath"])
            self.output_path = self.sagemaker_session.public_uri(output)
            self._reset_output_path = True
        self._current_job_name = name
        self.latest_transform_job = TransformJob(self.sagemaker_session, name)
        if wait:
            self.latest_transform_job.wait(logs=logs)

    def _require_job(self) -> TransformJob:
        if self.latest_transform_job is None:
            raise ValueError("No transform job available; call transform() first")
        return self.latest_transform_job

    def wait(self, logs: bool = True) -> dict[str, Any]:
        """Waits for the latest transform job to end; returns its description.

        Args:
            logs: show a progress bar (input bytes scored over all files) while waiting.

        Raises:
            ValueError: before `transform()`.
            UnexpectedStatusException: when the job ended Failed.
        """
        return self._require_job().wait(logs=logs)

    def stop_transform_job(self, wait: bool = True) -> None:
        """Stops the latest transform job and, with `wait`, waits until it is Stopped.

        Raises:
            ValueError: before `transform()`.
            FailedPrecondition: when the job has already ended.
        """
        job = self._require_job()
        job.stop()
        if wait:
            job.wait(logs=False)

    @classmethod
    def attach(
        cls,
        transform_job_name: str,
        sagemaker_session: Any = None,
        session: Session | None = None,
    ) -> Transformer:
        """The transformer of an existing transform job; its settings come from the job.

        As in SageMaker, it does not wait: call `wait()` to follow a running job. A next
        `transform()` reuses the job's settings and output path.

        Raises:
            NotFound: when there is no such transform job.
        """
        if session is None and isinstance(sagemaker_session, Session):
            session = sagemaker_session
        session = session or Session()
        description = session.describe_transform_job(transform_job_name)
        transformer = cls(
            description["ModelName"],
            instance_count=description["TransformResources"]["InstanceCount"],
            strategy=description.get("BatchStrategy"),
            assemble_with=description["TransformOutput"]["AssembleWith"],
            output_path=description["TransformOutput"]["S3OutputPath"],
            accept=description["TransformOutput"].get("Accept"),
            max_concurrent_transforms=description.get("MaxConcurrentTransforms"),
            max_payload=description.get("MaxPayloadInMB"),
            env=description["Environment"] or None,
            base_transform_job_name=naming.base_from_name(transform_job_name),
            session=session,
        )
        transformer._current_job_name = transform_job_name
        transformer.latest_transform_job = TransformJob(session, transform_job_name)
        return transformer
