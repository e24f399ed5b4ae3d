"""The `skmaker` command line's argument parsing; nothing here reaches a server.

The commands' output against a real control is in
tests/integration/client/test_cli_against_control.py.
"""

from __future__ import annotations

import pytest

from skmaker import cli


def test_parser_reads_training_job_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKMAKER_ADDRESS", raising=False)
    parser = cli.build_parser()

    listed = parser.parse_args(
        ["training-jobs", "list", "--status", "Failed", "--name-prefix", "iris", "--max", "3"]
    )
    logs = parser.parse_args(["--address", "h:1", "training-jobs", "logs", "j", "--follow"])

    assert (listed.status, listed.name_prefix, listed.max) == ("Failed", "iris", 3)
    assert listed.address == "localhost:50051"
    assert (logs.address, logs.name, logs.follow) == ("h:1", "j", True)


def test_address_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKMAKER_ADDRESS", "control:9")
    assert cli.build_parser().parse_args(["training-jobs", "list"]).address == "control:9"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["training-jobs"],
        ["training-jobs", "list", "--status", "Running"],
        ["training-jobs", "describe"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2


def test_parser_reads_model_and_endpoint_commands() -> None:
    parser = cli.build_parser()

    models = parser.parse_args(["models", "list", "--name-prefix", "iris", "--max", "2"])
    invoke = parser.parse_args(
        ["endpoints", "invoke", "ep", "--body", "5.1,3.5,1.4,0.2", "--accept", "text/csv"]
    )
    from_file = parser.parse_args(
        ["endpoints", "invoke", "ep", "--file", "-", "--content-type", "application/x-npy",
         "--base64"]
    )  # fmt: skip

    assert (models.name_prefix, models.max) == ("iris", 2)
    assert (invoke.name, invoke.content_type, invoke.body, invoke.accept) == (
        "ep",
        "text/csv",
        "5.1,3.5,1.4,0.2",
        "text/csv",
    )
    assert (from_file.file, from_file.content_type, from_file.base64) == (
        "-",
        "application/x-npy",
        True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "describe"],
        ["endpoints", "invoke", "ep"],  # no payload
        ["endpoints", "invoke", "ep", "--body", "1", "--file", "x.csv"],  # two payloads
        ["endpoints", "scale", "ep"],
    ],
)
def test_bad_serving_command_lines_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2


def test_an_abbreviated_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # `--name-p` would otherwise be read as --name-prefix (argparse's prefix matching).
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["training-jobs", "list", "--name-p", "iris"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --name-p" in capsys.readouterr().err
