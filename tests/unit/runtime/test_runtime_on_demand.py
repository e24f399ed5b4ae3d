"""A runtime used before it is built: the launcher builds it first, a failed build says why.

The builds here run pip for real on a lock whose pin no wheelhouse holds (`--no-index`: no
network), so they fail in a second at the wheel step, as an air-gapped build missing a wheel does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from services.runtime import script_runtimes
from services.runtime.runtime_on_demand import BUILD_FAILED_EXIT, build_failure

REPO = Path(__file__).resolve().parents[3]


def _source_with_lock(tmp_path: Path, name: str, pins: str) -> Path:
    source = tmp_path / "src"
    (source / "runtimes").mkdir(parents=True)
    (source / "runtimes" / f"{name}.lock").write_text(pins)
    return source


def _launcher(source: Path, runtimes: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKMAKER_SOURCE_DIR": str(source), "PYTHONPATH": str(REPO)}
    launcher = [sys.executable, "-m", "services.runtime.runtime_on_demand"]
    return subprocess.run(
        [*launcher, "--runtimes-dir", str(runtimes), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_failed_build_names_the_step_and_ends_with_pips_error(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "sklearn-9.9.lock").write_text("skmaker-no-such-package==1.0\n")
    rt = script_runtimes.runtime("sklearn-9.9", str(tmp_path / "built"), locks)
    with pytest.raises(subprocess.CalledProcessError) as caught:
        script_runtimes.build(rt, no_index=True)
    reason = build_failure("sklearn-9.9", caught.value)
    said, _, step = reason.partition(" (step: `")
    # pip's own last lines say what was missing; then which step failed.
    assert said.startswith("building script runtime sklearn-9.9 failed (exit 1): ERROR: ")
    assert said.endswith("No matching distribution found for skmaker-no-such-package==1.0")
    assert "pip" in step and "wheel --no-deps" in step
    assert not rt.is_built()


def test_a_build_failure_without_a_step_says_what_went_wrong() -> None:
    reason = build_failure("sklearn-1.2", OSError(28, "No space left on device"))
    assert reason == (
        "building script runtime sklearn-1.2 failed: [Errno 28] No space left on device"
    )


def test_the_launcher_runs_the_program_on_a_built_runtime(tmp_path: Path) -> None:
    source = _source_with_lock(tmp_path, "sklearn-9.9", "numpy==2.4.6\n")
    root = tmp_path / "runtimes" / "sklearn-9.9"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(sys.executable)
    lock = source / "runtimes" / "sklearn-9.9.lock"
    stamp = {"name": "sklearn-9.9", "lock_sha256": script_runtimes._sha256(lock)}
    (root / script_runtimes.STAMP_FILE).write_text(json.dumps(stamp))
    done = _launcher(
        source, tmp_path / "runtimes", "sklearn-9.9", "--", "-c", "import sys; print(sys.argv[0])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "-c"
    assert "building" not in done.stderr  # built already: nothing to do


def test_the_launcher_builds_first_and_exits_with_the_reason_when_that_fails(
    tmp_path: Path,
) -> None:
    source = _source_with_lock(tmp_path, "sklearn-9.9", "skmaker-no-such-package==1.0\n")
    done = _launcher(
        source, tmp_path / "runtimes", "--no-index", "sklearn-9.9", "--", "-c", "print('ran')"
    )
    assert done.returncode == BUILD_FAILED_EXIT
    assert "ran" not in done.stdout
    assert "building runtime sklearn-9.9 (first use" in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("runtime-on-demand: building script runtime sklearn-9.9 failed (exit 1)")
    assert "No matching distribution found for skmaker-no-such-package==1.0" in last


def test_the_launcher_refuses_a_runtime_it_does_not_know(tmp_path: Path) -> None:
    source = _source_with_lock(tmp_path, "sklearn-9.9", "numpy==2.4.6\n")
    done = _launcher(source, tmp_path / "runtimes", "sklearn-0.23", "--", "-c", "print('ran')")
    assert done.returncode == 2
    assert "unknown script runtime 'sklearn-0.23'; known: sklearn-9.9" in done.stderr


def _tiny_wheel(folder: Path, name: str, version: str) -> Path:
    """A valid, empty wheel (what pip copies out of a wheelhouse and can install)."""
    stem = f"{name.replace('-', '_')}-{version}"
    wheel = folder / f"{stem}-py3-none-any.whl"
    meta = f"{stem}.dist-info"
    files = {
        f"{meta}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{meta}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(f"{meta}/RECORD", "".join(f"{m},,\n" for m in [*files, f"{meta}/RECORD"]))
    return wheel


def test_with_a_build_dir_the_runtimes_folder_is_only_read(tmp_path: Path) -> None:
    # A swarm replica: its node's volume lacks the runtime and is read-only to it.
    source = _source_with_lock(tmp_path, "sklearn-9.9", "skmaker-tiny==1.0\n")
    runtimes = tmp_path / "runtimes"
    (runtimes / "wheelhouse").mkdir(parents=True)
    wheel = _tiny_wheel(runtimes / "wheelhouse", "skmaker-tiny", "1.0")
    runtimes.chmod(0o555)
    own = tmp_path / "own"
    try:
        done = _launcher(
            source, runtimes, "--build-dir", str(own), "--no-index", "sklearn-9.9", "--", "-V"
        )
    finally:
        runtimes.chmod(0o755)
    # The environment was built in the container's own folder from the volume's wheels (all
    # there: pip fetched nothing, nor asked an index); the source stand-in has no worker code,
    # so that later step fails, as the reason says. Nothing was written to the runtimes folder.
    assert (own / "sklearn-9.9" / "bin" / "python").exists(), done.stderr
    assert f"wheels into {runtimes / 'wheelhouse'}" in done.stderr
    assert "all 1 wheels already in" in done.stderr and not (own / "wheelhouse").exists()
    assert done.returncode == BUILD_FAILED_EXIT, done.stderr
    assert "of the worker code from" in done.stderr
    assert sorted(p.name for p in runtimes.iterdir()) == ["wheelhouse"]
    assert sorted(p.name for p in (runtimes / "wheelhouse").iterdir()) == [wheel.name]
