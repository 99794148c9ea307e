"""The lifecycle layer: `ftpipe run` from spec to promotion, and everything done to runs afterwards.

Public entry point: `run_pipeline(spec_path, ...)`. Modules: `pipeline` (the orchestration, one
call per stage), `runs` (run folders, manifest, lock, promoted pointer), `gates`, `promotion`
(promote and roll back by hand), `history` (SQLite record of runs and promotions), `rerun`
(`ftpipe eval`), `export` and `join` (multi-machine runs), `external` (`ftpipe evaluate --model`),
`sweep` (`ftpipe sweep`) and `replay` (self-generated replay rows).
"""

from ftpipe.lifecycle.export import export_run
from ftpipe.lifecycle.pipeline import RunResult, run_pipeline
from ftpipe.lifecycle.promotion import promote, rollback
from ftpipe.lifecycle.rerun import load_run_spec, reevaluate
from ftpipe.lifecycle.runs import Manifest, display_status, find_run, list_runs, load_manifest, promoted_run

__all__ = ["run_pipeline", "RunResult", "reevaluate", "load_run_spec", "export_run", "promote", "rollback",
           "Manifest", "find_run", "list_runs", "load_manifest", "promoted_run", "display_status"]
