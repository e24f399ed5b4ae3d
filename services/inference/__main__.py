"""`python -m services.inference`: one inference replica (contract: `services.inference.config`)."""

from __future__ import annotations

import os
import sys

from services.inference.config import ENV_PREFIX, InferenceSettings
from services.runtime import native_threads, settings


def main() -> int:
    """Parses settings, loads the model, serves until SIGTERM; returns the exit code."""
    replica_settings = settings.load(
        InferenceSettings, sys.argv[1:], env_prefix=ENV_PREFIX, prog="python -m services.inference"
    )
    try:
        replica_settings.check()
    except ValueError as err:
        print(f"services.inference: {err}", file=sys.stderr)
        return 2
    # Before numpy and scikit-learn load: they size their pools from these variables once.
    native_threads.limit_process(
        os.environ,
        replica_settings.native_threads
        or native_threads.threads_per_call(replica_settings.max_workers),
    )
    from services.inference import app
    from services.runtime import lifecycle
    from services.sagemaker.serving.model_loader import ModelLoadFailed

    lifecycle.configure_logging(replica_settings.log_level)
    try:
        return lifecycle.serve(app.build(replica_settings, os.environ), replica_settings)
    except ModelLoadFailed as err:
        print(f"inference replica failed to load its model: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
