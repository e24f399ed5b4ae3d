"""SageMaker's contracts that more than one service implements, owned by none of them.

- `serving/`: the inference handler contract (default codecs, `model_fn` / `input_fn` /
  `predict_fn` / `output_fn` / `transform_fn`, what they may return, loading a model archive),
  used by inference replicas and batch workers alike.
- `scripts/`: running a user script as a process group and installing its `requirements.txt`,
  used by the trainer and by model loading.
- `transform/`: batch transform records (SplitType, BatchStrategy, MaxPayloadInMB),
  DataProcessing filters and joins, and bad-record reports: the control checks a job's
  settings and writes errors files with them; batch workers read, score and report records.
"""
