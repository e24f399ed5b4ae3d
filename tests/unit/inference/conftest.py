"""Fixtures of the inference tests; defined in replicas.py, next to the helpers they use."""

from tests.unit.inference.replicas import (  # noqa: F401
    iris_model,
    iris_model_dir,
    isolated_user_code,
    module_replicas,
)
