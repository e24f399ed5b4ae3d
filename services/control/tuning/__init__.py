"""Tuning jobs: the API, the Optuna-backed tuner, search spaces, the trial loop, the tables."""
