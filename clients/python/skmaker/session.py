"""`Session`: the connection to skmaker's control service, shaped like SageMaker's Session.

A session owns one gRPC channel and the call policy. It creates, describes, lists, stops and
follows training jobs for the estimator; data transfers (`upload_data`, `download_data`, ...)
come from `skmaker.data_calls.DataCalls`, models, endpoints and invocations from
`skmaker.hosting.HostingCalls`, transform jobs from `skmaker.transform_calls.TransformCalls`,
tuning jobs from `skmaker.tuning_calls.TuningCalls`. Every call has a deadline; only
idempotent calls (describe, list, download, logs) are retried, and only when the server is
UNAVAILABLE. Failed calls raise the exceptions in `skmaker.errors`.
Results are plain dicts shaped like boto3's, never protobuf messages.
"""

from __future__ import annotations

import copy
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc

from skmaker import boto, descriptions
from skmaker.data_calls import S3_SCHEME, DataCalls
from skmaker.errors import SkmakerClientError, UnexpectedStatusException, error_for_rpc
from skmaker.hosting import HostingCalls
from skmaker.inputs import TrainingInput
from skmaker.job_specs import training_job_spec
from skmaker.runtime_calls import RuntimeCalls
from skmaker.transform_calls import TransformCalls
from skmaker.tuning_calls import TuningCalls
from skmaker.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
    transfer,
    tuning_pb2_grpc,
)

DEFAULT_ADDRESS = "localhost:50051"
# `s3://<default bucket>/<key>` names `store://<key>`: the artifact store plays the default
# bucket, so notebook code that builds S3 paths from `default_bucket()` runs unchanged.
DEFAULT_BUCKET = "skmaker"
# What `boto_region_name` answers when $SKMAKER_REGION and $AWS_DEFAULT_REGION are unset.
DEFAULT_REGION = "local"
# The account in ARNs (`Session.arn`): skmaker has no accounts.
ACCOUNT_ID = "000000000000"

# UNAVAILABLE is retried this many times in all for idempotent calls, backing off from
# 0.25 s and doubling (with jitter): long enough to ride out a control restart, short enough
# that a server that is really down is reported within a few seconds.
# About 10 s of retries in all (0.25, 0.5, 1, then 2 s apart): long enough to ride out a
# control restart on a busy machine, short enough that a control that stays down is reported.
RETRY_ATTEMPTS = 8
RETRY_FIRST_BACKOFF_S = 0.25
RETRY_MAX_BACKOFF_S = 2.0

# A followed log stream is reopened (from the next sequence number) after this long, so
# even a silent job's stream has a deadline and a half-dead connection is noticed.
LOG_STREAM_DEADLINE_S = 300.0

# The server accepts pings without data only every 5 minutes (grpc's default); pinging more
# often gets the connection closed with "too_many_pings".
# A lost connection is retried 0.1 s later, then at most a second apart: with grpc's default
# (1 s growing by 1.6x) the channel stays in backoff through most of the retries above, which
# then fail at once without trying to connect, so a control back after two or three seconds
# was never reached.
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 360_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

T = TypeVar("T")


@dataclass(frozen=True)
class LogLine:
    """One line of a training job's log.

    Attributes:
        sequence: position in the job's log, from 0.
        timestamp: when the line was written (UTC).
        stream: "stdout", "stderr" or "platform".
        text: the line without its newline.
    """

    sequence: int
    timestamp: datetime
    stream: str
    text: str


def _backoff_s(attempt: int) -> float:
    delay = min(RETRY_FIRST_BACKOFF_S * 2**attempt, RETRY_MAX_BACKOFF_S)
    return float(delay * random.uniform(0.8, 1.2))


def _is_unavailable(err: grpc.RpcError) -> bool:
    return callable(getattr(err, "code", None)) and err.code() == grpc.StatusCode.UNAVAILABLE


def _tls_credentials(ca: str, cert: str, key: str) -> grpc.ChannelCredentials | None:
    """TLS channel credentials from PEM files; None without a CA (plaintext).

    Raises:
        ValueError: a certificate without its key or CA, or the other way round.
    """
    if bool(cert) != bool(key):
        raise ValueError("tls_cert and tls_key go together (SKMAKER_TLS_CERT, SKMAKER_TLS_KEY)")
    if not ca:
        if cert:
            raise ValueError("tls_cert needs tls_ca (SKMAKER_TLS_CA): the CA to check servers")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None,
    )


class Session(DataCalls, HostingCalls, RuntimeCalls, TransformCalls, TuningCalls):
    """A connection to skmaker, used like `sagemaker.Session`.

    Args:
        address: host:port of the control service; default $SKMAKER_ADDRESS, else
            "localhost:50051".
        token: bearer token sent with every call (to the control and to endpoint replicas);
            default $SKMAKER_TOKEN (none if unset).
        timeout_s: deadline of each control call (transfers get `transfer_timeout_s`;
            invocations have their own, 60 s by default).
        transfer_timeout_s: deadline of each file upload or download.
        tls_ca: root certificate (PEM file) to verify the server with; default $SKMAKER_TLS_CA.
            When set the channels (to the control, the gateway and replicas) use TLS,
            otherwise they are plaintext.
        tls_cert: this client's certificate (PEM file), for servers that require one (mutual
            TLS); default $SKMAKER_TLS_CERT. Needs `tls_ca` and `tls_key`.
        tls_key: the private key (PEM file) of `tls_cert`; default $SKMAKER_TLS_KEY.
        gateway_address: host:port of a gateway (`python -m services.gateway`); default
            $SKMAKER_GATEWAY_ADDRESS. When set, invocations go to the gateway, which routes
            them by endpoint name, instead of straight to the replicas: the way in when the
            replicas cannot be reached from here (containers, another network).
        default_bucket: the bucket name that stands for the artifact store in `s3://` URIs
            (SageMaker's argument); default "skmaker".
        default_bucket_prefix: a key prefix `upload_data` puts before its `key_prefix` when
            no bucket is given, as SageMaker's; default none.
        **sagemaker_only_args: `boto_session`, `settings`, ... (SageMaker's); ignored with a
            warning.

    Attributes:
        sagemaker_client: boto3's SageMaker client shape over this session
            (`skmaker.boto.SageMakerClient`): `describe_training_job(TrainingJobName=...)`...
        sagemaker_runtime_client: boto3's SageMaker Runtime client shape
            (`invoke_endpoint(EndpointName=..., Body=...)`).
        boto_region_name: $SKMAKER_REGION, else $AWS_DEFAULT_REGION, else "local".
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 60.0,
        transfer_timeout_s: float = 3600.0,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        gateway_address: str | None = None,
        default_bucket: str | None = None,
        default_bucket_prefix: str | None = None,
        **sagemaker_only_args: Any,
    ) -> None:
        ignored = sorted(name for name, value in sagemaker_only_args.items() if value is not None)
        if ignored:
            warnings.warn(
                "skmaker ignores these SageMaker-only arguments of Session: " + ", ".join(ignored),
                UserWarning,
                stacklevel=2,
            )
        self.address = address or os.environ.get("SKMAKER_ADDRESS") or DEFAULT_ADDRESS
        if default_bucket is not None and ("/" in default_bucket or not default_bucket.strip()):
            raise ValueError(f"default_bucket {default_bucket!r} is not a bucket name")
        # Asked from the control on first use when not given (DescribeArtifactStore).
        self._default_bucket = default_bucket
        self._store_location: tuple[str, str, str] | None = None
        self.default_bucket_prefix = (default_bucket_prefix or "").strip("/") or None
        self.boto_region_name = (
            os.environ.get("SKMAKER_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or DEFAULT_REGION
        )
        token = token if token is not None else os.environ.get("SKMAKER_TOKEN", "")
        self.timeout_s = timeout_s
        self.transfer_timeout_s = transfer_timeout_s
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        credentials = _tls_credentials(
            tls_ca if tls_ca is not None else os.environ.get("SKMAKER_TLS_CA", ""),
            tls_cert if tls_cert is not None else os.environ.get("SKMAKER_TLS_CERT", ""),
            tls_key if tls_key is not None else os.environ.get("SKMAKER_TLS_KEY", ""),
        )
        if credentials is not None:
            self._channel = grpc.secure_channel(self.address, credentials, _CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(self.address, _CHANNEL_OPTIONS)
        self._training = training_pb2_grpc.TrainingServiceStub(self._channel)
        self._tuning = tuning_pb2_grpc.TuningServiceStub(self._channel)
        self._artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self._channel)
        self.gateway_address = (
            gateway_address
            if gateway_address is not None
            else os.environ.get("SKMAKER_GATEWAY_ADDRESS", "")
        )
        self._init_hosting(self._channel, credentials, self.gateway_address)
        self._init_transform(self._channel)
        self._init_tuning(self._channel)
        self._init_runtimes(self._channel)
        self.sagemaker_client = boto.SageMakerClient(self)
        self.sagemaker_runtime_client = boto.SageMakerRuntimeClient(self)

    def __repr__(self) -> str:
        return f"Session(address={self.address!r})"

    def close(self) -> None:
        """Closes the channels (control and endpoints); the session cannot be used afterwards."""
        self._close_hosting()
        self._channel.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- calls -------------------------------------------------------------------------------

    def _call(self, attempt: Callable[[], T], *, idempotent: bool) -> T:
        """Runs one RPC, retrying UNAVAILABLE for idempotent calls; maps errors to ours."""
        attempts = RETRY_ATTEMPTS if idempotent else 1
        for number in range(attempts):
            try:
                return attempt()
            except grpc.RpcError as err:
                if not (_is_unavailable(err) and number + 1 < attempts):
                    raise error_for_rpc(err) from None
            time.sleep(_backoff_s(number))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _rpc(self, method: Callable[..., T], request: Any, *, idempotent: bool) -> T:
        """Runs the unary RPC `method(request)` with this session's deadline and token."""
        return self._call(
            lambda: method(request, timeout=self.timeout_s, metadata=self._metadata),
            idempotent=idempotent,
        )

    # -- data --------------------------------------------------------------------------------

    def _collect_pages(
        self,
        list_method: Callable[..., Any],
        page_request: Callable[[int, str], Any],
        summaries_of: Callable[[Any], list[dict[str, Any]]],
        max_results: int | None,
    ) -> list[dict[str, Any]]:
        """Follows `next_page_token` until the last page, or until `max_results` summaries.

        Args:
            list_method: the List RPC.
            page_request: its request for (page_size, page_token); 0 is the server default.
            summaries_of: the summaries in one response.
            max_results: stop after this many; all when None.
        """
        summaries: list[dict[str, Any]] = []
        page_token = ""
        while True:
            page_size = min(1000, max_results - len(summaries)) if max_results else 0
            response = self._rpc(list_method, page_request(page_size, page_token), idempotent=True)
            summaries += summaries_of(response)
            page_token = response.next_page_token
            if not page_token or (max_results and len(summaries) >= max_results):
                return summaries[:max_results] if max_results else summaries

    def default_bucket(self) -> str:
        """The bucket of the artifact store: `s3://<it>/<key>` is `store://<key>` wherever a
        URI is taken (fit inputs, model data, output paths, ...).

        The control tells it: the bucket of its S3 store (`--artifact-store s3://BUCKET/...`,
        whose `s3://` URIs then include the store's prefix), else `skmaker`.
        `Session(default_bucket=...)` names another one, standing for the whole store.
        """
        return self._default_bucket or self._artifact_store()[1]

    def _artifact_store(self) -> tuple[str, str, str]:
        """(kind, bucket, prefix) of the control's artifact store, asked once."""
        if self._store_location is None:
            try:
                answer = self._rpc(
                    self._artifacts.DescribeArtifactStore,
                    artifacts_pb2.DescribeArtifactStoreRequest(),
                    idempotent=True,
                )
                self._store_location = (answer.kind, answer.bucket, answer.prefix)
            except SkmakerClientError as err:
                if err.code != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                # An older control: the local store, as it always was.
                self._store_location = ("local", DEFAULT_BUCKET, "")
        return self._store_location

    def _s3_root(self) -> str:
        """`s3://<bucket>` or `s3://<bucket>/<prefix>`: the `s3://` form of `store://`."""
        if self._default_bucket:  # named by the caller: the bucket stands for the whole store
            return f"{S3_SCHEME}{self._default_bucket}"
        _kind, bucket, prefix = self._artifact_store()
        return f"{S3_SCHEME}{bucket}" + (f"/{prefix}" if prefix else "")

    def s3_uri(self, uri: str) -> str:
        """The `s3://` URI of a `store://` URI (or a key): where the object is in the bucket."""
        key = uri[len(transfer.SCHEME) :] if uri.startswith(transfer.SCHEME) else uri
        return self._s3_root() + ("/" + key.strip("/") if key.strip("/") else "")

    def public_uri(self, uri: str) -> str:
        """A `store://` URI in the form users see: `s3://` when the control keeps artifacts in
        an S3 store (where boto3 and other tools find the object), `store://` otherwise."""
        if uri.startswith(transfer.SCHEME) and self._artifact_store()[0] == "s3":
            return self.s3_uri(uri)
        return uri

    def arn(self, kind: str, name: str) -> str:
        """A SageMaker-style ARN of a resource (`training-job`, `model`, `endpoint`, ...), in
        `boto_region_name` and account 000000000000 (skmaker has no accounts)."""
        return f"arn:aws:sagemaker:{self.boto_region_name}:{ACCOUNT_ID}:{kind}/{name.lower()}"

    def store_uri(self, uri: str) -> str:
        """The `store://` URI a data URI names: `s3://<default bucket>/<key>` maps to
        `store://<key>`; other URIs (`store://`, `file://`) are returned as they are.

        Raises:
            ValueError: for an `s3://` URI of another bucket (skmaker has one store).
        """
        if not uri.startswith(S3_SCHEME):
            return uri
        root = self._s3_root()
        if uri.rstrip("/") != root and not uri.startswith(root + "/"):
            bucket = uri[len(S3_SCHEME) :].partition("/")[0]
            raise ValueError(
                f"{uri!r} is in bucket {bucket!r}, outside skmaker's artifact store {root}/ "
                "(Session.default_bucket()); upload the data with Session.upload_data() or "
                "use that bucket"
            )
        return transfer.SCHEME + uri[len(root) :].strip("/")

    def store_key(self, uri: str) -> str:
        """The artifact-store key of a `store://` or `s3://<default bucket>/` URI.

        Raises:
            ValueError: for another scheme or bucket, or a key that is empty or has `..`.
        """
        return transfer.key_of(self.store_uri(uri))

    # -- training jobs -----------------------------------------------------------------------

    def create_training_job(
        self,
        name: str,
        *,
        entry_point: str,
        source_uri: str,
        hyperparameters: Mapping[str, str],
        channels: Mapping[str, TrainingInput],
        metric_definitions: Sequence[Mapping[str, str]] = (),
        environment: Mapping[str, str] | None = None,
        max_run: int = 86400,
        output_uri: str = "",
        shell_compat: bool = False,
        source_sha256: str = "",
        framework_version: str = "",
    ) -> dict[str, Any]:
        """Creates a training job and returns its description (not retried).

        Args:
            name: the job name.
            entry_point: the script, relative to the root of the source bundle.
            source_uri: `store://` URI of sourcedir.tar.gz.
            hyperparameters: already JSON-encoded values (see `skmaker.hyperparameters`).
            channels: channel name -> input.
            metric_definitions: `[{"Name": ..., "Regex": ...}]` as in SageMaker.
            environment: environment variables for the script.
            max_run: maximum run time in seconds.
            output_uri: folder for model.tar.gz and output.tar.gz; empty for the default.
            shell_compat: run the script through /bin/sh as SageMaker's toolkit does.
            source_sha256: the sha256 of the bundle the caller uploaded; the job is created
                only if that is the bundle at `source_uri` (empty: whatever is there).
            framework_version: the scikit-learn to train with ("1.2-1", "1.5"); empty: the
                newest the server has.

        Raises:
            AlreadyExists, InvalidArgument, NotFound, FailedPrecondition: as the server
                decides (FailedPrecondition: the bundle is not the one with `source_sha256`;
                InvalidArgument: a framework_version it has no runtime for).
        """
        spec = training_job_spec(
            entry_point=entry_point,
            source_uri=self.store_uri(source_uri),
            hyperparameters=hyperparameters,
            channels=self._channels_in_store(channels),
            metric_definitions=metric_definitions,
            environment=environment,
            max_run=max_run,
            output_uri=self.store_uri(output_uri),
            shell_compat=shell_compat,
            source_sha256=source_sha256,
            framework_version=framework_version,
        )
        request = training_pb2.CreateTrainingJobRequest(name=name, spec=spec)
        response = self._rpc(self._training.CreateTrainingJob, request, idempotent=False)
        return descriptions.training_job_description(response.training_job)

    def _channels_in_store(self, channels: Mapping[str, TrainingInput]) -> dict[str, TrainingInput]:
        """The channels with `s3://<default bucket>/` data renamed to `store://`."""
        renamed = {}
        for channel, data in channels.items():
            uri = self.store_uri(data.s3_data)
            if uri != data.s3_data:
                data = copy.copy(data)
                data.s3_data = uri
            renamed[channel] = data
        return renamed

    def describe_training_job(self, job_name: str) -> dict[str, Any]:
        """A DescribeTrainingJob-shaped dict of one job (see `skmaker.descriptions`).

        Raises:
            NotFound: when there is no such job.
        """
        request = training_pb2.DescribeTrainingJobRequest(name=job_name)
        response = self._rpc(self._training.DescribeTrainingJob, request, idempotent=True)
        description = descriptions.training_job_description(response.training_job)
        description["TrainingJobArn"] = self.arn("training-job", job_name)
        if description.get("TuningJobName"):
            description["TuningJobArn"] = self.arn(
                "hyper-parameter-tuning-job", description["TuningJobName"]
            )
        return description

    def list_training_jobs(
        self,
        *,
        status_equals: str | None = None,
        name_contains_prefix: str = "",
        max_results: int | None = None,
    ) -> list[dict[str, Any]]:
        """Summaries of training jobs, newest first (boto3's `TrainingJobSummaries` entries).

        Args:
            status_equals: only jobs in this status (InProgress, Completed, Failed, ...).
            name_contains_prefix: only jobs whose name starts with this.
            max_results: stop after this many; all when None.
        """
        status = descriptions.status_value(status_equals) if status_equals else 0
        return self._collect_pages(
            self._training.ListTrainingJobs,
            lambda size, token: training_pb2.ListTrainingJobsRequest(
                status=status,  # type: ignore[arg-type]
                name_prefix=name_contains_prefix,
                page_size=size,
                page_token=token,
            ),
            lambda response: [descriptions.training_job_summary(j) for j in response.training_jobs],
            max_results,
        )

    def stop_training_job(self, job_name: str) -> dict[str, Any]:
        """Asks a job to stop; returns its description (now Stopping or Stopped).

        Raises:
            NotFound: when there is no such job.
            FailedPrecondition: when the job has already ended.
        """
        request = training_pb2.StopTrainingJobRequest(name=job_name)
        response = self._rpc(self._training.StopTrainingJob, request, idempotent=False)
        return descriptions.training_job_description(response.training_job)

    def training_job_log_lines(
        self, job_name: str, *, from_sequence: int = 0, follow: bool = False
    ) -> Iterator[LogLine]:
        """A job's log lines in order; with `follow`, until the job ends.

        The stream is reopened from the next line when the server is briefly unavailable and,
        while following, whenever its deadline passes, so no line is lost or repeated.

        Raises:
            NotFound: when there is no such job.
            Unavailable: when the server stays unreachable through the retries.
        """
        next_sequence = from_sequence
        failures = 0
        while True:
            request = training_pb2.GetTrainingJobLogsRequest(
                name=job_name, from_sequence=next_sequence, follow=follow
            )
            deadline_s = LOG_STREAM_DEADLINE_S if follow else self.timeout_s
            try:
                for response in self._training.GetTrainingJobLogs(
                    request, timeout=deadline_s, metadata=self._metadata
                ):
                    for line in response.lines:
                        if line.sequence < next_sequence:
                            continue  # already yielded before a reconnect
                        failures = 0
                        next_sequence = line.sequence + 1
                        yield LogLine(
                            sequence=line.sequence,
                            timestamp=descriptions.to_datetime(line.timestamp),
                            stream=line.stream,
                            text=line.text,
                        )
                return
            except grpc.RpcError as err:
                code = err.code() if callable(getattr(err, "code", None)) else None
                if follow and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue
                failures += 1
                if not (_is_unavailable(err) and failures < RETRY_ATTEMPTS):
                    raise error_for_rpc(err) from None
                time.sleep(_backoff_s(failures - 1))

    def logs_for_job(self, job_name: str, wait: bool = False, out: IO[str] | None = None) -> None:
        """Prints a job's log to `out` (stdout); with `wait`, follows it until the job ends."""
        stream = out if out is not None else sys.stdout
        for line in self.training_job_log_lines(job_name, follow=wait):
            print(line.text, file=stream, flush=True)

    def wait_for_job(self, job_name: str, poll_s: float = 2.0) -> dict[str, Any]:
        """Polls until the job ends; returns its description.

        Polling starts fast (a short job returns in well under a second) and backs off to one
        describe per `poll_s`.

        Raises:
            UnexpectedStatusException: when the job ended Failed.
            NotFound: when there is no such job.
        """
        interval_s = 0.1
        while True:
            description = self.describe_training_job(job_name)
            if description["TrainingJobStatus"] in descriptions.TERMINAL_STATUSES:
                return check_job_status(description)
            time.sleep(interval_s)
            interval_s = min(poll_s, interval_s * 1.5)


def get_execution_role(sagemaker_session: Session | None = None) -> str:
    """A stand-in for SageMaker's execution role ARN, for notebooks that pass one along.

    skmaker has no IAM: every `role` argument is accepted and ignored, so this only keeps
    `role = get_execution_role()` cells running. The ARN names account 000000000000.
    """
    del sagemaker_session
    return f"arn:aws:iam::{ACCOUNT_ID}:role/skmaker"


def check_job_status(description: dict[str, Any]) -> dict[str, Any]:
    """Returns `description` unless the job Failed, as SageMaker's `_check_job_status`.

    Raises:
        UnexpectedStatusException: when `TrainingJobStatus` is Failed.
    """
    status = description["TrainingJobStatus"]
    if status == "Failed":
        raise UnexpectedStatusException(
            description["TrainingJobName"], status, description.get("FailureReason", "(none)")
        )
    return description
