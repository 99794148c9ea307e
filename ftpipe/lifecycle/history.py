"""Run history in an embedded SQLite database ($FTPIPE_HOME/history.sqlite).

Every write is one transaction, so a run killed mid-way leaves either its old row or its new one,
never half of one. Run folders (and each pipeline's promotion journal) stay the source of truth;
the database answers "what ran, how did it end, what was promoted" quickly. So a damaged or
locked database never fails a training: writes that cannot be made are logged as warnings, and
`ftpipe runs repair` rebuilds the database from the run folders.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from ftpipe.errors import CorruptStateError
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


CONNECT_TIMEOUT_S = 30.0  # how long a write waits for another writer before it warns


def database_path() -> Path:
    """Where the history lives: $FTPIPE_HISTORY_DB, else $FTPIPE_HOME/history.sqlite."""
    import os

    return Path(os.environ.get("FTPIPE_HISTORY_DB") or ftpipe_home() / "history.sqlite")


def connect() -> sqlite3.Connection:
    """Open (and create) the database; WAL so readers never block the writing run."""
    path = database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=CONNECT_TIMEOUT_S)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def _warn(action: str, error: Exception) -> None:
    from ftpipe import console

    console.log(f"warning: could not {action} in the history database {database_path()} "
                f"({type(error).__name__}: {error}); the run folders stay the truth: `ftpipe runs repair` rebuilds it")


def _unreadable(error: Exception) -> CorruptStateError:
    return CorruptStateError(f"history database {database_path()} cannot be read ({type(error).__name__}: {error})",
                             hint="`ftpipe runs repair` rebuilds it from the run folders (a locked one: retry later)")


def record_run(manifest, run_dir: Path, metrics: dict | None = None, gates: dict | None = None) -> None:
    """Insert or update a run's row in one transaction (a warning, not a failure, if the database is unusable)."""
    try:
        _record_run(manifest, run_dir, metrics, gates)
    except sqlite3.Error as e:
        _warn(f"record run {manifest.run_id}", e)


def _record_run(manifest, run_dir: Path, metrics: dict | None, gates: dict | None) -> None:
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
    """Log a promotion, manual promotion or rollback (a warning, not a failure, if the database is unusable)."""
    try:
        _record_promotion(pipeline, run_id, action, at)
    except sqlite3.Error as e:
        _warn(f"record the promotion of {run_id}", e)


def _record_promotion(pipeline: str, run_id: str, action: str, at: str) -> None:
    with closing(connect()) as conn, conn:
        conn.execute("UPDATE runs SET promoted = (run_id = ?) WHERE pipeline = ?", (run_id, pipeline))
        conn.execute("INSERT OR IGNORE INTO promotions (pipeline, run_id, action, at) VALUES (?, ?, ?, ?)",
                     (pipeline, run_id, action, at))


def promotion_history(pipeline: str) -> list[tuple[str, str, str]]:
    """(run_id, action, at) of every promotion of a pipeline, oldest first."""
    try:
        with closing(connect()) as conn:
            return conn.execute("SELECT run_id, action, at FROM promotions WHERE pipeline = ? ORDER BY id",
                                (pipeline,)).fetchall()
    except sqlite3.Error as e:
        raise _unreadable(e) from None


def runs(pipeline: str | None = None) -> list[dict]:
    """Rows of the runs table, newest first."""
    try:
        with closing(connect()) as conn:
            conn.row_factory = sqlite3.Row
            query = "SELECT * FROM runs" + (" WHERE pipeline = ?" if pipeline else "") + " ORDER BY started_at DESC"
            return [dict(r) for r in conn.execute(query, (pipeline,) if pipeline else ())]
    except sqlite3.Error as e:
        raise _unreadable(e) from None


def usable() -> str | None:
    """None when the database opens and passes SQLite's integrity check, else why not."""
    try:
        with closing(connect()) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return None if result == "ok" else f"integrity check: {result}"
    except sqlite3.Error as e:
        return f"{type(e).__name__}: {e}"


def rebuild(pipeline: str, runs: list[tuple[Path, object]], promotions: list[dict]) -> None:
    """Replace a pipeline's rows with what its run folders and promotion journal say.

    A database that cannot be opened at all is moved aside (`history.sqlite.corrupt-<time>`) first.
    """
    import time

    if usable() is not None:
        path = database_path()
        for suffix in ("", "-wal", "-shm"):
            damaged = Path(f"{path}{suffix}")
            if damaged.exists():
                damaged.rename(damaged.with_name(f"{damaged.name}.corrupt-{int(time.time())}"))
    with closing(connect()) as conn, conn:
        conn.execute("DELETE FROM runs WHERE pipeline = ?", (pipeline,))
        conn.execute("DELETE FROM promotions WHERE pipeline = ?", (pipeline,))
    for run_dir, manifest in runs:
        _record_run(manifest, run_dir, manifest.summary or None, None)
    for event in promotions:
        _record_promotion(pipeline, event.get("run") or "", f"{event['action']}: {event.get('detail', '')}".rstrip(": "),
                          event["at"])
