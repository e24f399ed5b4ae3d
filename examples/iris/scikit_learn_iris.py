"""Training script of the SageMaker scikit-learn iris example, runnable on SageMaker or skmaker.

The platform runs it as `python scikit_learn_iris.py --max_leaf_nodes 30` with the SM_*
environment set: it reads every CSV in the `train` channel (no header, the label in the first
column), fits a decision tree and saves it to the model folder. At serving time the platform
imports this file and calls `model_fn` to load the model back.

For tuning, `--validation_fraction 0.3` holds out that share of the rows (stratified, fixed
seed) and prints `validation accuracy: 0.950`, the line a tuner's metric definition reads;
`--criterion` picks the tree's split criterion (gini by default).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import joblib
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

MODEL_FILE = "model.joblib"


def parse_args() -> argparse.Namespace:
    """Hyperparameters from argv; the folders default to what the platform sets in SM_*."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_leaf_nodes", type=int, default=-1)
    parser.add_argument("--criterion", default="gini", choices=["gini", "entropy", "log_loss"])
    parser.add_argument("--validation_fraction", type=float, default=0.0)
    parser.add_argument("--output-data-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR"))
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN"))
    # parse_known_args: the platform may pass more hyperparameters than this script knows.
    args, _ = parser.parse_known_args()
    return args


def read_training_data(folder: str) -> pd.DataFrame:
    """Every CSV file in `folder`, concatenated; the files have no header row."""
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise ValueError(
            f"no CSV files in {folder}: the 'train' channel must hold the training data"
        )
    return pd.concat([pd.read_csv(file, header=None) for file in files], ignore_index=True)


def model_fn(model_dir: str) -> DecisionTreeClassifier:
    """Loads the model saved by training (called by the serving platform)."""
    return joblib.load(os.path.join(model_dir, MODEL_FILE))


if __name__ == "__main__":
    args = parse_args()
    data = read_training_data(args.train)
    labels, features = data.iloc[:, 0], data.iloc[:, 1:]
    held_out = None
    if args.validation_fraction > 0:
        features, held_features, labels, held_labels = train_test_split(
            features,
            labels,
            test_size=args.validation_fraction,
            stratify=labels,
            random_state=0,
        )
        held_out = (held_features, held_labels)

    # -1 means "no limit" on the command line; scikit-learn spells that None.
    max_leaf_nodes = args.max_leaf_nodes if args.max_leaf_nodes > 0 else None
    classifier = DecisionTreeClassifier(
        max_leaf_nodes=max_leaf_nodes, criterion=args.criterion, random_state=0
    )
    classifier.fit(features, labels)
    accuracy = classifier.score(features, labels)
    print(f"trained on {len(features)} rows; training accuracy {accuracy:.3f}")
    if held_out is not None:
        print(f"validation accuracy: {classifier.score(*held_out):.3f}")

    joblib.dump(classifier, os.path.join(args.model_dir, MODEL_FILE))
