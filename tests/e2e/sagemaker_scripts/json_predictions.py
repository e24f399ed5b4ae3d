"""A serving script whose output_fn returns a dict, which Flask-based serving sends as JSON."""

import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def output_fn(prediction, accept):
    return {"predictions": [int(label) for label in prediction], "accept": accept}
