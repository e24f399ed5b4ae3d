"""The control's database: one SQLite file (WAL, synchronous=FULL) with a versioned schema.

`Database` owns the connection. Every query runs in a transaction; callers that must change
several things atomically (a task and its job) wrap the calls in `transaction()`, which nests:
only the outermost block commits, and an exception escaping it rolls everything back. A change
is committed when the outermost block returns, before any RPC answers.

The schema is `migrations.MIGRATIONS`: migration N (1-based) is applied once, in its own
transaction, and recorded in `schema_version`. The tables' queries live with their resource
(`training.store`, `dispatch.store`, `hosting.model_store`, ...) and share this connection.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.control.db.migrations import MIGRATIONS


class Database:
    """SQLite-backed state of the control. Thread-safe: one connection behind one lock."""

    def __init__(self, path: Path) -> None:
        """Opens (creating if needed) the database at `path` and applies pending migrations."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so DDL is transactional too.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        """Closes the connection."""
        with self._lock:
            self._conn.close()

    # ----------------------------------------------------------------- transactions, schema

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Runs the block atomically; nested blocks join the outermost one.

        Yields:
            The connection, for the store's own queries.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
        for version, statements in enumerate(MIGRATIONS, start=1):
            with self.transaction() as conn:
                if conn.execute(
                    "SELECT 1 FROM schema_version WHERE version = ?", (version,)
                ).fetchone():
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )

    def schema_version(self) -> int:
        """The highest migration applied."""
        with self.transaction() as conn:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def pragma(self, name: str) -> Any:
        """The value of one PRAGMA (for checks such as journal_mode)."""
        with self.transaction() as conn:
            return conn.execute(f"PRAGMA {name}").fetchone()[0]
