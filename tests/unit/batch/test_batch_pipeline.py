"""The domain modules together, as a worker chains them: shard → records → mini-batches → output.

A file scored in many shards, assembled, must equal the file scored as one shard and hold the
model's own prediction for every row, in order (issue 5, acceptance 1).
"""

from __future__ import annotations

import gzip
import io
from typing import Any

import numpy as np
import pytest

from services.control.transform.shards import InputFile, Shard, assemble, plan_shards
from services.sagemaker.serving.handler import ModelHandler
from services.sagemaker.transform.data_processing import AssembleWith, process_batch
from services.sagemaker.transform.records import BatchStrategy, Compression, iter_batches


def _score_shard(
    data: bytes,
    shard: Shard,
    handler: ModelHandler,
    *,
    strategy: BatchStrategy,
    payload: int,
    accept: str,
    assemble_with: AssembleWith,
    compression: Compression = "None",
    skip_header: bool = False,
) -> bytes:
    out = io.BytesIO()
    batches = iter_batches(
        io.BytesIO(data),
        "Line",
        shard.start,
        shard.end,
        compression,
        strategy=strategy,
        max_payload_bytes=payload,
        skip_header=skip_header,
    )
    for batch in batches:
        out.write(
            process_batch(
                batch,
                handler.invoke,
                content_type="text/csv",
                accept=accept,
                split_type="Line",
                assemble_with=assemble_with,
            )
        )
    return out.getvalue()


def _transform(data: bytes, target: int, handler: ModelHandler, **options: Any) -> bytes:
    shards = plan_shards(
        [InputFile("in.csv", len(data))],
        "Line",
        target,
        lambda key, start, length: data[start : start + length],
        compression=options.get("compression", "None"),
    )
    parts = [io.BytesIO(_score_shard(data, shard, handler, **options)) for shard in shards]
    out = io.BytesIO()
    assemble(parts, out)
    return out.getvalue()


@pytest.fixture(scope="module")
def iris_csv(iris_rows: np.ndarray[Any, Any]) -> bytes:
    rows = np.tile(iris_rows, (8, 1))
    return "".join(",".join(map(str, row)) + "\r\n" for row in rows.tolist()).encode()


@pytest.mark.parametrize("target", [40, 997, 10_000, 10**9])
@pytest.mark.parametrize(
    ("strategy", "payload"), [("MultiRecord", 6 * 1024 * 1024), ("MultiRecord", 500)]
)
def test_sharded_output_equals_the_models_predictions(
    iris_handler: ModelHandler,
    iris_rows: np.ndarray[Any, Any],
    iris_csv: bytes,
    target: int,
    strategy: BatchStrategy,
    payload: int,
) -> None:
    labels = iris_handler.model.predict(np.tile(iris_rows, (8, 1)).astype(np.float32))
    expected = "".join(f"{label}\n" for label in labels).encode()
    for assemble_with in ("Line", "None"):
        got = _transform(
            iris_csv,
            target,
            iris_handler,
            strategy=strategy,
            payload=payload,
            accept="text/csv",
            assemble_with=assemble_with,
        )
        assert got == expected


def test_single_record_with_json_answers_line_assembled(
    iris_handler: ModelHandler, iris_rows: np.ndarray[Any, Any], iris_csv: bytes
) -> None:
    data = iris_csv[: iris_csv.index(b"\n", 2000) + 1]
    count = data.count(b"\n")
    labels = iris_handler.model.predict(np.tile(iris_rows, (8, 1))[:count].astype(np.float32))
    got = _transform(
        data,
        700,
        iris_handler,
        strategy="SingleRecord",
        payload=100,
        accept="application/json",
        assemble_with="Line",
    )
    assert got == "".join(f"{label}\n" for label in labels).encode()


def test_gzip_input_with_a_header(
    iris_handler: ModelHandler, iris_rows: np.ndarray[Any, Any], iris_csv: bytes
) -> None:
    packed = gzip.compress(b"sepal_length,sepal_width,petal_length,petal_width\n" + iris_csv)
    labels = iris_handler.model.predict(np.tile(iris_rows, (8, 1)).astype(np.float32))
    got = _transform(
        packed,
        100,
        iris_handler,
        strategy="MultiRecord",
        payload=4096,
        accept="text/csv",
        assemble_with="Line",
        compression="Gzip",
        skip_header=True,
    )
    assert got == "".join(f"{label}\n" for label in labels).encode()
