"""Runs in `.venv-v2client` (tritonclient[grpc], protobuf 6): a V2 client skmaker did not write.

Usage: python v2_client_script.py HOST:PORT MODEL_NAME ROWS_JSON. Prints one JSON object with
readiness, metadata and the `predict` output, for the test in skmaker's own venv to check. Kept
out of skmaker's process because tritonclient and skmaker's open_inference_pb2 both register the
`inference.*` protobuf symbols.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton


def main() -> int:
    address, model_name, rows_json = sys.argv[1:4]
    rows = np.array(json.loads(rows_json), dtype=np.float32)
    client = triton.InferenceServerClient(url=address)
    metadata = client.get_model_metadata(model_name, as_json=True)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # tritonclient sends raw_input_contents
    result = client.infer(model_name, [tensor], outputs=[triton.InferRequestedOutput("predict")])
    print(
        json.dumps(
            {
                "live": client.is_server_live(),
                "ready": client.is_server_ready(),
                "model_ready": client.is_model_ready(model_name),
                "server": client.get_server_metadata(as_json=True),
                "metadata": metadata,
                "predict": result.as_numpy("predict").tolist(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
