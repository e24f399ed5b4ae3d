"""Credentials the control issues to the replicas it starts: each may read its own model only.

A replica needs three calls on the control while it loads: DescribeModel of its model,
DownloadArtifact (or PresignDownload, for a URL to fetch them from the object store) of that
model's archive and code bundle, and DescribeTrainingJob of the job the model came from (for a
version warning). Its token allows exactly these, for exactly that model,
and nothing else (PERMISSION_DENIED), so the model's code, which runs inside the replica, holds
no credential worth stealing.
"""

from __future__ import annotations

import threading
from typing import Any

from services.control.hosting.model_registry import ModelRegistry
from services.runtime.auth import Scope, ScopedTokens

_DESCRIBE_MODEL = "/skmaker.v1.ModelService/DescribeModel"
_DOWNLOADS = (
    "/skmaker.v1.ArtifactService/DownloadArtifact",
    "/skmaker.v1.ArtifactService/PresignDownload",
)
_DESCRIBE_JOB = "/skmaker.v1.TrainingService/DescribeTrainingJob"


def replica_scope(models: ModelRegistry, model_name: str, holder: str) -> Scope:
    """The scope of a replica serving `model_name`; `holder` names the replica in messages."""

    def allows(method: str, request: Any) -> bool:
        if method == _DESCRIBE_MODEL:
            return bool(request.name == model_name)
        if method not in (*_DOWNLOADS, _DESCRIBE_JOB):
            return False
        model = models.describe(model_name)  # read per call: a model may be re-created
        if method in _DOWNLOADS:
            return request.uri in {model.model_data_uri, model.source_uri} - {""}
        return bool(model.training_job_name) and request.name == model.training_job_name

    return Scope(holder, allows)


class ReplicaCredentials:
    """Issues replica tokens; what the replica backends are given."""

    def __init__(self, tokens: ScopedTokens, models: ModelRegistry) -> None:
        self._tokens = tokens
        self._models = models
        self._issued: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def issue(self, endpoint_name: str, replica_id: str, model_name: str) -> str:
        """A token for replica `replica_id` of `endpoint_name`, serving `model_name`.

        It replaces the token an earlier start of the same replica had, which stops working.
        """
        holder = f"replica {replica_id} of endpoint {endpoint_name}"
        token = self._tokens.issue(replica_scope(self._models, model_name, holder))
        with self._lock:
            previous = self._issued.get((endpoint_name, replica_id))
            self._issued[(endpoint_name, replica_id)] = token
        if previous is not None:
            self._tokens.revoke(previous)
        return token
