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
    "creation_time, runtime_versions_json, framework_version, script_runtime"
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
                    f"INSERT INTO models ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        model.name,
                        model.model_data_uri,
                        model.entry_point,
                        model.source_uri,
                        json.dumps(dict(model.environment), sort_keys=True),
                        model.training_job_name,
                        model.creation_time,
                        json.dumps(asdict(model.runtime_versions)),
                        model.framework_version,
                        model.script_runtime,
                    ),
                )
            except sqlite3.IntegrityError:
                deleted = conn.execute(
                    "SELECT 1 FROM models WHERE name = ? AND deleted = 1", (model.name,)
                ).fetchone()
                if deleted:
                    raise AlreadyExists(
                        f"model {model.name!r} was deleted, but endpoints still serve it; its "
                        "name is free once they are deleted or updated to another model"
                    ) from None
                raise AlreadyExists(f"model {model.name!r} already exists") from None

    def get(self, name: str, *, include_deleted: bool = False) -> Model | None:
        """The model named `name`, or None; a deleted one (kept for the endpoints serving it)
        only with `include_deleted`."""
        with self._store.transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM models WHERE name = ? AND (deleted = 0 OR ?)",
                (name, include_deleted),
            ).fetchone()
        return None if row is None else _model_from_row(row)

    def mark_deleted(self, name: str) -> bool:
        """Hides the model from everyone but the endpoints serving it; False when there was
        no live model of that name."""
        with self._store.transaction() as conn:
            cursor = conn.execute(
                "UPDATE models SET deleted = 1 WHERE name = ? AND deleted = 0", (name,)
            )
        return cursor.rowcount > 0

    def purge_released(self) -> None:
        """Removes deleted models that no endpoint serves or may roll back to any more."""
        with self._store.transaction() as conn:
            conn.execute(
                "DELETE FROM models WHERE deleted = 1 AND NOT EXISTS (SELECT 1 FROM endpoints "
                "WHERE endpoints.model_name = models.name "
                "OR endpoints.previous_model_name = models.name)"
            )

    def list_models(self, name_prefix: str) -> list[Model]:
        """Models whose name starts with `name_prefix` (literal, case-sensitive), newest first."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM models WHERE substr(name, 1, ?) = ? AND deleted = 0 "
                "ORDER BY id DESC",
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
        framework_version=row["framework_version"],
        script_runtime=row["script_runtime"],
    )
