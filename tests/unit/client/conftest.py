"""Fixtures of the client unit tests: a fake control server and a session to it."""

from fake_control_server import fake_control, session

__all__ = ["fake_control", "session"]
