"""Run by a script runtime's python: what skmaker's sagemaker_containers and the real toolkits
produce for the same inputs. Reads a JSON request on stdin, prints a JSON answer.

Request: {"arrays": [python expressions over `np`], "bodies": [[content_type, base64 body]]}.
Answer: {"encoded": [{content_type: {"compat"|"training"|"inference": base64 or "error: ..."}}],
"decoded": [{"compat"|"training"|"inference": {"list": ..., "dtype": ...} or "error: ..."}]}.
"""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
import sagemaker_inference.decoder
import sagemaker_inference.encoder
import sagemaker_training.encoders
from sagemaker_containers.beta.framework import encoders

CONTENT_TYPES = ("text/csv", "application/json", "application/x-npy")
ENCODERS = {
    "compat": encoders.encode,
    "training": sagemaker_training.encoders.encode,
    "inference": sagemaker_inference.encoder.encode,
}
DECODERS = {
    "compat": encoders.decode,
    "training": sagemaker_training.encoders.decode,
    "inference": sagemaker_inference.decoder.decode,
}


def as_base64(value: object) -> str:
    data = value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]
    return base64.b64encode(data).decode()


def outcome(function, *args):  # type: ignore[no-untyped-def]
    try:
        return function(*args), None
    except Exception as err:
        return None, f"error: {type(err).__name__}: {err}"


def main() -> None:
    request = json.load(sys.stdin)
    encoded = []
    for expression in request["arrays"]:
        value = eval(expression, {"np": np})
        by_type = {}
        for content_type in CONTENT_TYPES:
            by_type[content_type] = {}
            for name, encode in ENCODERS.items():
                result, error = outcome(encode, value, content_type)
                by_type[content_type][name] = error or as_base64(result)
        encoded.append(by_type)
    decoded = []
    for content_type, body64 in request["bodies"]:
        body = base64.b64decode(body64)
        # Handlers get text bodies as str for CSV and JSON, as SageMaker passes them.
        payload = body if content_type == "application/x-npy" else body.decode()
        results = {}
        for name, decode in DECODERS.items():
            array, error = outcome(decode, payload, content_type)
            results[name] = error or {"list": array.tolist(), "dtype": str(array.dtype)}
        decoded.append(results)
    json.dump({"encoded": encoded, "decoded": decoded}, sys.stdout)


if __name__ == "__main__":
    main()
