"""Control plane: the public APIs (training, models, endpoints, artifacts), task queue, replicas."""
