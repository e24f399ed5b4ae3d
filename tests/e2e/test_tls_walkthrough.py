"""skmaker over TLS and mutual TLS, with named people tokens and a /metrics token, end to end.

One stack per mode (module-scoped): the embedded control (`--local`: its trainer, batch
workers and replicas are its children and get its TLS files and metrics token) and a gateway
in front of the replicas (HAProxy when installed), each serving TLS with a certificate the
test makes (trustme), asking for a client certificate under mutual TLS, taking the people's
tokens of one file (alice, bob) and its own admin token. alice trains the iris walkthrough,
deploys it, predicts through the gateway and runs a batch transform; the control's audit log
names her. A plaintext client, a client without (or with a stranger's) certificate under
mutual TLS, a wrong token, and a scrape of /metrics without the token are refused.
"""

from __future__ import annotations

import ssl
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import joblib
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_iris

from skmaker import Session, SKLearn
from skmaker.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from tests.certificates import Certificates, make_certificates
from tests.harness import REPO_ROOT, ServiceProcess, run_service

pytestmark = pytest.mark.integration

EXAMPLE_DIR = REPO_ROOT / "examples" / "iris"
PEOPLE = {"alice": "alice-7f3c9e1b2d", "bob": "bob-0a8d4c6e5f"}
ADMIN_TOKEN = "admin-5e2b7d9c1a"
WORKER_TOKEN = "worker-9b4e2f7a1c"
METRICS_TOKEN = "scrape-3c1f8a2e6b"


@dataclass
class Stack:
    """A control and a gateway serving (mutual) TLS, and what a client needs to call them."""

    mode: str
    certs: Certificates
    control: ServiceProcess
    gateway: ServiceProcess

    @property
    def mutual(self) -> bool:
        return self.mode == "mutual-tls"

    def credentials(self, *, with_cert: bool = True) -> grpc.ChannelCredentials:
        """A client's: the CA, and under mutual TLS (unless told not to) its certificate."""
        own = self.mutual and with_cert
        return grpc.ssl_channel_credentials(
            root_certificates=self.certs.ca.read_bytes(),
            private_key=self.certs.client_key.read_bytes() if own else None,
            certificate_chain=self.certs.client_cert.read_bytes() if own else None,
        )

    def session(self, token: str) -> Session:
        """A client session as the holder of `token`, invoking through the gateway."""
        return Session(
            self.control.address,
            token,
            tls_ca=str(self.certs.ca),
            tls_cert=str(self.certs.client_cert) if self.mutual else "",
            tls_key=str(self.certs.client_key) if self.mutual else "",
            gateway_address=self.gateway.address,
        )

    def https_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        if self.mutual:
            context.load_cert_chain(str(self.certs.client_cert), str(self.certs.client_key))
        return context


def _secret_file(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module", params=["tls", "mutual-tls"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    mode = str(request.param)
    tmp = tmp_path_factory.mktemp(f"tls-{mode}")
    certs = make_certificates(tmp / "certs")
    secrets = [
        "--auth-token-file",
        _secret_file(tmp / "admin.token", ADMIN_TOKEN),
        "--auth-tokens-file",
        _secret_file(tmp / "people.tokens", "\n".join(f"{n}:{t}" for n, t in PEOPLE.items())),
        "--metrics-token-file",
        _secret_file(tmp / "metrics.token", METRICS_TOKEN),
    ]
    workers = _secret_file(tmp / "workers.tokens", f"outside:{WORKER_TOKEN}")
    tls_args = certs.server_args(mutual=mode == "mutual-tls")
    health = Stack(mode, certs, None, None).credentials()  # type: ignore[arg-type]
    control = run_service(
        "control",
        tmp,
        [
            "--local",
            "--data-dir",
            str(tmp / "data"),
            *tls_args,
            *secrets,
            f"--worker-tokens-file={workers}",
        ],
        credentials=health,
    )
    gateway: ServiceProcess | None = None
    try:
        gateway = run_service(
            "gateway", tmp, ["--control", control.address, *tls_args, *secrets], credentials=health
        )
        yield Stack(mode, certs, control, gateway)
    finally:
        try:
            if gateway is not None:
                gateway.stop()
        finally:
            control.stop()


def test_train_deploy_predict_and_transform_as_a_named_person(stack: Stack, tmp_path: Path) -> None:
    iris = load_iris()
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "iris.csv").write_text(
        "".join(
            f"{label}," + ",".join(f"{value:.1f}" for value in row) + "\n"
            for label, row in zip(iris.target, iris.data, strict=True)
        )
    )
    rows = iris.data[::7]
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "rows.csv").write_text(
        "".join(",".join(f"{value:.1f}" for value in row) + "\n" for row in rows)
    )
    with stack.session(PEOPLE["alice"]) as session:
        train_uri = session.upload_data(str(tmp_path / "train"), key_prefix="tls/train")
        estimator = SKLearn(
            entry_point="scikit_learn_iris.py",
            source_dir=str(EXAMPLE_DIR),
            hyperparameters={"max_leaf_nodes": 30},
            base_job_name="tls",
            session=session,
        )
        estimator.fit({"train": train_uri}, logs=False)
        (archive,) = session.download_data(tmp_path / "model", estimator.model_data)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extract("model.joblib", tmp_path / "model", filter="data")
        trained = joblib.load(tmp_path / "model" / "model.joblib")

        predictor = estimator.deploy(initial_instance_count=1)
        try:
            # Through the gateway (the session's gateway_address), over TLS both ways.
            np.testing.assert_array_equal(predictor.predict(rows), trained.predict(rows))
        finally:
            predictor.delete_endpoint()

        data_uri = session.upload_data(str(tmp_path / "rows"), key_prefix="tls/rows")
        transformer = estimator.transformer(
            instance_count=1, assemble_with="Line", accept="text/csv"
        )
        transformer.transform(data_uri, content_type="text/csv", split_type="Line")
        assert transformer.output_path is not None
        outputs = session.download_data(tmp_path / "out", transformer.output_path)
        (output,) = [Path(path) for path in outputs if str(path).endswith("rows.csv.out")]
        assert output.read_text() == "".join(f"{label}\n" for label in trained.predict(rows))

    job = estimator.latest_training_job
    assert job is not None
    audit = stack.control.stderr_path.read_text()
    for line in (
        f"who=alice method=CreateTrainingJob resource={job.name} outcome=OK",
        f"who=alice method=CreateModel resource={predictor.endpoint_name} outcome=OK",
        f"who=alice method=CreateEndpoint resource={predictor.endpoint_name} outcome=OK",
        f"who=alice method=DeleteEndpoint resource={predictor.endpoint_name} outcome=OK",
        "who=alice method=CreateTransformJob resource=",
    ):
        assert line in audit, stack.control.logs()


def test_a_wrong_token_is_unauthenticated_and_audited(stack: Stack) -> None:
    wrong = (("authorization", "Bearer not-a-token"),)
    with grpc.secure_channel(stack.control.address, stack.credentials()) as channel:
        training = training_pb2_grpc.TrainingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            training.StopTrainingJob(
                training_pb2.StopTrainingJobRequest(name="someone-elses"), metadata=wrong
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # bob's token works, and a call on nothing answers for what it is, in his name.
        with pytest.raises(grpc.RpcError) as missing:
            training.StopTrainingJob(
                training_pb2.StopTrainingJobRequest(name="no-such-job"),
                metadata=(("authorization", f"Bearer {PEOPLE['bob']}"),),
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with grpc.secure_channel(stack.gateway.address, stack.credentials()) as channel:
        predict = inference_pb2_grpc.InferenceServiceStub(channel).Predict
        with pytest.raises(grpc.RpcError) as refused:
            predict(inference_pb2.PredictRequest(endpoint_name="any"), metadata=wrong)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    audit = stack.control.stderr_path.read_text()
    assert WORKER_TOKEN not in audit
    assert "who=? method=StopTrainingJob outcome=UNAUTHENTICATED" in audit
    assert "who=bob method=StopTrainingJob resource=no-such-job outcome=NOT_FOUND" in audit
    assert "not-a-token" not in audit and PEOPLE["bob"] not in audit


def test_a_worker_token_only_leases_and_moves_artifacts(stack: Stack) -> None:
    worker = (("authorization", f"Bearer {WORKER_TOKEN}"),)
    with grpc.secure_channel(stack.control.address, stack.credentials()) as channel:
        artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        artifacts.ListArtifacts(
            artifacts_pb2.ListArtifactsRequest(uri_prefix="store://tls"), metadata=worker, timeout=5
        )
        with pytest.raises(grpc.RpcError) as refused:
            training_pb2_grpc.TrainingServiceStub(channel).ListTrainingJobs(
                training_pb2.ListTrainingJobsRequest(), metadata=worker, timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _scrape(url: str, context: ssl.SSLContext, token: str = "") -> tuple[int, bytes]:
    """(HTTP status, body) of one GET of `url`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


@pytest.mark.parametrize("service", ["control", "gateway"])
def test_metrics_need_the_metrics_token(stack: Stack, service: str) -> None:
    process = stack.control if service == "control" else stack.gateway
    url = f"https://127.0.0.1:{process.metrics_port}/metrics"
    assert _scrape(url, stack.https_context())[0] == 401
    assert _scrape(url, stack.https_context(), ADMIN_TOKEN)[0] == 401
    status, body = _scrape(url, stack.https_context(), METRICS_TOKEN)
    assert status == 200 and b"# TYPE " in body
    # Plain HTTP gets no answer from an HTTPS server.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=5)


def _health(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status of one health Check (OK when it answered)."""
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize("service", ["control", "gateway"])
def test_who_may_connect(stack: Stack, service: str) -> None:
    address = (stack.control if service == "control" else stack.gateway).address
    assert _health(address, stack.credentials()) == grpc.StatusCode.OK
    # A plaintext client never gets through the handshake.
    assert _health(address, None) == grpc.StatusCode.UNAVAILABLE
    stranger = grpc.ssl_channel_credentials(
        root_certificates=stack.certs.ca.read_bytes(),
        private_key=stack.certs.stranger_key.read_bytes(),
        certificate_chain=stack.certs.stranger_cert.read_bytes(),
    )
    without_cert = stack.credentials(with_cert=False)
    expected = grpc.StatusCode.UNAVAILABLE if stack.mutual else grpc.StatusCode.OK
    # Under mutual TLS a client without a certificate, or with one of another CA, is refused.
    assert _health(address, without_cert) == expected
    assert _health(address, stranger) == expected
