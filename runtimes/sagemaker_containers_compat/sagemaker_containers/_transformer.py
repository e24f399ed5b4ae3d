"""The toolkit's `transformer` module, imported by serving scripts written for its container.

That container chained `input_fn`, `predict_fn` and `output_fn` in its own Flask server; in
skmaker the replica and the batch worker chain them (services/sagemaker/serving/handler.py),
so scripts import this module without needing anything from it.
"""
