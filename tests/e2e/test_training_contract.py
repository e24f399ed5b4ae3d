"""The SageMaker training contract through the real embedded control, trainers and client.

Each test trains a small script written here and checks what a SageMaker user would check:
what the script saw (environment, argv, config files), what the job reports (status, failure
reason), and what landed in the artifact store (model.tar.gz).
"""

from __future__ import annotations

import json
import os
import signal
import tarfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skmaker import Session, SKLearn, UnexpectedStatusException
from tests.harness import ServiceProcess, run_service, script_visible_dir, wait_for_serving

pytestmark = pytest.mark.integration

TRAINER_ARGS = "--stop-grace-s 5 --acquire-wait-s 2"


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One embedded control with two trainers, shared by the tests that don't kill things."""
    root = tmp_path_factory.mktemp("contract")
    service = run_service(
        "control",
        root / "control",
        [
            "--local",
            "--local-trainers",
            "2",
            "--data-dir",
            str(root / "data"),
            "--trainer-args",
            TRAINER_ARGS,
        ],
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def session(control: ServiceProcess) -> Iterator[Session]:
    with Session(control.address) as client:
        yield client


@pytest.fixture
def data_uri(session: Session, tmp_path: Path) -> str:
    folder = tmp_path / "rows"
    folder.mkdir()
    (folder / "rows.csv").write_text("0,1.0\n1,2.0\n")
    return session.upload_data(str(folder), key_prefix=f"contract/{tmp_path.name}")


def _script_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    for name, text in files.items():
        (source / name).write_text(textwrap.dedent(text))
    return source


def _model_archive_members(session: Session, uri: str, dest: Path) -> dict[str, bytes]:
    session.download_data(str(dest), uri)
    archive = dest / "model.tar.gz"
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _wait_for_log_line(
    session: Session, job_name: str, predicate: Callable[[str], bool], deadline_s: float = 60
) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for line in session.training_job_log_lines(job_name):
            if predicate(line.text):
                return line.text
        time.sleep(0.1)
    raise TimeoutError(f"no matching log line in {job_name} within {deadline_s}s")


ENV_DUMP_SCRIPT = """
    import json, os, sys
    seen = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items()
                if k.startswith(("SM_", "TRAINING_JOB", "SAGEMAKER_", "MY_"))},
        "config": {},
    }
    config_dir = os.environ["SM_INPUT_CONFIG_DIR"]
    for name in ("hyperparameters.json", "inputdataconfig.json", "resourceconfig.json"):
        with open(os.path.join(config_dir, name)) as handle:
            seen["config"][name] = json.load(handle)
    seen["train_files"] = sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "seen.json"), "w") as handle:
        json.dump(seen, handle)
    if __name__ != "__main__":
        raise SystemExit("the entry point must run as a script")
"""

EVERY_JSON_TYPE = {
    "max_leaf_nodes": 30,
    "alpha": 1e-05,
    "s": "hello world",
    "use_feature": True,
    "layers": [64, 32],
    "cfg": {"b": 2, "a": "x"},
    "nothing": None,
}


def test_script_sees_the_sagemaker_environment_argv_and_config(
    session: Session, data_uri: str, tmp_path: Path
) -> None:
    estimator = SKLearn(
        entry_point="dump_env.py",
        source_dir=str(_script_dir(tmp_path, {"dump_env.py": ENV_DUMP_SCRIPT})),
        hyperparameters=EVERY_JSON_TYPE,
        environment={"MY_SETTING": "on"},
        session=session,
    )
    estimator.fit({"train": data_uri, "test": data_uri}, logs=False)
    job = estimator.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed"
    seen = json.loads(
        _model_archive_members(session, estimator.model_data, tmp_path / "m")["seen.json"]
    )
    env = seen["env"]

    # §8: every value is ONE argument, rendered as the toolkit renders it; keys sorted.
    assert seen["argv"] == [
        "--alpha",
        "1e-05",
        "--cfg",
        "a=x,b=2",
        "--layers",
        "[64, 32]",
        "--max_leaf_nodes",
        "30",
        "--nothing",
        "",
        "-s",
        "hello world",
        "--use_feature",
        "True",
    ]
    assert json.loads(env["SM_USER_ARGS"]) == seen["argv"]
    assert env["SM_HPS"] == (
        '{"alpha":1e-05,"cfg":{"a":"x","b":2},"layers":[64,32],"max_leaf_nodes":30,'
        '"nothing":null,"s":"hello world","use_feature":true}'
    )
    assert {k: v for k, v in env.items() if k.startswith("SM_HP_")} == {
        "SM_HP_ALPHA": "1e-05",
        "SM_HP_CFG": '{"a":"x","b":2}',
        "SM_HP_LAYERS": "[64,32]",
        "SM_HP_MAX_LEAF_NODES": "30",
        "SM_HP_NOTHING": "",
        "SM_HP_S": "hello world",
        "SM_HP_USE_FEATURE": "true",
    }
    # The /opt/ml layout, rooted at the job's workspace.
    root = env["SM_MODEL_DIR"].removesuffix("/model")
    assert env["SM_INPUT_DIR"] == f"{root}/input"
    assert env["SM_INPUT_CONFIG_DIR"] == f"{root}/input/config"
    assert env["SM_OUTPUT_DIR"] == f"{root}/output"
    assert env["SM_OUTPUT_DATA_DIR"] == f"{root}/output/data"
    assert env["SM_OUTPUT_INTERMEDIATE_DIR"] == f"{root}/output/intermediate"
    assert env["SM_CHANNEL_TRAIN"] == f"{root}/input/data/train"
    assert env["SM_CHANNEL_TEST"] == f"{root}/input/data/test"
    assert seen["cwd"] == f"{root}/code"
    assert seen["train_files"] == ["rows.csv"]
    assert env["SM_CHANNELS"] == '["test","train"]'
    assert env["SM_HOSTS"] == '["algo-1"]'
    assert env["SM_CURRENT_HOST"] == "algo-1"
    assert env["SM_NUM_GPUS"] == "0"
    assert env["SM_LOG_LEVEL"] == "20"
    assert env["SM_USER_ENTRY_POINT"] == "dump_env.py"
    assert env["SM_MODULE_NAME"] == "dump_env"
    assert env["SM_FRAMEWORK_PARAMS"] == "{}"
    assert env["SM_MODULE_DIR"].endswith("/source/sourcedir.tar.gz")
    assert env["TRAINING_JOB_NAME"] == estimator.latest_training_job.name
    assert env["MY_SETTING"] == "on"
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["hyperparameters"] == json.loads(env["SM_HPS"])
    assert training_env["job_name"] == estimator.latest_training_job.name
    # Config files: hyperparameters.json is the encoded string map, reserved keys included.
    hyperparameters_json = seen["config"]["hyperparameters.json"]
    assert hyperparameters_json["s"] == '"hello world"'
    assert hyperparameters_json["use_feature"] == "true"
    assert hyperparameters_json["nothing"] == "null"
    assert hyperparameters_json["sagemaker_program"] == '"dump_env.py"'
    assert set(seen["config"]["inputdataconfig.json"]) == {"train", "test"}
    assert seen["config"]["inputdataconfig.json"]["train"]["TrainingInputMode"] == "File"
    assert seen["config"]["resourceconfig.json"]["current_host"] == "algo-1"
    assert seen["config"]["resourceconfig.json"]["hosts"] == ["algo-1"]


HELPER_SCRIPT = """
    import os
    import six
    from helper import greeting
    print(greeting(), "six from", six.__file__)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "ok.txt"), "w").write(greeting())
"""


def test_source_dir_with_a_helper_module_and_requirements_trains(
    session: Session, data_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _script_dir(
        tmp_path,
        {
            "train.py": HELPER_SCRIPT,
            "helper.py": "def greeting():\n    return 'hello from helper'\n",
            "requirements.txt": "six==1.16.0\n",
        },
    )
    estimator = SKLearn(entry_point="train.py", source_dir=str(source), session=session)
    estimator.fit({"train": data_uri})
    printed = capsys.readouterr().out
    assert "hello from helper six from" in printed
    members = _model_archive_members(session, estimator.model_data, tmp_path / "m")
    assert members == {"ok.txt": b"hello from helper"}


def test_a_bad_requirement_fails_the_job_with_pips_error(
    session: Session, data_uri: str, tmp_path: Path
) -> None:
    source = _script_dir(
        tmp_path,
        {"train.py": "print('never runs')\n", "requirements.txt": "skmaker-no-such-pkg==0.0.1\n"},
    )
    estimator = SKLearn(entry_point="train.py", source_dir=str(source), session=session)
    with pytest.raises(UnexpectedStatusException) as raised:
        estimator.fit({"train": data_uri}, logs=False)
    reason = raised.value.failure_reason
    assert reason.startswith("AlgorithmError: InstallRequirementsError:")
    assert "skmaker-no-such-pkg" in reason


def test_a_script_that_raises_fails_with_the_exceptions_last_line(
    session: Session, data_uri: str, tmp_path: Path
) -> None:
    script = "print('working')\nraise ValueError('boom: the data has 42 columns')\n"
    estimator = SKLearn(
        entry_point="train.py",
        source_dir=str(_script_dir(tmp_path, {"train.py": script})),
        session=session,
    )
    with pytest.raises(UnexpectedStatusException) as raised:
        estimator.fit({"train": data_uri}, logs=False)
    reason = raised.value.failure_reason
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:")
    assert "ValueError: boom: the data has 42 columns" in reason
    assert len(reason) <= 1024
    assert f"Error for Training job {estimator.latest_training_job.name}: Failed" in str(
        raised.value
    )


def test_a_failure_file_written_by_the_script_is_the_reason(
    session: Session, data_uri: str, tmp_path: Path
) -> None:
    script = """
        import os, sys
        with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as handle:
            handle.write("labels column is missing")
        sys.exit(3)
    """
    estimator = SKLearn(
        entry_point="train.py",
        source_dir=str(_script_dir(tmp_path, {"train.py": script})),
        session=session,
    )
    with pytest.raises(UnexpectedStatusException) as raised:
        estimator.fit({"train": data_uri}, logs=False)
    assert raised.value.failure_reason == "AlgorithmError: labels column is missing"


SAVE_ON_SIGTERM_SCRIPT = """
    import os, signal, sys, time
    def save_and_exit(signum, frame):
        with open(os.path.join(os.environ["SM_MODEL_DIR"], "checkpoint.txt"), "w") as handle:
            handle.write("saved at SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, save_and_exit)
    print("ready for work", flush=True)
    time.sleep(300)
"""


def test_max_run_ends_the_script_and_still_uploads_what_it_saved(
    session: Session, data_uri: str, tmp_path: Path
) -> None:
    estimator = SKLearn(
        entry_point="train.py",
        source_dir=str(_script_dir(tmp_path, {"train.py": SAVE_ON_SIGTERM_SCRIPT})),
        max_run=3,
        session=session,
    )
    estimator.fit({"train": data_uri}, logs=False)
    job = estimator.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Stopped"
    assert job["SecondaryStatus"] == "MaxRuntimeExceeded"
    members = _model_archive_members(session, estimator.model_data, tmp_path / "m")
    assert members == {"checkpoint.txt": b"saved at SIGTERM"}


def test_stop_ends_the_script_and_still_uploads_what_it_saved(
    session: Session, data_uri: str, tmp_path: Path
) -> None:
    estimator = SKLearn(
        entry_point="train.py",
        source_dir=str(_script_dir(tmp_path, {"train.py": SAVE_ON_SIGTERM_SCRIPT})),
        session=session,
    )
    estimator.fit({"train": data_uri}, wait=False)
    job = estimator.latest_training_job
    _wait_for_log_line(session, job.name, lambda line: line == "ready for work")
    job.stop()
    described = job.wait(logs=False)
    assert described["TrainingJobStatus"] == "Stopped"
    assert described["SecondaryStatus"] == "Stopped"
    members = _model_archive_members(session, estimator.model_data, tmp_path / "m")
    assert members == {"checkpoint.txt": b"saved at SIGTERM"}


def _first_attempt_hangs_script(marker: Path) -> str:
    return f"""
        import os, time
        marker = {str(marker)!r}
        if not os.path.exists(marker):
            open(marker, "w").close()
            print(f"trainer pid {{os.getppid()}}", flush=True)
            time.sleep(300)
        open(os.path.join(os.environ["SM_MODEL_DIR"], "done.txt"), "w").write("second try")
    """


def _described(session: Session, name: str) -> dict[str, Any]:
    return session.describe_training_job(name)


def test_kill_9_of_a_trainer_retries_the_job_on_another_worker_once(
    tmp_path: Path,
) -> None:
    control = run_service(
        "control",
        tmp_path / "control",
        [
            "--local",
            "--local-trainers",
            "2",
            "--data-dir",
            str(tmp_path / "data"),
            "--lease-s",
            "2",
            "--heartbeat-interval-s",
            "0.5",
            "--retry-backoff-s",
            "0.2",
            "--trainer-args",
            TRAINER_ARGS,
        ],
    )
    try:
        with Session(control.address) as session:
            folder = tmp_path / "rows"
            folder.mkdir()
            (folder / "rows.csv").write_text("1\n")
            uri = session.upload_data(str(folder), key_prefix="rows")
            script = _first_attempt_hangs_script(script_visible_dir() / "first-attempt")
            estimator = SKLearn(
                entry_point="train.py",
                source_dir=str(_script_dir(tmp_path, {"train.py": script})),
                session=session,
            )
            estimator.fit({"train": uri}, wait=False)
            name = estimator.latest_training_job.name
            line = _wait_for_log_line(session, name, lambda text: text.startswith("trainer pid"))
            os.kill(int(line.split()[-1]), signal.SIGKILL)
            described = estimator.latest_training_job.wait(logs=False)
            assert described["TrainingJobStatus"] == "Completed"
            assert described["AttemptCount"] == 2
            completions = [
                t for t in described["SecondaryStatusTransitions"] if t["Status"] == "Completed"
            ]
            assert len(completions) == 1
            members = _model_archive_members(session, estimator.model_data, tmp_path / "m")
            assert members == {"done.txt": b"second try"}
    finally:
        control.stop()


def test_kill_9_of_the_control_keeps_the_job_and_it_finishes_after_restart(
    tmp_path: Path,
) -> None:
    data_dir = str(tmp_path / "data")
    # The trainer runs on its own, as a deployment runs it: a --local trainer would stop with the
    # control it is a child of.
    args = ["--data-dir", data_dir, "--lease-s", "5"]
    release = script_visible_dir() / "release"
    script = f"""
        import os, time
        print("started", flush=True)
        while not os.path.exists({str(release)!r}):
            time.sleep(0.05)
        open(os.path.join(os.environ["SM_MODEL_DIR"], "done.txt"), "w").write("finished")
    """
    first = run_service("control", tmp_path / "first", args)
    trainer = run_service(
        "trainer",
        tmp_path / "trainer",
        [
            *("--control", first.address, "--work-dir", str(tmp_path / "trainer-work")),
            *TRAINER_ARGS.split(),
        ],
    )
    try:
        with Session(first.address) as session:
            folder = tmp_path / "rows"
            folder.mkdir()
            (folder / "rows.csv").write_text("1\n")
            uri = session.upload_data(str(folder), key_prefix="rows")
            estimator = SKLearn(
                entry_point="train.py",
                source_dir=str(_script_dir(tmp_path, {"train.py": script})),
                session=session,
            )
            estimator.fit({"train": uri}, wait=False)
            name = estimator.latest_training_job.name
            _wait_for_log_line(session, name, lambda text: text == "started")
        port = first.grpc_port
        first.kill()  # kill -9 of the control; the trainer keeps running the job
        # Same port: the running trainer reconnects and its heartbeats are accepted again.
        second = run_service("control", tmp_path / "second", [*args, f"--port={port}"])
        try:
            wait_for_serving(second.address, 30)
            with Session(second.address) as session:
                assert _described(session, name)["TrainingJobStatus"] == "InProgress"
                release.touch()
                described = SKLearn.attach(name, session=session).latest_training_job.wait(
                    logs=False
                )
                assert described["TrainingJobStatus"] == "Completed"
                assert described["AttemptCount"] == 1
        finally:
            second.stop()
    finally:
        first.kill()
        trainer.stop()
