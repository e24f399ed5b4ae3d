"""People's tokens: a file of named tokens, kept as digests, each call audited by name."""

from __future__ import annotations

import hashlib
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import prometheus_client
import pytest

from services.runtime import settings
from services.runtime.auth import BearerTokenInterceptor, people_tokens, read_tokens_file
from services.runtime.errors import ErrorInterceptor, NotFound
from services.runtime.metrics_server import start_metrics_server
from services.runtime.settings import ServiceSettings
from services.runtime.tls import server_ssl_context
from skmaker.v1 import serving_pb2, serving_pb2_grpc
from tests.certificates import make_certificates

PREFIX = "SKMAKER_TESTSVC_"


def _tokens_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "people.tokens"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_tokens_file_names_each_token(tmp_path: Path) -> None:
    path = _tokens_file(tmp_path, "# team\nalice: a-123\n\nbob:b-456\n")
    assert read_tokens_file(path) == {"alice": "a-123", "bob": "b-456"}
    people = people_tokens("adm-1", str(path), "")
    digest = hashlib.sha256
    assert people.who(digest(b"a-123").digest()) == "alice"
    assert people.who(digest(b"adm-1").digest()) == "admin"
    assert people.who(digest(b"nobody").digest()) is None
    assert "a-123" not in repr(vars(people))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice a-123\n", "line 1: expected 'name:token'"),
        ("alice:\n", "line 1: expected 'name:token'"),
        ("al ice:x\n", "line 1: expected 'name:token'"),
        ("alice:x\nalice:y\n", "line 2: 'alice' is named twice"),
        ("alice:x\nbob:x\n", "line 2: 'bob' has another person's token"),
        ("# nobody\n", "holds no token"),
    ],
)
def test_a_malformed_tokens_file_is_refused_at_start_without_echoing_tokens(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _tokens_file(tmp_path, text)
    with pytest.raises(SystemExit) as exit_info:
        settings.load(ServiceSettings, [f"--auth-tokens-file={path}"], {}, env_prefix=PREFIX)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert "a-123" not in error and ":y" not in error


class _Models(serving_pb2_grpc.ModelServiceServicer):
    def DeleteModel(
        self, request: serving_pb2.DeleteModelRequest, context: grpc.ServicerContext
    ) -> serving_pb2.DeleteModelResponse:
        if request.name != "iris":
            raise NotFound(f"model {request.name!r} does not exist")
        return serving_pb2.DeleteModelResponse()

    def DescribeModel(
        self, request: serving_pb2.DescribeModelRequest, context: grpc.ServicerContext
    ) -> serving_pb2.DescribeModelResponse:
        return serving_pb2.DescribeModelResponse()


@pytest.fixture
def models(tmp_path: Path) -> Iterator[serving_pb2_grpc.ModelServiceStub]:
    people = people_tokens("", str(_tokens_file(tmp_path, "alice:a-123\nbob:b-456\n")), "")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[BearerTokenInterceptor(people=people), ErrorInterceptor()],
    )
    serving_pb2_grpc.add_ModelServiceServicer_to_server(_Models(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield serving_pb2_grpc.ModelServiceStub(channel)
    server.stop(None)


def _as(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_changes_are_audited_with_who_what_and_outcome(
    models: serving_pb2_grpc.ModelServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="skmaker.audit")
    models.DeleteModel(serving_pb2.DeleteModelRequest(name="iris"), metadata=_as("a-123"))
    with pytest.raises(grpc.RpcError) as missing:
        models.DeleteModel(serving_pb2.DeleteModelRequest(name="gone"), metadata=_as("b-456"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as refused:
        models.DeleteModel(serving_pb2.DeleteModelRequest(name="iris"), metadata=_as("x"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    models.DescribeModel(serving_pb2.DescribeModelRequest(name="iris"), metadata=_as("a-123"))
    audit = [r.getMessage() for r in caplog.records if r.name == "skmaker.audit"]
    assert audit == [
        "who=alice method=DeleteModel resource=iris outcome=OK",
        "who=bob method=DeleteModel resource=gone outcome=NOT_FOUND",
        "who=? method=DeleteModel outcome=UNAUTHENTICATED",
    ], "reads are not audited; tokens never appear"


def test_metrics_over_https_ask_for_the_token(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    tls_settings = ServiceSettings(tls_cert_file=str(certs.cert), tls_key_file=str(certs.key))
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("probe", "a counter", registry=registry).inc()
    httpd, port = start_metrics_server(
        "127.0.0.1",
        0,
        registry,
        token="m-1",
        ssl_context=server_ssl_context(tls_settings),
    )
    context = ssl.create_default_context(cafile=str(certs.ca))
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        for header in ({}, {"Authorization": "Bearer m-2"}, {"Authorization": "m-1"}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers=header), context=context)
            with refused.value:
                assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": "Bearer m-1"})
        with urllib.request.urlopen(request, context=context) as answer:
            assert b"probe_total 1.0" in answer.read()
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert-file={cert}"], "--tls-cert-file and --tls-key-file go together"),
        (["--tls-client-ca-file={ca}"], "needs --tls-cert-file"),
        (["--tls-ca-file={cert}.missing"], "no such file"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certificates(tmp_path)
    argv = [arg.format(cert=certs.cert, ca=certs.ca) for arg in args]
    with pytest.raises(SystemExit):
        settings.load(ServiceSettings, argv, {}, env_prefix=PREFIX)
    assert message in capsys.readouterr().err
