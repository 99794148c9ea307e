"""`ftpipe runs repair`: bring a pipeline's state back to what its run folders say.

A damaged manifest is kept beside the run as `manifest.json.corrupt` and replaced by one that marks
the run failed (its artifacts stay); the promoted pointer is replayed from the journal and walked
back past runs that are gone; the history database is rebuilt from the run folders and the
journal (moved aside first when SQLite cannot open it). Each repair holds the pipeline's lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from ftpipe.lifecycle import history
from ftpipe.lifecycle.promotion import journal_events, locked
from ftpipe.lifecycle.runs import MANIFEST, Manifest, corrupt_runs, list_runs, now_iso, pipeline_dir, save_manifest
from ftpipe.paths import runs_root


def repair(pipeline: str | None = None, root: Path | None = None) -> list[str]:
    """Repair one pipeline (or every pipeline under the runs root); one line per repair made."""
    root = root or runs_root()
    names = [pipeline] if pipeline else sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    done: list[str] = []
    for name in names:
        pdir = pipeline_dir(name, root)
        if not pdir.is_dir():
            continue
        with locked(pdir, "repair") as lock:
            done += lock.repairs  # the promoted pointer, reconciled on taking the lock
            done += _repair_locked(pdir, root)
    return done


def _repair_locked(pdir: Path, root: Path) -> list[str]:
    done = []
    for run_dir in corrupt_runs(root, pdir.name):
        damaged = run_dir / MANIFEST
        os.replace(damaged, run_dir / f"{MANIFEST}.corrupt")
        run_id = run_dir.name
        save_manifest(run_dir, Manifest(run_id=run_id, pipeline=pdir.name, status="failed", spec_path="unknown",
                                        spec_hash=run_id.rsplit("-", 1)[-1], finished_at=now_iso(),
                                        error="manifest was unreadable; marked failed by `ftpipe runs repair` "
                                              f"(the damaged file is {MANIFEST}.corrupt)"))
        done.append(f"{pdir.name}/{run_id}: unreadable manifest kept as {MANIFEST}.corrupt; run marked failed")
    problem = history.usable()
    history.rebuild(pdir.name, list_runs(root, pdir.name), journal_events(pdir))
    done.append(f"{pdir.name}: history rebuilt from {len(list_runs(root, pdir.name))} run folders"
                + (f" (the database was unusable: {problem}; moved aside)" if problem else ""))
    return done
