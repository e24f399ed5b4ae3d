"""Predictor and EndpointRouter against real inference replicas, started standalone (no control).

Three replicas serve an iris decision tree: one with the SageMaker example script's default
handlers (numpy, CSV, JSON payloads), two with a custom script whose answers carry the
replica's process id, so balancing, retries and the replica list refresh can be observed.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from skmaker import (
    DeadlineExceeded,
    InvalidArgument,
    ModelError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from skmaker.deserializers import CSVDeserializer, JSONDeserializer, StringDeserializer
from skmaker.predictor import Predictor, SKLearnPredictor
from skmaker.routing import EndpointRouter, addresses_target
from skmaker.serializers import CSVSerializer, IdentitySerializer, JSONSerializer
from tests.harness import REPO_ROOT, ServiceProcess, run_service

pytestmark = pytest.mark.integration

IRIS_SCRIPT_DIR = REPO_ROOT / "examples" / "iris"

# A serving script whose answers say which replica process answered; it can also raise or
# stall on request, to exercise ModelError and deadlines.
CUSTOM_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import time

    import joblib


    def model_fn(model_dir):
        return joblib.load(os.path.join(model_dir, "model.joblib"))


    def input_fn(body, content_type):
        return json.loads(body)


    def predict_fn(data, model):
        if data.get("raise"):
            raise ValueError("boom from predict_fn")
        time.sleep(data.get("sleep_s", 0))
        return {"pid": os.getpid(), "labels": model.predict(data["rows"]).tolist()}


    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
    """
)


@dataclass
class Replicas:
    """The module's replicas and what they serve."""

    iris: ServiceProcess
    custom: list[ServiceProcess]
    model: DecisionTreeClassifier
    model_dir: Path
    custom_code_dir: Path
    workdir: Path


def _start_replica(
    workdir: Path, model_dir: Path, code_dir: Path, entry_point: str, label: str
) -> ServiceProcess:
    flags = {
        "--model-dir": str(model_dir),
        "--code-dir": str(code_dir),
        "--entry-point": entry_point,
        "--work-dir": str(workdir / label / "work"),
        "--replica-id": label,
    }
    args = [part for flag, value in flags.items() for part in (flag, value)]
    return run_service("inference", workdir / label, args, label=label)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("replicas")
    features, labels = load_iris(return_X_y=True)
    model = DecisionTreeClassifier(random_state=0).fit(features, labels)
    model_dir = workdir / "model"
    model_dir.mkdir()
    joblib.dump(model, model_dir / "model.joblib")
    custom_code_dir = workdir / "custom-code"
    custom_code_dir.mkdir()
    (custom_code_dir / "custom.py").write_text(CUSTOM_SCRIPT)
    starts = [
        (IRIS_SCRIPT_DIR, "scikit_learn_iris.py", "iris"),
        (custom_code_dir, "custom.py", "custom-a"),
        (custom_code_dir, "custom.py", "custom-b"),
    ]
    with ThreadPoolExecutor(len(starts)) as pool:
        futures = [
            pool.submit(_start_replica, workdir, model_dir, code, entry, label)
            for code, entry, label in starts
        ]
        started = [future.result() for future in futures]
    try:
        yield Replicas(
            iris=started[0],
            custom=started[1:],
            model=model,
            model_dir=model_dir,
            custom_code_dir=custom_code_dir,
            workdir=workdir,
        )
    finally:
        for service in started:
            service.stop()


@pytest.fixture(scope="module")
def iris_rows() -> np.ndarray:
    features, _ = load_iris(return_X_y=True)
    return np.asarray(features[::10])


# -- the default (numpy) predictor ---------------------------------------------------------------


def test_default_predictor_sends_and_reads_numpy(replicas: Replicas, iris_rows: np.ndarray) -> None:
    with SKLearnPredictor.from_addresses([replicas.iris.address]) as predictor:
        assert predictor.content_type == "application/x-npy"
        assert predictor.accept == ("application/x-npy",)
        predictions = predictor.predict(iris_rows)
    assert isinstance(predictions, np.ndarray)
    np.testing.assert_array_equal(predictions, replicas.model.predict(iris_rows))


def test_one_csv_row_is_one_prediction(replicas: Replicas, iris_rows: np.ndarray) -> None:
    # SageMaker's CSV trap (one row squeezed to 1-D) does not happen on skmaker (contract §8).
    with SKLearnPredictor.from_addresses([replicas.iris.address], CSVSerializer()) as predictor:
        prediction = predictor.predict(iris_rows[0])
    np.testing.assert_array_equal(prediction, replicas.model.predict(iris_rows[:1]))


def test_csv_in_json_out(replicas: Replicas, iris_rows: np.ndarray) -> None:
    with SKLearnPredictor.from_addresses(
        [replicas.iris.address], serializer=CSVSerializer(), deserializer=JSONDeserializer()
    ) as predictor:
        assert predictor.predict(iris_rows.tolist()) == replicas.model.predict(iris_rows).tolist()


def test_json_in_csv_out_as_sagemakers_rows_of_strings(
    replicas: Replicas, iris_rows: np.ndarray
) -> None:
    with SKLearnPredictor.from_addresses(
        [replicas.iris.address], serializer=JSONSerializer(), deserializer=CSVDeserializer()
    ) as predictor:
        rows = predictor.predict(iris_rows)
    assert rows == [[str(label)] for label in replicas.model.predict(iris_rows)]


def test_initial_args_override_the_accept_type(replicas: Replicas, iris_rows: np.ndarray) -> None:
    with SKLearnPredictor.from_addresses([replicas.iris.address]) as predictor:
        # NumpyDeserializer reads the CSV answer by its content type.
        predictions = predictor.predict(iris_rows, initial_args={"Accept": "text/csv"})
        with pytest.raises(ValueError, match="unsupported initial_args"):
            predictor.predict(iris_rows, initial_args={"TargetModel": "m.tar.gz"})
    np.testing.assert_array_equal(predictions, replicas.model.predict(iris_rows))


def test_serializers_are_settable_on_the_predictor(
    replicas: Replicas, iris_rows: np.ndarray
) -> None:
    with SKLearnPredictor.from_addresses([replicas.iris.address]) as predictor:
        predictor.serializer = CSVSerializer()
        predictor.deserializer = StringDeserializer()
        assert predictor.content_type == "text/csv"
        answer = predictor.predict(iris_rows[:2])
    assert json.loads(answer) == replicas.model.predict(iris_rows[:2]).tolist()


# -- errors ------------------------------------------------------------------------------------


def test_wrong_feature_count_is_invalid_argument_and_the_replica_keeps_serving(
    replicas: Replicas, iris_rows: np.ndarray
) -> None:
    with SKLearnPredictor.from_addresses([replicas.iris.address]) as predictor:
        with pytest.raises(InvalidArgument, match="4 features"):
            predictor.predict(iris_rows[:, :2])
        np.testing.assert_array_equal(
            predictor.predict(iris_rows), replicas.model.predict(iris_rows)
        )


def test_unsupported_content_type_is_invalid_argument(replicas: Replicas) -> None:
    # SageMaker's plain-Predictor trap: IdentitySerializer sends application/octet-stream.
    with SKLearnPredictor.from_addresses(
        [replicas.iris.address], serializer=IdentitySerializer()
    ) as predictor:
        with pytest.raises(InvalidArgument, match="octet-stream"):
            predictor.predict(b"5.1,3.5,1.4,0.2")


def test_payload_over_the_limit_is_resource_exhausted(replicas: Replicas) -> None:
    too_big = np.zeros((7 * 1024 * 1024 // (8 * 4) + 1, 4))  # just over 7 MiB of float64
    with SKLearnPredictor.from_addresses([replicas.iris.address]) as predictor:
        with pytest.raises(ResourceExhausted):
            predictor.predict(too_big)


def test_an_exception_in_the_script_is_model_error(replicas: Replicas) -> None:
    with SKLearnPredictor.from_addresses(
        [replicas.custom[0].address], serializer=JSONSerializer(), deserializer=JSONDeserializer()
    ) as predictor:
        with pytest.raises(ModelError, match="boom from predict_fn"):
            predictor.predict({"raise": True})


def test_every_call_has_a_deadline(replicas: Replicas) -> None:
    with SKLearnPredictor.from_addresses(
        [replicas.custom[0].address],
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
        timeout_s=0.5,
    ) as predictor:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            predictor.predict({"rows": [[5.1, 3.5, 1.4, 0.2]], "sleep_s": 2})
    assert time.monotonic() - started < 1.5


# -- balancing, retries, refresh -----------------------------------------------------------------


def _pids_answering(predictor: Predictor, calls: int) -> Counter[int]:
    return Counter(predictor.predict({"rows": [[5.1, 3.5, 1.4, 0.2]]})["pid"] for _ in range(calls))


def test_calls_balance_per_request_over_one_channel(replicas: Replicas) -> None:
    addresses = [replica.address for replica in replicas.custom]
    with SKLearnPredictor.from_addresses(
        addresses, serializer=JSONSerializer(), deserializer=JSONDeserializer()
    ) as predictor:
        pids = _pids_answering(predictor, 40)
    assert len(pids) == 2, pids
    assert min(pids.values()) >= 10, pids  # round_robin: about 20 each


def test_a_stopped_replica_is_retried_on_another(replicas: Replicas, tmp_path: Path) -> None:
    doomed = _start_replica(
        tmp_path, replicas.model_dir, replicas.custom_code_dir, "custom.py", "doomed"
    )
    doomed_address = doomed.address
    with SKLearnPredictor.from_addresses(
        [doomed_address, replicas.custom[0].address],
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    ) as predictor:
        assert len(_pids_answering(predictor, 10)) == 2
        doomed.stop()
        # Every call succeeds: the calls that meet the gone replica's UNAVAILABLE are retried.
        assert len(_pids_answering(predictor, 20)) == 1

    with SKLearnPredictor.from_addresses([doomed_address]) as nowhere:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            nowhere.predict(np.zeros((1, 4)))
    assert time.monotonic() - started < 10


def test_the_router_follows_a_changed_replica_list(replicas: Replicas) -> None:
    first, second = (replica.address for replica in replicas.custom)
    current = [addresses_target([first])]
    router = EndpointRouter(resolve=lambda: current[0], refresh_interval_s=3600)
    try:
        body = json.dumps({"rows": [[5.1, 3.5, 1.4, 0.2]]})
        pid_first = json.loads(router.invoke(body, "application/json")[0])["pid"]
        current[0] = addresses_target([second])
        router.refresh()
        pid_second = json.loads(router.invoke(body, "application/json")[0])["pid"]
    finally:
        router.close()
    assert pid_first != pid_second
    assert router.target is None  # closed


def test_unavailable_wakes_a_refresh_that_the_retry_uses(
    replicas: Replicas, tmp_path: Path
) -> None:
    gone = _start_replica(
        tmp_path, replicas.model_dir, replicas.custom_code_dir, "custom.py", "gone"
    )
    gone_address = gone.address
    gone.stop()
    live = replicas.custom[1].address
    resolved: list[str] = []

    def resolve() -> str:
        # The first answer is stale (as after a replica was replaced); later ones are fresh.
        resolved.append(gone_address if not resolved else live)
        return addresses_target([resolved[-1]])

    router = EndpointRouter(resolve=resolve, refresh_interval_s=3600)
    try:
        body = json.dumps({"rows": [[5.1, 3.5, 1.4, 0.2]]})
        answer, content_type = router.invoke(body, "application/json")
    finally:
        router.close()
    assert content_type == "application/json"
    assert json.loads(answer)["labels"] == [0]
    assert resolved[0] == gone_address and resolved[-1] == live


def test_endpoint_name_mismatch_is_refused_by_the_replica(replicas: Replicas) -> None:
    with SKLearnPredictor.from_addresses(
        [replicas.iris.address], endpoint_name="not-this-one"
    ) as predictor:
        # A standalone replica serves no named endpoint, so any name is someone else's.
        with pytest.raises(NotFound, match="not-this-one"):
            predictor.predict(np.zeros((1, 4)))


def test_from_addresses_has_no_control_session() -> None:
    predictor = SKLearnPredictor.from_addresses(["127.0.0.1:9"])
    try:
        with pytest.raises(ValueError, match="no control session"):
            predictor.delete_endpoint()
    finally:
        predictor.close()
