"""Dispatch: the task queue with leases that workers pull from, and its worker-facing API."""
