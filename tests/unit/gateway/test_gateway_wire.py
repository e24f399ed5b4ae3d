"""`read_string_field` against protobuf's own parser: any order, last wins, malformed refused."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.wire import MalformedMessage, read_string_field
from skmaker.v1 import inference_pb2, open_inference_pb2


def test_reads_the_endpoint_name_of_a_predict_request() -> None:
    request = inference_pb2.PredictRequest(
        endpoint_name="iris", content_type="text/csv", text="5.1,3.5,1.4,0.2", accept="*/*"
    )
    assert read_string_field(request.SerializeToString(), 1) == "iris"
    assert read_string_field(request.SerializeToString(), 2) == "text/csv"


def test_reads_the_model_name_of_a_large_model_infer_request() -> None:
    tensor = open_inference_pb2.ModelInferRequest.InferInputTensor(
        name="input-0", datatype="FP32", shape=[250_000, 4]
    )
    request = open_inference_pb2.ModelInferRequest(
        model_name="iris",
        id="7",
        inputs=[tensor],
        raw_input_contents=[np.ones(1_000_000, np.float32).tobytes()],
    )
    assert read_string_field(request.SerializeToString(), 1) == "iris"


def test_a_missing_field_reads_empty() -> None:
    request = inference_pb2.PredictRequest(content_type="text/csv", body=b"\x00\x01")
    assert read_string_field(request.SerializeToString(), 1) == ""
    assert read_string_field(b"", 1) == ""


def test_fields_in_any_order_and_the_last_occurrence_wins() -> None:
    # Concatenated messages merge: the later endpoint_name wins, as protobuf's parser says.
    first = inference_pb2.PredictRequest(endpoint_name="old", text="1,2").SerializeToString()
    later = inference_pb2.PredictRequest(endpoint_name="new", accept="x").SerializeToString()
    tail_first = inference_pb2.PredictRequest(text="1,2").SerializeToString() + (
        inference_pb2.PredictRequest(endpoint_name="iris").SerializeToString()
    )
    for data in (first + later, tail_first):
        parsed = inference_pb2.PredictRequest.FromString(data)
        assert read_string_field(data, 1) == parsed.endpoint_name


def test_varint_and_fixed_fields_are_skipped() -> None:
    infer = open_inference_pb2.InferParameter(int64_param=-5).SerializeToString()
    assert read_string_field(infer, 3) == ""
    fixed = bytes([0x09]) + b"\x00" * 8 + bytes([0x15]) + b"\x00" * 4 + b"\x0a\x01e"
    assert read_string_field(fixed, 1) == "e"


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05iri",  # length past the end
        b"\x0a",  # key without a length
        b"\x08\x80",  # unfinished varint
        b"\x0b\x0c",  # a group
        b"\x0a\x02\xff\xfe",  # not UTF-8
        b"\x09\x00\x00",  # fixed64 cut short
    ],
)
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        read_string_field(data, 1)
