"""`python -m services.trainer --control HOST:PORT`: run one trainer worker."""

from __future__ import annotations

import os
import sys

from services.runtime import lifecycle, settings
from services.trainer import app
from services.trainer.config import ENV_PREFIX, TrainerSettings


def main() -> int:
    """Parses settings, serves until SIGTERM, returns the exit code."""
    trainer_settings = settings.load(
        TrainerSettings, sys.argv[1:], env_prefix=ENV_PREFIX, prog="python -m services.trainer"
    )
    lifecycle.configure_logging(trainer_settings.log_level)
    return lifecycle.serve(app.build(trainer_settings, os.environ), trainer_settings)


if __name__ == "__main__":
    sys.exit(main())
