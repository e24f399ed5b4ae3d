"""The Prometheus file-based service discovery file of inference replicas (`--prometheus-sd-file`).

Prometheus' `file_sd_configs` reads a JSON list of target groups,
`[{"targets": ["127.0.0.1:41234"], "labels": {"endpoint": "iris", "replica": "r-2"}}, ...]`,
and watches the file (inotify, with `refresh_interval` as a fallback), so a replica the control
starts is scraped within about a scrape interval. The file is replaced atomically (temporary
file in the same folder, then rename), so Prometheus never reads half of it, and rewritten only
when the set of replicas changed.

Label note: replicas also label their own series with `endpoint`; with Prometheus' default
`honor_labels: false` the target's label wins and the replica's becomes `exported_endpoint`.
Both carry the same value, so `{endpoint="iris"}` selects the endpoint's series either way.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Prometheus may run as another user (it does in the official image): readable by all.
_FILE_MODE = 0o644


@dataclass(frozen=True, order=True)
class ScrapeTarget:
    """One replica's /metrics, as Prometheus should scrape and label it."""

    endpoint: str
    replica_id: str
    metrics_address: str


class ScrapeTargetsFile:
    """Keeps one file_sd JSON file equal to the replicas it is given. Not thread-safe: one
    writer (the autoscaling loop) calls `write`."""

    def __init__(self, path: Path) -> None:
        """Writes to `path` (its folder is created on the first write)."""
        self.path = path
        self._written: str | None = None

    def write(self, targets: Iterable[ScrapeTarget]) -> bool:
        """Replaces the file with `targets` unless it already lists exactly them.

        Returns:
            True when the file was rewritten.

        Raises:
            OSError: the file cannot be written.
        """
        groups = [
            {
                "targets": [target.metrics_address],
                "labels": {"endpoint": target.endpoint, "replica": target.replica_id},
            }
            for target in sorted(set(targets))
        ]
        text = json.dumps(groups, indent=2) + "\n"
        if text == self._written:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._written = text
        log.debug("wrote %d scrape target(s) to %s", len(groups), self.path)
        return True
