"""`python -m services.batch --control HOST:PORT`: run one batch worker."""

from __future__ import annotations

import os
import sys

from services.batch import app
from services.batch.config import ENV_PREFIX, BatchSettings
from services.runtime import allocator, lifecycle, settings

# Mini-batch buffers (bodies, parser and column arrays) are a few times MaxPayloadInMB (at
# most 100 MB); keeping this much freed memory lets each mini-batch reuse the last one's.
RETAINED_FREE_BYTES = 512 * 1024 * 1024


def main() -> int:
    """Parses settings, serves until SIGTERM, returns the exit code."""
    batch_settings = settings.load(
        BatchSettings, sys.argv[1:], env_prefix=ENV_PREFIX, prog="python -m services.batch"
    )
    lifecycle.configure_logging(batch_settings.log_level)
    allocator.retain_freed_memory(RETAINED_FREE_BYTES)
    return lifecycle.serve(app.build(batch_settings, os.environ), batch_settings)


if __name__ == "__main__":
    sys.exit(main())
