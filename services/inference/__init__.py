"""Inference replica: loads one model through the user's handlers and serves Predict and the Open Inference Protocol V2."""  # noqa: E501
