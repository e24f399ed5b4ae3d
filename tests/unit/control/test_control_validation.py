"""CreateTrainingJob validation: one row per rule, with the code and the message it gives."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from services.control.artifacts.store import LocalArtifactStore
from services.control.training.validation import validate_job_name, validate_training_job
from services.control.training.values import Channel, MetricDefinition, TrainingJobSpec
from services.runtime.errors import InvalidArgument, NotFound, ResourceExhausted, SkmakerError
from tests.archive_bombs import write_zero_bomb
from tests.harness import source_bundle
from tests.unit.control.helpers import put_bytes

BASE = TrainingJobSpec(
    entry_point="train.py",
    source_uri="store://job/source/sourcedir.tar.gz",
    channels=(Channel("train", "store://data/train"),),
)


@pytest.mark.parametrize("name", ["a", "job-1", "A1--b2", "x" * 63])
def test_good_job_names(name: str) -> None:
    validate_job_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "a.b", "x" * 64, "ä"])
def test_bad_job_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="training job name"):
        validate_job_name(name)


CASES: list[tuple[str, dict[str, object], type[SkmakerError], str]] = [
    ("empty entry point", {"entry_point": ""}, InvalidArgument, "entry_point is empty"),
    ("absolute entry point", {"entry_point": "/x.py"}, InvalidArgument, "relative"),
    ("entry point escapes", {"entry_point": "../x.py"}, InvalidArgument, "relative"),
    ("no source", {"source_uri": ""}, InvalidArgument, "source_uri is empty"),
    ("s3 source", {"source_uri": "s3://b/k"}, InvalidArgument, "not a store:// URI"),
    ("missing source", {"source_uri": "store://nope.tar.gz"}, NotFound, "store://nope.tar.gz"),
    (
        "entry point not in bundle",
        {"entry_point": "missing.py"},
        InvalidArgument,
        r"'missing.py' is not in the source bundle .*it holds train.py",
    ),
    (
        "bad channel name",
        {"channels": (Channel("tr ain", "store://data"),)},
        InvalidArgument,
        "channel name 'tr ain'",
    ),
    (
        "long channel name",
        {"channels": (Channel("c" * 65, "store://data"),)},
        InvalidArgument,
        "channel name",
    ),
    (
        "duplicate channel",
        {"channels": (Channel("a", "store://data"),) * 2},
        InvalidArgument,
        "given twice",
    ),
    (
        "too many channels",
        {"channels": tuple(Channel(f"c{i}", "store://data") for i in range(21))},
        InvalidArgument,
        "at most 20",
    ),
    (
        "missing store channel",
        {"channels": (Channel("a", "store://nothing/here"),)},
        NotFound,
        "store://nothing/here",
    ),
    (
        "missing file channel",
        {"channels": (Channel("a", "file:///no/such/dir"),)},
        NotFound,
        "file:///no/such/dir",
    ),
    (
        "relative file channel",
        {"channels": (Channel("a", "file://rel/dir"),)},
        InvalidArgument,
        "absolute",
    ),
    ("s3 channel", {"channels": (Channel("a", "s3://b/k"),)}, InvalidArgument, "unsupported URI"),
    (
        "bad store key",
        {"channels": (Channel("a", "store://a/../b"),)},
        InvalidArgument,
        "bad artifact key",
    ),
    (
        "too many hyperparameters",
        {"hyperparameters": {str(i): "1" for i in range(101)}},
        InvalidArgument,
        "at most 100",
    ),
    (
        "long hyperparameter key",
        {"hyperparameters": {"k" * 257: "1"}},
        InvalidArgument,
        "hyperparameter key",
    ),
    (
        "long hyperparameter value",
        {"hyperparameters": {"k": "v" * 2501}},
        InvalidArgument,
        "at most 2500",
    ),
    (
        "long metric name",
        {"metric_definitions": (MetricDefinition("m" * 256, "(x)"),)},
        InvalidArgument,
        "metric name",
    ),
    (
        "long metric regex",
        {"metric_definitions": (MetricDefinition("m", "x" * 501),)},
        InvalidArgument,
        "1-500 chars",
    ),
    (
        "bad metric regex",
        {"metric_definitions": (MetricDefinition("m", "acc=([0-9]"),)},
        InvalidArgument,
        "does not compile",
    ),
    (
        "duplicate metric",
        {"metric_definitions": (MetricDefinition("m", "(x)"),) * 2},
        InvalidArgument,
        "defined twice",
    ),
    ("bad env key", {"environment": {"1X": "v"}}, InvalidArgument, "environment variable name"),
    (
        "too many env",
        {"environment": {f"K{i}": "v" for i in range(101)}},
        InvalidArgument,
        "at most 100",
    ),
    ("negative runtime", {"max_runtime_seconds": -1}, InvalidArgument, "out of range"),
    ("runtime over 28 days", {"max_runtime_seconds": 28 * 86400 + 1}, InvalidArgument, "28 days"),
    ("s3 output", {"output_uri": "s3://b/out"}, InvalidArgument, "output_uri"),
]


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_specs(
    artifacts: LocalArtifactStore,
    changes: dict[str, object],
    error: type[SkmakerError],
    message: str,
) -> None:
    with pytest.raises(error, match=message) as caught:
        validate_training_job("job", replace(BASE, **changes), artifacts)  # type: ignore[arg-type]
    assert type(caught.value) is error


def test_defaults_are_filled_in(artifacts: LocalArtifactStore) -> None:
    spec = validate_training_job("job-9", BASE, artifacts)
    assert spec.max_runtime_seconds == 86400
    assert spec.output_uri == "store://jobs"


def test_limits_themselves_are_accepted(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    spec = replace(
        BASE,
        hyperparameters={f"{i:0256d}"[-256:]: "v" * 2500 for i in range(100)},
        channels=(
            *(Channel(f"c{i}", "store://data") for i in range(19)),
            Channel("f", f"file://{tmp_path}"),
        ),
        metric_definitions=(MetricDefinition("m" * 255, "x" * 500),),
        environment={f"K_{i}": "v" for i in range(100)},
        max_runtime_seconds=28 * 86400,
        output_uri="store://elsewhere/out/",
    )
    checked = validate_training_job("job", spec, artifacts)
    assert checked.output_uri == "store://elsewhere/out"


def test_entry_point_in_a_subfolder_of_a_dot_slash_bundle(artifacts: LocalArtifactStore) -> None:
    put_bytes(artifacts, "b/sourcedir.tar.gz", source_bundle({"./src/train.py": b""}))
    spec = replace(BASE, source_uri="store://b/sourcedir.tar.gz", entry_point="src/train.py")
    validate_training_job("job", spec, artifacts)


def test_a_bundle_that_is_not_a_tar_is_invalid(artifacts: LocalArtifactStore) -> None:
    put_bytes(artifacts, "b/sourcedir.tar.gz", b"not a tar")
    with pytest.raises(InvalidArgument, match="not a readable tar"):
        validate_training_job(
            "job", replace(BASE, source_uri="store://b/sourcedir.tar.gz"), artifacts
        )


def test_a_bundle_that_unpacks_to_gigabytes_is_refused_naming_the_limit(tmp_path: Path) -> None:
    artifacts = LocalArtifactStore(tmp_path / "store", max_upload_bytes=2**30)
    bomb = tmp_path / "bomb.tar.gz"
    write_zero_bomb(bomb, 2 * 1024**3, member="train.py")
    put_bytes(artifacts, "b/sourcedir.tar.gz", bomb.read_bytes())
    with pytest.raises(ResourceExhausted, match=r"archive size limit.*--max-archive-bytes"):
        validate_training_job(
            "job", replace(BASE, source_uri="store://b/sourcedir.tar.gz"), artifacts
        )
