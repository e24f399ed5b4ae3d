"""Queries of the tuning tables, on the control's database (`ControlStore`'s connection).

`tuning_jobs` holds each job's spec, status and the warm-start trials it was seeded with;
`tuning_trials` one row per launched trial (its training job, tuned values, how the tuner was
told it ended); `tuning_intermediate_values` every value of the objective metric a trial's
training job logged, numbered per attempt, so the study can be rebuilt after a restart exactly
as it was fed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from services.control.state import ControlStore
from services.control.training.store import spec_from_json, spec_to_json
from services.control.training.values import TrainingJobStatus
from services.control.tuning.config import EarlyStoppingType, ObjectiveType, TuningConfig
from services.control.tuning.space import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    ParameterRange,
    ScalingType,
    TuningStrategy,
)
from services.control.tuning.tuner import TrialState, WarmStartTrial
from services.control.tuning.values import (
    Trial,
    TuningJob,
    TuningJobSpec,
    TuningJobStatus,
    best_of,
    counters_of,
)
from services.runtime.errors import AlreadyExists

_JOB_COLUMNS = "name, spec_json, status, failure_reason, creation_time, end_time"
_TRIAL_QUERY = (
    "SELECT t.number, t.training_job_name, t.hyperparameters_json, t.state, t.objective_value, "
    "t.stopped_early, t.failure_reason AS trial_failure, j.status AS job_status, "
    "j.creation_time, j.training_start_time, j.training_end_time, "
    "j.failure_reason AS job_failure "
    "FROM tuning_trials t LEFT JOIN training_jobs j ON j.name = t.training_job_name "
)


@dataclass(frozen=True)
class IntermediateValue:
    """One logged value of a trial's objective metric; `step` counts from 1 per attempt."""

    id: int
    number: int
    attempt: int
    step: int
    value: float


class TuningStore:
    """Stored tuning jobs and trials. Thread-safe: each call is one `ControlStore` transaction."""

    def __init__(self, store: ControlStore) -> None:
        """Uses `store`'s connection and transactions."""
        self._store = store

    # ----------------------------------------------------------------- tuning jobs

    def insert_job(self, job: TuningJob, warm_start_trials: Sequence[WarmStartTrial] = ()) -> None:
        """Stores a new tuning job with the warm-start trials it is seeded with.

        Raises:
            AlreadyExists: a tuning job with this name exists.
        """
        warm = [asdict(trial) for trial in warm_start_trials]
        for entry in warm:
            entry["hyperparameters_encoded"] = dict(entry["hyperparameters_encoded"])
        with self._store.transaction() as conn:
            try:
                conn.execute(
                    f"INSERT INTO tuning_jobs ({_JOB_COLUMNS}, objective_metric_name, "
                    "warm_start_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.name,
                        tuning_spec_to_json(job.spec),
                        job.status.value,
                        job.failure_reason,
                        job.creation_time,
                        job.end_time,
                        job.spec.objective_metric_name,
                        json.dumps(warm),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"tuning job {job.name!r} already exists") from None

    def update_job_status(
        self,
        name: str,
        status: TuningJobStatus,
        *,
        failure_reason: str | None = None,
        end_time: float | None = None,
    ) -> None:
        """Sets a job's status (and, when given, its failure reason and end time)."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE tuning_jobs SET status = ?, "
                "failure_reason = COALESCE(?, failure_reason), "
                "end_time = COALESCE(?, end_time) WHERE name = ?",
                (status.value, failure_reason, end_time, name),
            )

    def get_job(self, name: str, *, with_trials: bool = True) -> TuningJob | None:
        """The job (with its trials unless told otherwise), or None."""
        with self._store.transaction() as conn:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM tuning_jobs WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            return _job_from_row(row, self._trials(conn, name), with_trials)

    def job_exists(self, name: str) -> bool:
        """True when a tuning job named `name` is stored."""
        with self._store.transaction() as conn:
            row = conn.execute("SELECT 1 FROM tuning_jobs WHERE name = ?", (name,)).fetchone()
        return row is not None

    def list_jobs(
        self,
        *,
        status: TuningJobStatus | None,
        name_prefix: str,
        before_id: int | None,
        limit: int,
    ) -> list[tuple[int, TuningJob]]:
        """Jobs newest first with their row ids (the paging cursor), without trials."""
        clauses = ["1 = 1"]
        params: list[object] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if name_prefix:
            clauses.append("substr(name, 1, ?) = ?")
            params += [len(name_prefix), name_prefix]
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        with self._store.transaction() as conn:
            rows = conn.execute(
                f"SELECT id, {_JOB_COLUMNS} FROM tuning_jobs WHERE {' AND '.join(clauses)} "
                "ORDER BY id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [
                (row["id"], _job_from_row(row, self._trials(conn, row["name"]), False))
                for row in rows
            ]

    def active_job_names(self) -> list[str]:
        """Names of the jobs not yet terminal (InProgress or Stopping), oldest first."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT name FROM tuning_jobs WHERE status IN (?, ?) ORDER BY id",
                (TuningJobStatus.IN_PROGRESS.value, TuningJobStatus.STOPPING.value),
            ).fetchall()
        return [row["name"] for row in rows]

    def warm_start_trials(self, name: str) -> list[WarmStartTrial]:
        """The warm-start trials the job was created with (the same ones on every rebuild)."""
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT warm_start_json FROM tuning_jobs WHERE name = ?", (name,)
            ).fetchone()
        entries = json.loads(row["warm_start_json"]) if row is not None else []
        return [
            WarmStartTrial(dict(entry["hyperparameters_encoded"]), float(entry["objective_value"]))
            for entry in entries
        ]

    # ----------------------------------------------------------------- trials

    def insert_trial(
        self,
        tuning_job_name: str,
        number: int,
        training_job_name: str,
        tuned_hyperparameters: Mapping[str, str],
    ) -> None:
        """Records a launched trial (InProgress)."""
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO tuning_trials (tuning_job_name, number, training_job_name, "
                "hyperparameters_json, state) VALUES (?, ?, ?, ?, ?)",
                (
                    tuning_job_name,
                    number,
                    training_job_name,
                    json.dumps(dict(tuned_hyperparameters)),
                    TrialState.IN_PROGRESS.value,
                ),
            )

    def end_trial(
        self,
        tuning_job_name: str,
        number: int,
        state: TrialState,
        objective_value: float | None,
        failure_reason: str = "",
    ) -> None:
        """Records how the tuner was told a trial ended."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE tuning_trials SET state = ?, objective_value = ?, failure_reason = ? "
                "WHERE tuning_job_name = ? AND number = ?",
                (state.value, objective_value, failure_reason, tuning_job_name, number),
            )

    def mark_stopped_early(self, tuning_job_name: str, number: int) -> None:
        """Records that early stopping asked the trial's training job to stop."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE tuning_trials SET stopped_early = 1 "
                "WHERE tuning_job_name = ? AND number = ?",
                (tuning_job_name, number),
            )

    def trials(self, tuning_job_name: str) -> tuple[Trial, ...]:
        """The job's trials in number order, with their training jobs' statuses and times."""
        with self._store.transaction() as conn:
            return self._trials(conn, tuning_job_name)

    def trial_of_training_job(self, training_job_name: str) -> tuple[str, int, str] | None:
        """(tuning job, trial number, objective metric) of a trial's training job, or None."""
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT t.tuning_job_name, t.number, j.objective_metric_name "
                "FROM tuning_trials t JOIN tuning_jobs j ON j.name = t.tuning_job_name "
                "WHERE t.training_job_name = ?",
                (training_job_name,),
            ).fetchone()
        if row is None:
            return None
        return row["tuning_job_name"], row["number"], row["objective_metric_name"]

    def final_metric(self, training_job_name: str, metric_name: str) -> float | None:
        """The last value of a metric the training job logged (its final metric), or None."""
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT value FROM training_job_metrics WHERE job_name = ? AND name = ?",
                (training_job_name, metric_name),
            ).fetchone()
        return None if row is None else float(row["value"])

    # ----------------------------------------------------------------- intermediate values

    def append_intermediate_values(
        self, tuning_job_name: str, number: int, attempt: int, values: Sequence[float]
    ) -> None:
        """Appends values of the objective metric, in log order, after the attempt's last step."""
        if not values:
            return
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(step), 0) FROM tuning_intermediate_values "
                "WHERE tuning_job_name = ? AND number = ? AND attempt = ?",
                (tuning_job_name, number, attempt),
            ).fetchone()
            first = int(row[0]) + 1
            conn.executemany(
                "INSERT INTO tuning_intermediate_values "
                "(tuning_job_name, number, attempt, step, value) VALUES (?, ?, ?, ?, ?)",
                [
                    (tuning_job_name, number, attempt, first + offset, value)
                    for offset, value in enumerate(values)
                ],
            )

    def intermediate_values(
        self, tuning_job_name: str, after_id: int = 0
    ) -> list[IntermediateValue]:
        """The job's intermediate values stored after row `after_id`, in arrival order."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT id, number, attempt, step, value FROM tuning_intermediate_values "
                "WHERE tuning_job_name = ? AND id > ? ORDER BY id",
                (tuning_job_name, after_id),
            ).fetchall()
        return [
            IntermediateValue(r["id"], r["number"], r["attempt"], r["step"], r["value"])
            for r in rows
        ]

    def _trials(self, conn: sqlite3.Connection, tuning_job_name: str) -> tuple[Trial, ...]:
        rows = conn.execute(
            _TRIAL_QUERY + "WHERE t.tuning_job_name = ? ORDER BY t.number", (tuning_job_name,)
        ).fetchall()
        return tuple(_trial_from_row(row) for row in rows)


def _trial_from_row(row: sqlite3.Row) -> Trial:
    # A trial's training job is inserted in the trial's transaction and never deleted; a
    # missing one would be a damaged database, shown as Failed rather than breaking describe.
    job_status = row["job_status"]
    return Trial(
        number=row["number"],
        training_job_name=row["training_job_name"],
        tuned_hyperparameters=json.loads(row["hyperparameters_json"]),
        state=TrialState(row["state"]),
        objective_value=row["objective_value"],
        stopped_early=bool(row["stopped_early"]),
        training_job_status=(
            TrainingJobStatus(job_status) if job_status else TrainingJobStatus.FAILED
        ),
        creation_time=row["creation_time"] or 0.0,
        training_start_time=row["training_start_time"],
        training_end_time=row["training_end_time"],
        failure_reason=row["job_failure"] or row["trial_failure"] or "",
    )


def _job_from_row(row: sqlite3.Row, trials: tuple[Trial, ...], with_trials: bool) -> TuningJob:
    spec = tuning_spec_from_json(row["spec_json"])
    return TuningJob(
        name=row["name"],
        spec=spec,
        status=TuningJobStatus(row["status"]),
        creation_time=row["creation_time"],
        failure_reason=row["failure_reason"],
        end_time=row["end_time"],
        counters=counters_of(trials),
        best_trial=best_of(trials, spec.config.objective_type == "Maximize"),
        trials=trials if with_trials else (),
    )


# ----------------------------------------------------------------- spec JSON


_CONFIG_ENUMS: dict[str, type[TuningStrategy | ObjectiveType | EarlyStoppingType]] = {
    "strategy": TuningStrategy,
    "objective_type": ObjectiveType,
    "early_stopping": EarlyStoppingType,
}


def tuning_spec_to_json(spec: TuningJobSpec) -> str:
    """The spec as JSON text (the stored form)."""
    values = {
        "template": json.loads(spec_to_json(spec.template)),
        "objective_metric_name": spec.objective_metric_name,
        "ranges": [_range_to_dict(parameter) for parameter in spec.ranges],
        "config": {
            key: (value.value if hasattr(value, "value") else value)
            for key, value in asdict(spec.config).items()
        },
        "warm_start_parent_names": list(spec.warm_start_parent_names),
        "warm_start_type": spec.warm_start_type,
    }
    return json.dumps(values, sort_keys=True)


def tuning_spec_from_json(text: str) -> TuningJobSpec:
    """The inverse of `tuning_spec_to_json`; unknown keys (from a newer schema) are ignored."""
    values: dict[str, Any] = json.loads(text)
    config_fields = set(TuningConfig.__dataclass_fields__)
    config = {k: v for k, v in values.get("config", {}).items() if k in config_fields}
    for key, kind in _CONFIG_ENUMS.items():
        if key in config:
            config[key] = kind(config[key])
    return TuningJobSpec(
        template=spec_from_json(json.dumps(values["template"])),
        objective_metric_name=values["objective_metric_name"],
        ranges=tuple(_range_from_dict(entry) for entry in values["ranges"]),
        config=TuningConfig(**config),
        warm_start_parent_names=tuple(values.get("warm_start_parent_names", ())),
        warm_start_type=values.get("warm_start_type", ""),
    )


def _range_to_dict(parameter: ParameterRange) -> dict[str, Any]:
    if isinstance(parameter, CategoricalRange):
        return {"kind": "categorical", "name": parameter.name, "values": list(parameter.values)}
    kind = "integer" if isinstance(parameter, IntegerRange) else "continuous"
    return {
        "kind": kind,
        "name": parameter.name,
        "min": parameter.min,
        "max": parameter.max,
        "scaling": str(parameter.scaling),
    }


def _range_from_dict(entry: Mapping[str, Any]) -> ParameterRange:
    kind = entry["kind"]
    if kind == "categorical":
        return CategoricalRange(entry["name"], tuple(entry["values"]))
    if kind == "integer":
        return IntegerRange(
            entry["name"], int(entry["min"]), int(entry["max"]), ScalingType(entry["scaling"])
        )
    return ContinuousRange(
        entry["name"], float(entry["min"]), float(entry["max"]), ScalingType(entry["scaling"])
    )
