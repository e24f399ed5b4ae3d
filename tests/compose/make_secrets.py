"""Writes the certificates and tokens docker-compose.tls.yml mounts, for `make test-compose`.

    python tests/compose/make_secrets.py FOLDER

One CA (trustme) and one service certificate for skmaker, control, gateway, localhost and
127.0.0.1; random tokens: admin, workers (the control's worker tokens file names it
`containers`), metrics, and a people's file naming `smoke`, whose token the smoke test calls
with. The files skmaker reads belong to uid 10001 (the image's user), Prometheus' copies under
prometheus/ to 65534 (nobody), each readable by its owner alone; certificates are readable by
all. Prints nothing; smoke.py reads the files.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import trustme

SKMAKER_UID = 10001
PROMETHEUS_UID = 65534
NAMES = ("skmaker", "control", "gateway", "localhost", "127.0.0.1")


def _write(path: Path, data: bytes, uid: int, mode: int) -> None:
    path.write_bytes(data)
    os.chown(path, uid, uid)
    path.chmod(mode)


def main(folder: Path) -> None:
    """Writes every file into `folder` (made if missing)."""
    (folder / "prometheus").mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    (folder / "prometheus").chmod(0o755)
    authority = trustme.CA()
    leaf = authority.issue_cert(*NAMES)
    ca = authority.cert_pem.bytes()
    _write(folder / "ca.pem", ca, SKMAKER_UID, 0o444)
    _write(folder / "service.pem", b"".join(b.bytes() for b in leaf.cert_chain_pems), 0, 0o444)
    _write(folder / "service.key", leaf.private_key_pem.bytes(), SKMAKER_UID, 0o400)
    tokens = {name: secrets.token_urlsafe(24) for name in ("admin", "workers", "metrics", "smoke")}
    for name in ("admin", "workers", "metrics"):
        _write(folder / f"{name}.token", tokens[name].encode() + b"\n", SKMAKER_UID, 0o400)
    people = f"# name:token\nsmoke:{tokens['smoke']}\n"
    _write(folder / "people.tokens", people.encode(), SKMAKER_UID, 0o400)
    workers = f"containers:{tokens['workers']}\n"
    _write(folder / "workers.tokens", workers.encode(), SKMAKER_UID, 0o400)
    # For the smoke test on the host (root).
    _write(folder / "smoke.token", tokens["smoke"].encode() + b"\n", 0, 0o400)
    _write(folder / "prometheus" / "ca.pem", ca, PROMETHEUS_UID, 0o444)
    _write(
        folder / "prometheus" / "metrics.token",
        tokens["metrics"].encode() + b"\n",
        PROMETHEUS_UID,
        0o400,
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
