"""The job user imports the worker code of a checkout that lies below a folder closed to others.

Found on a clone made in `mktemp -d` (mode 0700): the script runtime's interpreter started as the
job user, but `import sagemaker_containers` failed in every training script, because the
runtime finds the worker packages through editable installs that point into the checkout.
Here a tiny environment in a closed folder imports a worker package from the same closed
folder through a `.pth` file, as an editable install does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.runtime.job_user import (
    as_user_command,
    ensure_job_user,
    interpreter_paths,
    probe_box,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to the job user needs root"),
]

JOB_USER = "skmaker-job"


@pytest.fixture
def closed_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A checkout cloned into a 0700 folder (`git clone URL "$(mktemp -d)"`): an environment
    and, beside it, the package it imports; everything inside open to others."""
    checkout = tmp_path / "closed"
    package = checkout / "runtimes" / "compat" / "sagemaker_containers"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("WHERE = 'checkout'\n")
    environment = checkout / ".venv-runtimes" / "tiny"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True)
    site = next(environment.glob("lib/python3*/site-packages"))
    (site / "checkout_link.pth").write_text(str(package.parent) + "\n")
    for folder in checkout.rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)
    checkout.chmod(0o700)
    return checkout, environment / "bin" / "python"


def test_the_job_user_imports_worker_code_from_a_closed_checkout(
    closed_checkout: tuple[Path, Path],
) -> None:
    closed, python = closed_checkout
    user = ensure_job_user(JOB_USER)
    package_folder = str(closed / "runtimes" / "compat" / "sagemaker_containers")
    assert package_folder in interpreter_paths(str(python))
    assert probe_box(user, interpreter_paths(str(python)), str(python)) == ""
    program = textwrap.dedent(
        """
        import os, sagemaker_containers
        print(os.getuid(), sagemaker_containers.WHERE)
        """
    )
    done = subprocess.run(
        as_user_command(user, [str(python), "-c", program]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(user.uid), "checkout"]


def test_the_probe_fails_when_the_worker_code_cannot_be_imported(
    closed_checkout: tuple[Path, Path],
) -> None:
    """Without the package's folder exposed, the probe says so (the service then warns and
    runs model code as itself) instead of every job failing at import."""
    _checkout, python = closed_checkout
    user = ensure_job_user(JOB_USER)
    without_package = [
        path for path in interpreter_paths(str(python)) if not path.endswith("sagemaker_containers")
    ]
    problem = probe_box(user, without_package, str(python))
    assert "sagemaker_containers" in problem
