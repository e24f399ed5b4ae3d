"""Trainer worker: pulls training tasks, runs SageMaker-style scripts, uploads model.tar.gz."""
