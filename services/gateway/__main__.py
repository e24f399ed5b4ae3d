"""`python -m services.gateway`: Predict for every endpoint on one port (see `config`)."""

from __future__ import annotations

import sys

from services.gateway import app
from services.gateway.config import ENV_PREFIX, GatewaySettings
from services.runtime import lifecycle, settings


def main() -> int:
    """Parses settings, serves until SIGTERM; returns the exit code (2 for bad settings)."""
    gateway_settings = settings.load(
        GatewaySettings, sys.argv[1:], env_prefix=ENV_PREFIX, prog="python -m services.gateway"
    )
    try:
        gateway_settings.check()
        service = app.build(gateway_settings)
    except ValueError as err:
        print(f"services.gateway: {err}", file=sys.stderr)
        return 2
    lifecycle.configure_logging(gateway_settings.log_level)
    return lifecycle.serve(service, gateway_settings)


if __name__ == "__main__":
    sys.exit(main())
