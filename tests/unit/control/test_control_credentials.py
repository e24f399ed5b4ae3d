"""What the tokens the control issues to its replicas and workers allow."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

from services.control.dispatch.credentials import worker_scope
from services.control.hosting.credentials import ReplicaCredentials, replica_scope
from services.control.hosting.model_values import Model
from services.runtime.auth import ScopedTokens

MODEL = Model(
    name="iris",
    model_data_uri="store://jobs/j/output/model.tar.gz",
    entry_point="serve.py",
    source_uri="store://code/j/sourcedir.tar.gz",
    training_job_name="j",
)


class Registry:
    """The model registry as a scope reads it: one model."""

    def describe(self, name: str) -> Model:
        assert name == MODEL.name
        return MODEL


def _call(**fields: str) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def test_a_replica_may_read_its_own_model_and_nothing_else() -> None:
    scope = replica_scope(Registry(), "iris", "replica r-1 of endpoint e")  # type: ignore[arg-type]
    describe = "/skmaker.v1.ModelService/DescribeModel"
    download = "/skmaker.v1.ArtifactService/DownloadArtifact"
    job = "/skmaker.v1.TrainingService/DescribeTrainingJob"
    assert scope.allows(describe, _call(name="iris"))
    assert not scope.allows(describe, _call(name="other"))
    assert scope.allows(download, _call(uri=MODEL.model_data_uri))
    assert scope.allows(download, _call(uri=MODEL.source_uri))
    assert not scope.allows(download, _call(uri="store://jobs/other/output/model.tar.gz"))
    assert scope.allows(job, _call(name="j")) and not scope.allows(job, _call(name="k"))
    assert not scope.allows("/skmaker.v1.ArtifactService/UploadArtifact", None)
    assert not scope.allows("/skmaker.v1.ModelService/DeleteModel", _call(name="iris"))


def test_a_worker_may_lease_report_and_move_artifacts_but_not_manage() -> None:
    scope = worker_scope("local worker batch-0")
    assert scope.allows("/skmaker.v1.DispatchService/AcquireTask", None)
    assert scope.allows("/skmaker.v1.ArtifactService/UploadArtifact", None)
    assert not scope.allows("/skmaker.v1.TrainingService/CreateTrainingJob", None)
    assert not scope.allows("/skmaker.v1.EndpointService/DeleteEndpoint", None)


def test_a_restarted_replica_gets_a_new_token_and_the_old_one_stops_working() -> None:
    tokens = ScopedTokens()
    credentials = ReplicaCredentials(tokens, Registry())  # type: ignore[arg-type]
    first = credentials.issue("e", "r-1", "iris")
    second = credentials.issue("e", "r-1", "iris")
    other = credentials.issue("e", "r-2", "iris")

    def scope_of(token: str) -> object:
        return tokens.scope_of(hashlib.sha256(token.encode()).digest())

    assert scope_of(first) is None
    assert scope_of(second) is not None and scope_of(other) is not None
