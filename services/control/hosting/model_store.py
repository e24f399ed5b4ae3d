"""Queries of the `models` table, on the control's database (`ControlStore`'s connection)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict

from services.control.hosting.model_values import Model
from services.control.state import ControlStore
from services.control.training.values import RuntimeVersions
from services.runtime.errors import AlreadyExists

_COLUMNS = (
    "name, model_data_uri, entry_point, source_uri, environment_json, training_job_name, "
    "creation_time, runtime_versions_json"
)


class ModelStore:
    """Stored models. Thread-safe: every call runs in one `ControlStore` transaction."""

    def __init__(self, store: ControlStore) -> None:
        """Uses `store`'s connection and transactions."""
        self._store = store

    def insert(self, model: Model) -> None:
        """Stores a new model.

        Raises:
            AlreadyExists: a model with this name exists.
        """
        with self._store.transaction() as conn:
            try:
                conn.execute(
                    f"INSERT INTO models ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        model.name,
                        model.model_data_uri,
                        model.entry_point,
                        model.source_uri,
                        json.dumps(dict(model.environment), sort_keys=True),
                        model.training_job_name,
                        model.creation_time,
                        json.dumps(asdict(model.runtime_versions)),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"model {model.name!r} already exists") from None

    def get(self, name: str) -> Model | None:
        """The model named `name`, or None."""
        with self._store.transaction() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()
        return None if row is None else _model_from_row(row)

    def list_models(self, name_prefix: str) -> list[Model]:
        """Models whose name starts with `name_prefix` (literal, case-sensitive), newest first."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM models WHERE substr(name, 1, ?) = ? ORDER BY id DESC",
                (len(name_prefix), name_prefix),
            ).fetchall()
        return [_model_from_row(row) for row in rows]

    def delete(self, name: str) -> bool:
        """Removes the model; False when there was none."""
        with self._store.transaction() as conn:
            cursor = conn.execute("DELETE FROM models WHERE name = ?", (name,))
        return cursor.rowcount > 0


def _model_from_row(row: sqlite3.Row) -> Model:
    return Model(
        name=row["name"],
        model_data_uri=row["model_data_uri"],
        entry_point=row["entry_point"],
        source_uri=row["source_uri"],
        environment=json.loads(row["environment_json"]),
        training_job_name=row["training_job_name"],
        creation_time=row["creation_time"],
        runtime_versions=RuntimeVersions(**json.loads(row["runtime_versions_json"])),
    )
