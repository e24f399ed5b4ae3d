"""`sagemaker_containers.beta.framework`: the names scripts import from the legacy toolkit.

from sagemaker_containers.beta.framework import content_types, encoders, env, worker
"""

from __future__ import annotations

from sagemaker_containers import _content_types as content_types
from sagemaker_containers import _encoders as encoders
from sagemaker_containers import _env as env
from sagemaker_containers import _errors as errors
from sagemaker_containers import _modules as modules
from sagemaker_containers import _server as server
from sagemaker_containers import _transformer as transformer
from sagemaker_containers import _worker as worker
from sagemaker_containers import training_env

__all__ = [
    "content_types",
    "encoders",
    "env",
    "errors",
    "modules",
    "server",
    "training_env",
    "transformer",
    "worker",
]
