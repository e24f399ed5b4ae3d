"""`ControlStore`: the control's database with the tables every part of the control shares.

The training-job and task tables are methods of the store (the scheduler changes a task and its
job in one transaction); the other resources' queries (`hosting.model_store`,
`hosting.endpoint_store`, `transform.store`, `tuning.store`) wrap the same store.
"""

from __future__ import annotations

from services.control.dispatch.store import TaskTables
from services.control.training.store import TrainingJobTables


class ControlStore(TrainingJobTables, TaskTables):
    """SQLite-backed state of the control: its database with the training-job and task tables."""
