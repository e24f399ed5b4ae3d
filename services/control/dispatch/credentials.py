"""Credentials of the workers the control starts (`--local` trainers and batch workers).

A worker leases and reports tasks and moves their artifacts; its token allows that and nothing
else (no creating, listing, stopping or deleting jobs, models or endpoints), so the model code a
batch worker runs in-process, or a training script that got hold of a trainer's token, cannot act
as the people using skmaker.
"""

from __future__ import annotations

from typing import Any

from services.runtime.auth import Scope

WORKER_METHODS = frozenset(
    {
        "/skmaker.v1.DispatchService/AcquireTask",
        "/skmaker.v1.DispatchService/Heartbeat",
        "/skmaker.v1.DispatchService/CompleteTask",
        "/skmaker.v1.ArtifactService/DownloadArtifact",
        "/skmaker.v1.ArtifactService/UploadArtifact",
        "/skmaker.v1.ArtifactService/ListArtifacts",
        "/skmaker.v1.ArtifactService/DescribeArtifactStore",
        "/skmaker.v1.ArtifactService/PresignDownload",
        "/skmaker.v1.ArtifactService/StartUpload",
        "/skmaker.v1.ArtifactService/CompleteUpload",
        "/skmaker.v1.ModelService/DescribeModel",
        "/skmaker.v1.TrainingService/DescribeTrainingJob",
    }
)


def worker_scope(holder: str) -> Scope:
    """The scope of a worker; `holder` names it in messages (e.g. ``local worker batch-0``)."""

    def allows(method: str, request: Any) -> bool:
        return method in WORKER_METHODS

    return Scope(holder, allows)
