"""Inference calls sent to the control: the UNIMPLEMENTED answer says where they are served."""

from __future__ import annotations

from services.control.hosting.misdirected_inference import MisdirectedInferenceHandler
from skmaker.v1 import inference_pb2, open_inference_pb2

ADDRESSES = {"iris": "127.0.0.1:40123"}


def _explain(method: str, request: bytes) -> str:
    return MisdirectedInferenceHandler(ADDRESSES.get).explain(method, request)


def test_predict_for_a_known_endpoint_names_its_address() -> None:
    request = inference_pb2.PredictRequest(endpoint_name="iris", text="1,2").SerializeToString()
    message = _explain("/skmaker.v1.InferenceService/Predict", request)
    assert message.startswith("skmaker.v1.InferenceService/Predict is not served by the control")
    assert "send it to endpoint 'iris' at 127.0.0.1:40123 (or the gateway)" in message


def test_model_infer_reads_the_model_name_as_the_endpoint() -> None:
    request = open_inference_pb2.ModelInferRequest(model_name="iris").SerializeToString()
    message = _explain("/inference.GRPCInferenceService/ModelInfer", request)
    assert "endpoint 'iris' at 127.0.0.1:40123" in message


def test_an_unknown_endpoint_or_an_unparsable_request_points_at_describe_endpoint() -> None:
    unknown = inference_pb2.PredictRequest(endpoint_name="nope").SerializeToString()
    assert "there is no endpoint 'nope'" in _explain(
        "/skmaker.v1.InferenceService/Predict", unknown
    )
    garbage = _explain("/skmaker.v1.InferenceService/Predict", b"\xff\xff\xff")
    assert garbage.endswith("DescribeEndpoint gives an endpoint's address")


def test_other_services_are_left_to_their_own_handlers() -> None:
    class Details:
        method = "/skmaker.v1.TrainingService/CreateTrainingJob"

    assert MisdirectedInferenceHandler(ADDRESSES.get).service(Details()) is None  # type: ignore[arg-type]
