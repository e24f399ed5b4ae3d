"""A scikit-learn script-mode script written the way SageMaker's examples write them.

Training: hyperparameters and folders come from argparse defaults filled from `SM_*`, and the
script also reads its configuration through both toolkits, `sagemaker_training`'s
`Environment()` and the legacy `sagemaker_containers.training_env()`, checks they agree with
the `SM_*` variables and each other, and saves what they read next to the model.

Serving: `input_fn` decodes with sagemaker_inference's decoder, `output_fn` answers through the
legacy toolkit's `worker.Response(encoders.encode(prediction, accept), mimetype=accept)`.
"""

import argparse
import json
import os

import boto3  # imported at module level, as scripts that upload to S3 do
import joblib
import numpy as np
import pandas as pd
import sagemaker_containers
from sagemaker_containers.beta.framework import (
    content_types,
    encoders,
    env,
    modules,
    transformer,
    worker,
)
from sagemaker_inference import decoder
from sagemaker_training import environment
from sklearn.tree import DecisionTreeClassifier


def _what_it_read(env):
    return {
        "hyperparameters": dict(env.hyperparameters),
        "channel_input_dirs": dict(env.channel_input_dirs),
        "hosts": list(env.hosts),
        "current_host": env.current_host,
        "module_name": env.module_name,
        "user_entry_point": env.user_entry_point,
        "model_dir": env.model_dir,
        "output_data_dir": env.output_data_dir,
        "num_cpus": env.num_cpus,
        "num_gpus": env.num_gpus,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_leaf_nodes", type=int, default=-1)
    parser.add_argument("--criterion", type=str, default="gini")
    parser.add_argument("--output-data-dir", type=str, default=os.environ.get("SM_OUTPUT_DATA_DIR"))
    parser.add_argument("--model-dir", type=str, default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", type=str, default=os.environ.get("SM_CHANNEL_TRAIN"))
    args, _ = parser.parse_known_args()

    toolkit = _what_it_read(environment.Environment())
    legacy = _what_it_read(sagemaker_containers.training_env())
    assert toolkit == legacy, (toolkit, legacy)
    assert toolkit["model_dir"] == args.model_dir, (toolkit["model_dir"], args.model_dir)
    assert toolkit["channel_input_dirs"]["train"] == args.train
    assert toolkit["hosts"] == json.loads(os.environ["SM_HOSTS"])
    assert toolkit["hyperparameters"] == json.loads(os.environ["SM_HPS"])
    print("both toolkits read:", json.dumps(toolkit, sort_keys=True))

    files = [os.path.join(args.train, name) for name in os.listdir(args.train)]
    train_data = pd.concat([pd.read_csv(path, header=None, engine="python") for path in files])
    train_y = train_data.iloc[:, 0]
    train_X = train_data.iloc[:, 1:]
    clf = DecisionTreeClassifier(max_leaf_nodes=args.max_leaf_nodes, criterion=args.criterion)
    clf = clf.fit(train_X.values, train_y.values)
    joblib.dump(clf, os.path.join(args.model_dir, "model.joblib"))
    with open(os.path.join(args.model_dir, "environment.json"), "w") as report:
        json.dump({"toolkit": toolkit, "boto3": boto3.__version__}, report)


def model_fn(model_dir):
    serving = env.ServingEnv()
    assert serving.module_name == "iris_script_mode", serving.module_name
    assert modules.exists("sklearn") and transformer.__name__
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def input_fn(input_data, content_type):
    if content_type == content_types.CSV:
        return np.atleast_2d(np.asarray(decoder.decode(input_data, content_type), dtype=float))
    raise ValueError(f"{content_type} is not supported by this script")


def output_fn(prediction, accept):
    if accept in (content_types.CSV, content_types.JSON, content_types.NPY):
        return worker.Response(encoders.encode(prediction, accept), mimetype=accept)
    raise ValueError(f"{accept} accept type is not supported by this script")
