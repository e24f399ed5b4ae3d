"""Batch worker: leases transform shards, scores them with the model's handlers, writes .out files."""  # noqa: E501
