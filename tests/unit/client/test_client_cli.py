"""The `skmaker` command line: argument parsing and output against the fake control."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_control_server import FakeControl

from skmaker import Session, SKLearn, cli
from skmaker.v1 import training_job_pb2


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


@pytest.fixture
def trained(session: Session, fake_control: FakeControl, tmp_path: Path) -> str:
    script = tmp_path / "train.py"
    script.write_text("")
    SKLearn(entry_point=str(script), session=session).fit(
        "store://data", wait=False, job_name="cli-job"
    )
    return "cli-job"


def test_describe_prints_json(
    fake_control: FakeControl, trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["--address", fake_control.address, "training-jobs", "describe", trained])

    assert code == 0
    description = json.loads(capsys.readouterr().out)
    assert description["TrainingJobName"] == trained
    assert description["CreationTime"].startswith("1970-01-01T00:01:40")


def test_list_prints_a_table(
    fake_control: FakeControl, trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--address", fake_control.address, "training-jobs", "list"]) == 0

    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["NAME", "STATUS", "SECONDARY"]
    assert row.split()[:3] == [trained, "Completed", "Completed"]


def test_logs_print_the_lines(
    fake_control: FakeControl, trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--address", fake_control.address, "training-jobs", "logs", trained]) == 0
    assert capsys.readouterr().out == "hello from the script\ndone\n"


def test_stop_prints_the_new_status(
    fake_control: FakeControl, trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_control.jobs[trained].status = training_job_pb2.TRAINING_JOB_STATUS_IN_PROGRESS

    assert cli.main(["--address", fake_control.address, "training-jobs", "stop", trained]) == 0
    assert capsys.readouterr().out == f"{trained}: Stopping\n"


def test_errors_print_one_line_and_exit_1(
    fake_control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["--address", fake_control.address, "training-jobs", "describe", "absent"])

    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: training job 'absent' not found\n"


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
