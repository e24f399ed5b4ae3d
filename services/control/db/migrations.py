"""The control database's schema history: `MIGRATIONS[N-1]` is migration N, applied once.

`ControlStore` applies each pending migration in its own transaction and records it in
`schema_version`. Append new migrations at the end; never edit one that may have been applied,
since databases in the field already carry it.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: training jobs with their status history, logs and final metrics; the task queue.
    (
        """CREATE TABLE training_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            spec_json TEXT NOT NULL,
            status TEXT NOT NULL,
            secondary_status TEXT NOT NULL,
            failure_reason TEXT NOT NULL DEFAULT '',
            creation_time REAL NOT NULL,
            training_start_time REAL,
            training_end_time REAL,
            model_artifact_uri TEXT NOT NULL DEFAULT '',
            output_artifact_uri TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0,
            runtime_versions_json TEXT NOT NULL DEFAULT '{}',
            tuning_job_name TEXT NOT NULL DEFAULT '',
            stop_requested INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX training_jobs_tuning ON training_jobs (tuning_job_name, id)",
        """CREATE TABLE training_job_transitions (
            job_name TEXT NOT NULL,
            position INTEGER NOT NULL,
            status TEXT NOT NULL,
            start_time REAL NOT NULL,
            end_time REAL,
            message TEXT NOT NULL,
            PRIMARY KEY (job_name, position)
        ) WITHOUT ROWID""",
        """CREATE TABLE training_job_logs (
            job_name TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            timestamp REAL NOT NULL,
            stream TEXT NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (job_name, sequence)
        ) WITHOUT ROWID""",
        """CREATE TABLE training_job_metrics (
            job_name TEXT NOT NULL,
            name TEXT NOT NULL,
            value REAL NOT NULL,
            timestamp REAL NOT NULL,
            PRIMARY KEY (job_name, name)
        ) WITHOUT ROWID""",
        """CREATE TABLE tasks (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            job_name TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            worker_id TEXT NOT NULL DEFAULT '',
            lease_expires REAL,
            not_before REAL NOT NULL DEFAULT 0,
            outcome TEXT
        )""",
        "CREATE INDEX tasks_by_state ON tasks (state, kind, seq)",
        "CREATE INDEX tasks_by_job ON tasks (job_name)",
    ),
    # 2: models and endpoints (real-time serving), endpoint events, and the replicas a replica
    # backend started, so that a restarted control can find and stop the ones it left behind.
    (
        """CREATE TABLE models (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            model_data_uri TEXT NOT NULL,
            entry_point TEXT NOT NULL,
            source_uri TEXT NOT NULL DEFAULT '',
            environment_json TEXT NOT NULL DEFAULT '{}',
            training_job_name TEXT NOT NULL DEFAULT '',
            creation_time REAL NOT NULL
        )""",
        """CREATE TABLE endpoints (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            model_name TEXT NOT NULL,
            previous_model_name TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            failure_reason TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            desired_replicas INTEGER NOT NULL,
            scaling_policy_json TEXT,
            creation_time REAL NOT NULL,
            last_modified_time REAL NOT NULL
        )""",
        "CREATE INDEX endpoints_by_model ON endpoints (model_name)",
        """CREATE TABLE endpoint_events (
            endpoint_name TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            timestamp REAL NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (endpoint_name, sequence)
        ) WITHOUT ROWID""",
        """CREATE TABLE endpoint_replicas (
            endpoint_name TEXT NOT NULL,
            replica_id TEXT NOT NULL,
            backend TEXT NOT NULL,
            handle TEXT NOT NULL,
            model_name TEXT NOT NULL,
            started_at REAL NOT NULL,
            PRIMARY KEY (endpoint_name, replica_id)
        ) WITHOUT ROWID""",
    ),
    # 3: transform jobs, their input files, their shards (one task each) and the bad records
    # reported in per-record error mode.
    (
        """CREATE TABLE transform_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            spec_json TEXT NOT NULL,
            model_json TEXT NOT NULL,
            status TEXT NOT NULL,
            failure_reason TEXT NOT NULL DEFAULT '',
            creation_time REAL NOT NULL,
            start_time REAL,
            end_time REAL
        )""",
        "CREATE INDEX transform_jobs_by_status ON transform_jobs (status)",
        """CREATE TABLE transform_files (
            job_name TEXT NOT NULL,
            position INTEGER NOT NULL,
            key TEXT NOT NULL,
            input_uri TEXT NOT NULL,
            size INTEGER NOT NULL,
            status TEXT NOT NULL,
            failure_reason TEXT NOT NULL DEFAULT '',
            output_uri TEXT NOT NULL DEFAULT '',
            errors_uri TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (job_name, position)
        ) WITHOUT ROWID""",
        "CREATE INDEX transform_files_by_status ON transform_files (status)",
        """CREATE TABLE transform_shards (
            job_name TEXT NOT NULL,
            file_position INTEGER NOT NULL,
            shard_index INTEGER NOT NULL,
            start_offset INTEGER NOT NULL,
            end_offset INTEGER NOT NULL,
            task_id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL,
            records_done INTEGER NOT NULL DEFAULT 0,
            bytes_done INTEGER NOT NULL DEFAULT 0,
            failure_reason TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (job_name, file_position, shard_index)
        ) WITHOUT ROWID""",
        """CREATE TABLE transform_record_errors (
            job_name TEXT NOT NULL,
            file_position INTEGER NOT NULL,
            shard_index INTEGER NOT NULL,
            line INTEGER NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (job_name, file_position, line)
        ) WITHOUT ROWID""",
    ),
    # 4: tuning jobs, their trials (each an ordinary training job) and every value of the
    # objective metric the trials logged, so the study can be rebuilt after a restart.
    (
        """CREATE TABLE tuning_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            spec_json TEXT NOT NULL,
            objective_metric_name TEXT NOT NULL,
            status TEXT NOT NULL,
            failure_reason TEXT NOT NULL DEFAULT '',
            creation_time REAL NOT NULL,
            end_time REAL,
            warm_start_json TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX tuning_jobs_by_status ON tuning_jobs (status)",
        """CREATE TABLE tuning_trials (
            tuning_job_name TEXT NOT NULL,
            number INTEGER NOT NULL,
            training_job_name TEXT NOT NULL UNIQUE,
            hyperparameters_json TEXT NOT NULL,
            state TEXT NOT NULL,
            objective_value REAL,
            stopped_early INTEGER NOT NULL DEFAULT 0,
            failure_reason TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (tuning_job_name, number)
        ) WITHOUT ROWID""",
        """CREATE TABLE tuning_intermediate_values (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tuning_job_name TEXT NOT NULL,
            number INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            step INTEGER NOT NULL,
            value REAL NOT NULL,
            UNIQUE (tuning_job_name, number, attempt, step)
        )""",
    ),
    # 5: how many log lines each task attempt has delivered, so a heartbeat re-sent after a
    # lost answer (the control died between commit and reply) does not store its lines twice.
    (
        """CREATE TABLE task_log_progress (
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            lines_received INTEGER NOT NULL,
            PRIMARY KEY (task_id, attempt)
        ) WITHOUT ROWID""",
    ),
    # 6: a cap on how many tasks of one job are leased at once (a transform job's instance
    # count); 0, as for every task queued before, means no cap.
    ("ALTER TABLE tasks ADD COLUMN max_leased INTEGER NOT NULL DEFAULT 0",),
    # 7: how many bad records each transform shard wrote to its staged errors object (the
    # worker uploads them beside its output and reports only the count); rows of
    # transform_record_errors remain for shards that older workers reported inline.
    ("ALTER TABLE transform_shards ADD COLUMN records_failed INTEGER NOT NULL DEFAULT 0",),
    # 8: the runtime (Python, scikit-learn, numpy, joblib) a model's training job ran with,
    # copied when the model is created, so replicas serving it can be compared against it;
    # '{}' (not known) for models created before.
    ("ALTER TABLE models ADD COLUMN runtime_versions_json TEXT NOT NULL DEFAULT '{}'",),
    # 9: a model deleted while endpoints serve it is kept, hidden, for their replicas (as a
    # SageMaker endpoint keeps serving a deleted model) until no endpoint uses it.
    ("ALTER TABLE models ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",),
    # 10: the artifact key of each training job's source bundle and the prefix its archives
    # go to, so writes to a bundle a job is bound to, or by others than workers to a job's
    # output, can be refused; jobs created before get them from their spec.
    (
        "ALTER TABLE training_jobs ADD COLUMN source_key TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE training_jobs ADD COLUMN output_prefix TEXT NOT NULL DEFAULT ''",
        """UPDATE training_jobs SET source_key = substr(json_extract(spec_json, '$.source_uri'), 9)
            WHERE json_extract(spec_json, '$.source_uri') LIKE 'store://%'""",
        """UPDATE training_jobs SET output_prefix =
            rtrim(substr(json_extract(spec_json, '$.output_uri'), 9), '/')
            || '/' || name || '/output'
            WHERE json_extract(spec_json, '$.output_uri') LIKE 'store://%'""",
        "CREATE INDEX training_jobs_by_source_key ON training_jobs (source_key)",
        "CREATE INDEX training_jobs_by_output_prefix ON training_jobs (output_prefix)",
    ),
    # 11: what answers each replica's predict calls (the verified fast path's runtime, the
    # model's scikit-learn predict or the user's handler), as the replica reported it with its
    # runtime, for DescribeEndpoint.
    (
        """CREATE TABLE replica_predict_paths (
            endpoint_name TEXT NOT NULL,
            replica_id TEXT NOT NULL,
            model_name TEXT NOT NULL,
            path TEXT NOT NULL,
            reason TEXT NOT NULL,
            refused INTEGER NOT NULL,
            max_rows INTEGER NOT NULL,
            PRIMARY KEY (endpoint_name, replica_id)
        ) WITHOUT ROWID""",
    ),
    # 12: the scikit-learn a model was asked for and the script runtime it is served on, kept
    # for its lifetime; the runtime a transform task needs, so only a batch worker on it takes
    # the task. '' for rows from before: the control's default runtime, any worker.
    (
        "ALTER TABLE models ADD COLUMN framework_version TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE models ADD COLUMN script_runtime TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE tasks ADD COLUMN script_runtime TEXT NOT NULL DEFAULT ''",
    ),
)
