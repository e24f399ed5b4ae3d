"""Queries of the endpoint tables (endpoints, their events, their recorded replicas, what
answers each replica's predict calls).

Shares `ControlStore`'s connection and transactions. Also the `ReplicaLedger` of the replica
backends: the replicas they started, so a restarted control can stop the ones left running.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from services.control.backends import RecordedReplica
from services.control.hosting.endpoint_values import (
    Endpoint,
    EndpointEvent,
    EndpointStatus,
    PredictPath,
    ScalingMetric,
    ScalingPolicy,
)
from services.control.state import ControlStore
from services.runtime.errors import AlreadyExists

# Events kept per endpoint; older ones are pruned as new ones arrive.
MAX_EVENTS_KEPT = 500

_COLUMNS = (
    "name, model_name, previous_model_name, status, failure_reason, address, desired_replicas, "
    "scaling_policy_json, creation_time, last_modified_time"
)


class EndpointStore:
    """Stored endpoints, events and recorded replicas. Thread-safe (one transaction per call)."""

    def __init__(self, store: ControlStore) -> None:
        """Uses `store`'s connection and transactions."""
        self._store = store

    # ----------------------------------------------------------------- endpoints

    def insert(self, endpoint: Endpoint) -> None:
        """Stores a new endpoint.

        Raises:
            AlreadyExists: an endpoint with this name exists.
        """
        with self._store.transaction() as conn:
            try:
                conn.execute(
                    f"INSERT INTO endpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _endpoint_row(endpoint),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"endpoint {endpoint.name!r} already exists") from None

    def update(self, endpoint: Endpoint) -> None:
        """Writes every mutable column of an existing endpoint."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE endpoints SET model_name = ?, previous_model_name = ?, status = ?, "
                "failure_reason = ?, address = ?, desired_replicas = ?, scaling_policy_json = ?, "
                "last_modified_time = ? WHERE name = ?",
                (*_endpoint_row(endpoint)[1:8], endpoint.last_modified_time, endpoint.name),
            )

    def get(self, name: str) -> Endpoint | None:
        """The endpoint named `name`, or None."""
        with self._store.transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM endpoints WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else _endpoint_from_row(row)

    def list_endpoints(self, name_prefix: str = "") -> list[Endpoint]:
        """Endpoints whose name starts with `name_prefix`, newest first."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM endpoints WHERE substr(name, 1, ?) = ? ORDER BY id DESC",
                (len(name_prefix), name_prefix),
            ).fetchall()
        return [_endpoint_from_row(row) for row in rows]

    def names_using_model(self, model_name: str) -> list[str]:
        """Endpoints serving `model_name` or rolling back to it."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT name FROM endpoints WHERE model_name = ? OR previous_model_name = ? "
                "ORDER BY name",
                (model_name, model_name),
            ).fetchall()
        return [row["name"] for row in rows]

    def delete(self, name: str) -> None:
        """Removes the endpoint and its events (its replicas must be gone already)."""
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM endpoint_events WHERE endpoint_name = ?", (name,))
            conn.execute("DELETE FROM replica_predict_paths WHERE endpoint_name = ?", (name,))
            conn.execute("DELETE FROM endpoints WHERE name = ?", (name,))

    # ----------------------------------------------------------------- events

    def append_event(self, endpoint_name: str, event: EndpointEvent) -> None:
        """Appends an event and prunes all but the newest `MAX_EVENTS_KEPT`."""
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(sequence) + 1, 0) FROM endpoint_events "
                "WHERE endpoint_name = ?",
                (endpoint_name,),
            ).fetchone()
            sequence = int(row[0])
            conn.execute(
                "INSERT INTO endpoint_events (endpoint_name, sequence, timestamp, message) "
                "VALUES (?, ?, ?, ?)",
                (endpoint_name, sequence, event.timestamp, event.message),
            )
            conn.execute(
                "DELETE FROM endpoint_events WHERE endpoint_name = ? AND sequence <= ?",
                (endpoint_name, sequence - MAX_EVENTS_KEPT),
            )

    def recent_events(self, endpoint_name: str, limit: int) -> list[EndpointEvent]:
        """The newest `limit` events, oldest first."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT timestamp, message FROM endpoint_events WHERE endpoint_name = ? "
                "ORDER BY sequence DESC LIMIT ?",
                (endpoint_name, limit),
            ).fetchall()
        return [EndpointEvent(row["timestamp"], row["message"]) for row in reversed(rows)]

    # ----------------------------------------------------------------- predict paths

    def record_predict_path(self, endpoint_name: str, replica_id: str, path: PredictPath) -> bool:
        """Stores what answers a replica's predict calls (replacing its previous report).

        Returns:
            True when no other replica of the endpoint reported the same model, path and reason
            (the news is worth an event once, not once per replica).
        """
        with self._store.transaction() as conn:
            seen = conn.execute(
                "SELECT 1 FROM replica_predict_paths WHERE endpoint_name = ? AND replica_id != ? "
                "AND model_name = ? AND path = ? AND reason = ? LIMIT 1",
                (endpoint_name, replica_id, path.model_name, path.name, path.reason),
            ).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO replica_predict_paths (endpoint_name, replica_id, "
                "model_name, path, reason, refused, max_rows) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    endpoint_name,
                    replica_id,
                    path.model_name,
                    path.name,
                    path.reason,
                    int(path.refused),
                    path.max_rows,
                ),
            )
        return seen is None

    def predict_paths(self, endpoint_name: str) -> dict[str, PredictPath]:
        """Replica id -> its reported predict path, for the replicas that reported one."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT replica_id, model_name, path, reason, refused, max_rows "
                "FROM replica_predict_paths WHERE endpoint_name = ?",
                (endpoint_name,),
            ).fetchall()
        return {
            row["replica_id"]: PredictPath(
                row["model_name"], row["path"], row["reason"], bool(row["refused"]), row["max_rows"]
            )
            for row in rows
        }

    # ----------------------------------------------------------------- ReplicaLedger

    def record_replica(self, replica: RecordedReplica) -> None:
        """Records a started replica (replacing a stale record with the same id)."""
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO endpoint_replicas "
                "(endpoint_name, replica_id, backend, handle, model_name, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    replica.endpoint_name,
                    replica.replica_id,
                    replica.backend,
                    replica.handle,
                    replica.model_name,
                    replica.started_at,
                ),
            )

    def forget_replica(self, endpoint_name: str, replica_id: str) -> None:
        """Forgets a replica that is gone (and what it served predicts with)."""
        with self._store.transaction() as conn:
            conn.execute(
                "DELETE FROM endpoint_replicas WHERE endpoint_name = ? AND replica_id = ?",
                (endpoint_name, replica_id),
            )
            conn.execute(
                "DELETE FROM replica_predict_paths WHERE endpoint_name = ? AND replica_id = ?",
                (endpoint_name, replica_id),
            )

    def recorded_replicas(self, endpoint_name: str, backend: str) -> list[RecordedReplica]:
        """Replicas of `endpoint_name` that `backend` recorded and did not forget."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT endpoint_name, replica_id, backend, handle, model_name, started_at "
                "FROM endpoint_replicas WHERE endpoint_name = ? AND backend = ? "
                "ORDER BY started_at",
                (endpoint_name, backend),
            ).fetchall()
        return [RecordedReplica(**dict(row)) for row in rows]


def policy_to_json(policy: ScalingPolicy | None) -> str | None:
    """The stored form of a policy (None when the endpoint has a fixed replica count)."""
    return None if policy is None else json.dumps(dataclasses.asdict(policy), sort_keys=True)


def policy_from_json(text: str | None) -> ScalingPolicy | None:
    """The inverse of `policy_to_json`; unknown keys (from a newer schema) are ignored."""
    if text is None:
        return None
    values: dict[str, Any] = json.loads(text)
    known = {f.name for f in dataclasses.fields(ScalingPolicy)}
    fields = {key: value for key, value in values.items() if key in known}
    fields["metric"] = ScalingMetric(
        fields.get("metric", ScalingMetric.CONCURRENT_REQUESTS_PER_REPLICA)
    )
    return ScalingPolicy(**fields)


def _endpoint_row(endpoint: Endpoint) -> tuple[Any, ...]:
    return (
        endpoint.name,
        endpoint.model_name,
        endpoint.previous_model_name,
        endpoint.status.value,
        endpoint.failure_reason,
        endpoint.address,
        endpoint.desired_replicas,
        policy_to_json(endpoint.scaling_policy),
        endpoint.creation_time,
        endpoint.last_modified_time,
    )


def _endpoint_from_row(row: sqlite3.Row) -> Endpoint:
    return Endpoint(
        name=row["name"],
        model_name=row["model_name"],
        previous_model_name=row["previous_model_name"],
        status=EndpointStatus(row["status"]),
        failure_reason=row["failure_reason"],
        address=row["address"],
        desired_replicas=row["desired_replicas"],
        scaling_policy=policy_from_json(row["scaling_policy_json"]),
        creation_time=row["creation_time"],
        last_modified_time=row["last_modified_time"],
    )
