"""`python -m services.control`: parse settings, configure logs, serve until SIGTERM."""

from __future__ import annotations

import sys

from services.control import app
from services.control.config import ControlSettings
from services.runtime import lifecycle, settings


def main() -> int:
    """Runs the control service; returns the process exit code."""
    control_settings = settings.load(
        ControlSettings, sys.argv[1:], env_prefix="SKMAKER_CONTROL_", prog="services.control"
    )
    try:
        control_settings.check()
    except ValueError as err:
        print(f"services.control: {err}", file=sys.stderr)
        return 2
    lifecycle.configure_logging(control_settings.log_level)
    return lifecycle.serve(app.build(control_settings), control_settings)


if __name__ == "__main__":
    sys.exit(main())
