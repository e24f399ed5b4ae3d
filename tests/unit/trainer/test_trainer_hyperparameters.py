"""The §1.5 hyperparameter rule, row by row, and the entry-point commands of §1.6 / §8."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.trainer.hyperparameters import (
    RESERVED_KEYS,
    command_for_entry_point,
    decode_hyperparameters,
    encode_hyperparameters,
    render_argv_tokens,
    split_hyperparameters,
    validate_encoded,
)
from services.trainer.workspace import Workspace, build_environment

# (key, SDK value, hyperparameters.json value, argv tokens, SM_HP_* value): the worked example.
WORKED_EXAMPLE: list[tuple[str, Any, str, list[str], str]] = [
    ("max_leaf_nodes", 30, "30", ["--max_leaf_nodes", "30"], "30"),
    ("alpha", 1e-05, "1e-05", ["--alpha", "1e-05"], "1e-05"),
    ("use_feature", True, "true", ["--use_feature", "True"], "true"),
    ("kernel", "rbf", '"rbf"', ["--kernel", "rbf"], "rbf"),
    ("c", "3", '"3"', ["-c", "3"], "3"),
    ("layers", [64, 32], "[64, 32]", ["--layers", "[64, 32]"], "[64,32]"),
    ("cfg", {"b": 2, "a": "x"}, '{"b": 2, "a": "x"}', ["--cfg", "a=x,b=2"], '{"a":"x","b":2}'),
    ("s", "hello world", '"hello world"', ["-s", "hello world"], "hello world"),
    ("quoted", '{"x":1}', '"{\\"x\\":1}"', ["--quoted", '{"x":1}'], '{"x":1}'),
    ("nothing", None, "null", ["--nothing", ""], ""),
]

ARGV_PRINTER = "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"


@pytest.mark.parametrize(
    ("key", "sdk_value", "encoded", "tokens", "sm_hp"),
    WORKED_EXAMPLE,
    ids=[row[0] for row in WORKED_EXAMPLE],
)
def test_worked_example_row(
    tmp_path: Path, key: str, sdk_value: Any, encoded: str, tokens: list[str], sm_hp: str
) -> None:
    assert encode_hyperparameters({key: sdk_value}) == {key: encoded}

    user, framework = split_hyperparameters(decode_hyperparameters({key: encoded}))
    assert framework == {}
    assert render_argv_tokens(user) == tokens

    env = build_environment(
        Workspace(tmp_path),
        job_name="job",
        entry_point="train.py",
        hyperparameters_encoded={key: encoded},
        channels={},
        module_dir_uri=None,
    )
    assert env[f"SM_HP_{key.upper()}"] == sm_hp
    assert json.loads(env["SM_USER_ARGS"]) == tokens


def _all_rows_encoded() -> dict[str, str]:
    return {key: encoded for key, _, encoded, _, _ in WORKED_EXAMPLE}


def _run_argv_printer(command: list[str], cwd: Path) -> list[str]:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    parsed: list[str] = json.loads(done.stdout)
    return parsed


def test_without_shell_each_value_is_one_argument(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(ARGV_PRINTER)
    user, _ = split_hyperparameters(decode_hyperparameters(_all_rows_encoded()))
    tokens = render_argv_tokens(user)

    command = command_for_entry_point("train.py", tmp_path, tokens, sys.executable)

    assert command == [sys.executable, "train.py", *tokens]
    assert _run_argv_printer(command, tmp_path) == tokens
    assert tokens[tokens.index("--layers") + 1] == "[64, 32]"
    assert tokens[tokens.index("-s") + 1] == "hello world"


def test_shell_compat_reproduces_the_toolkit_argv(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(ARGV_PRINTER)
    user, _ = split_hyperparameters(decode_hyperparameters(_all_rows_encoded()))
    tokens = render_argv_tokens(user)

    command = command_for_entry_point(
        "train.py", tmp_path, tokens, sys.executable, shell_compat=True
    )

    assert command[:2] == ["/bin/sh", "-c"]
    # The "what sys.argv actually gets" column of the worked example.
    assert _run_argv_printer(command, tmp_path) == [
        "--alpha", "1e-05",
        "-c", "3",
        "--cfg", "a=x,b=2",
        "--kernel", "rbf",
        "--layers", "[64,", "32]",
        "--max_leaf_nodes", "30",
        "--nothing",
        "--quoted", "{x:1}",
        "-s", "hello", "world",
        "--use_feature", "True",
    ]  # fmt: skip


def test_tokens_are_sorted_by_key() -> None:
    assert render_argv_tokens({"b": 1, "a": 2, "aa": 3}) == ["-a", "2", "--aa", "3", "-b", "1"]


def test_decode_keeps_raw_string_when_not_json() -> None:
    assert decode_hyperparameters({"a": "abc", "b": "7", "c": "0.0123", "d": "[1"}) == {
        "a": "abc",
        "b": 7,
        "c": 0.0123,
        "d": "[1",
    }


def test_split_hides_reserved_and_sagemaker_keys() -> None:
    decoded = decode_hyperparameters(
        {
            "max_leaf_nodes": "30",
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": '"s3://b/k/sourcedir.tar.gz"',
            "sagemaker_container_log_level": "20",
            "sagemaker_job_name": '"job"',
            "sagemaker_region": '"us-west-2"',
            "_tuning_objective_metric": '"validation:accuracy"',
            "default_user_module_name": '"x"',
            "sagemaker_estimator_class_name": '"SKLearn"',
            "sagemaker_estimator_module": '"sagemaker.sklearn.estimator"',
        }
    )

    user, framework = split_hyperparameters(decoded)

    assert user == {"max_leaf_nodes": 30}
    assert framework == {
        "sagemaker_estimator_class_name": "SKLearn",
        "sagemaker_estimator_module": "sagemaker.sklearn.estimator",
    }
    assert "_tuning_objective_metric" in RESERVED_KEYS
    assert render_argv_tokens(user) == ["--max_leaf_nodes", "30"]


def test_validate_encoded_limits() -> None:
    validate_encoded({"a": "1"})
    with pytest.raises(ValueError, match="too many"):
        validate_encoded({f"k{i}": "1" for i in range(101)})
    with pytest.raises(ValueError, match="2500"):
        validate_encoded({"a": "x" * 2501})


def test_setup_py_runs_the_entry_point_as_a_module(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("")
    assert command_for_entry_point("train.py", tmp_path, ["--a", "1"], "py") == [
        "py",
        "-m",
        "train",
        "--a",
        "1",
    ]


def test_sh_entry_point_keeps_each_value_one_argument(tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text('#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n')
    tokens = ["--s", "hello world", "--nothing", "", "--glob", "*"]

    command = command_for_entry_point("train.sh", tmp_path, tokens, sys.executable)

    assert command[:2] == ["/bin/sh", "-c"]
    assert command[2].startswith("./train.sh ")
    assert script.stat().st_mode & 0o111
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.stdout.splitlines() == [f"[{token}]" for token in tokens]


def test_other_entry_point_is_executed_directly(tmp_path: Path) -> None:
    program = tmp_path / "train"
    program.write_text(f"#!{sys.executable}\n{ARGV_PRINTER}")

    command = command_for_entry_point("train", tmp_path, ["--x", "a b"], sys.executable)

    assert command == ["./train", "--x", "a b"]
    assert _run_argv_printer(command, tmp_path) == ["--x", "a b"]


@pytest.mark.parametrize("entry_point", ["/etc/passwd", "../train.py", "a/../../b.py", ""])
def test_entry_point_outside_code_dir_is_refused(tmp_path: Path, entry_point: str) -> None:
    with pytest.raises(ValueError, match="entry point"):
        command_for_entry_point(entry_point, tmp_path, [], sys.executable)


def test_missing_executable_entry_point_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        command_for_entry_point("train.sh", tmp_path, [], sys.executable)
