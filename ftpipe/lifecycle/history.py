"""Run history in an embedded SQLite database ($FTPIPE_HOME/history.sqlite).

Every write is one transaction, so a run killed mid-way leaves either its old row or its new one,
never half of one. Run folders stay the source of truth for artifacts; the database answers
"what ran, how did it end, what is promoted" quickly and survives cleaning old run folders.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from ftpipe.paths import ftpipe_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, status TEXT NOT NULL, run_dir TEXT NOT NULL,
    spec_hash TEXT, data_fingerprint TEXT, started_at TEXT, finished_at TEXT,
    metrics TEXT, gates TEXT, promoted INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, run_id TEXT NOT NULL,
    action TEXT NOT NULL, at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS promotion_events ON promotions (pipeline, run_id, action, at);
"""


def database_path() -> Path:
    """Where the history lives: $FTPIPE_HISTORY_DB, else $FTPIPE_HOME/history.sqlite."""
    import os

    return Path(os.environ.get("FTPIPE_HISTORY_DB") or ftpipe_home() / "history.sqlite")


def connect() -> sqlite3.Connection:
    """Open (and create) the database; WAL so readers never block the writing run."""
    path = database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def record_run(manifest, run_dir: Path, metrics: dict | None = None, gates: dict | None = None) -> None:
    """Insert or update a run's row in one transaction."""
    with closing(connect()) as conn, conn:
        conn.execute(
            "INSERT INTO runs (run_id, pipeline, status, run_dir, spec_hash, data_fingerprint, started_at, finished_at,"
            " metrics, gates) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET"
            " status=excluded.status, data_fingerprint=excluded.data_fingerprint, finished_at=excluded.finished_at,"
            " metrics=excluded.metrics, gates=excluded.gates",
            (manifest.run_id, manifest.pipeline, manifest.status, str(run_dir.resolve()), manifest.spec_hash,
             manifest.data_fingerprint, manifest.started_at, manifest.finished_at,
             json.dumps(metrics) if metrics is not None else None, json.dumps(gates) if gates is not None else None))


def record_promotion(pipeline: str, run_id: str, action: str, at: str) -> None:
    """Log a promotion, manual promotion or rollback."""
    with closing(connect()) as conn, conn:
        conn.execute("UPDATE runs SET promoted = (run_id = ?) WHERE pipeline = ?", (run_id, pipeline))
        conn.execute("INSERT OR IGNORE INTO promotions (pipeline, run_id, action, at) VALUES (?, ?, ?, ?)",
                     (pipeline, run_id, action, at))


def promotion_history(pipeline: str) -> list[tuple[str, str, str]]:
    """(run_id, action, at) of every promotion of a pipeline, oldest first."""
    with closing(connect()) as conn:
        return conn.execute("SELECT run_id, action, at FROM promotions WHERE pipeline = ? ORDER BY id", (pipeline,)).fetchall()


def runs(pipeline: str | None = None) -> list[dict]:
    """Rows of the runs table, newest first."""
    with closing(connect()) as conn:
        conn.row_factory = sqlite3.Row
        query = "SELECT * FROM runs" + (" WHERE pipeline = ?" if pipeline else "") + " ORDER BY started_at DESC"
        return [dict(r) for r in conn.execute(query, (pipeline,) if pipeline else ())]
