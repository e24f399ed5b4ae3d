"""The gateway: one gRPC port routing Predict and Open Inference V2 to every endpoint's replicas."""
