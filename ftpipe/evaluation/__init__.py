"""The evaluation layer: base and tuned model scored on the same items, compared with paired statistics.

Public entry points: `evaluate_run(run_dir, ...)` scores and compares, `write_report(run_dir, report)`
writes report.json, report.md and the charts. Modules: `generation` (loading models, batched
greedy generation, log-likelihoods), `metrics` (per-item scores), `stats` (paired bootstrap,
McNemar), `sandbox` (running generated code), `scoring` (one model on one task), `cache`
(base-model scores), `compare` (paired comparisons, run versus run), `diagnostics` (loss curves,
fit flags), `evaluate` (the whole stage) and `report`.
"""

from ftpipe.evaluation.compare import compare_runs, compare_task, verdict
from ftpipe.evaluation.evaluate import build_report, evaluate_run, tuned_model_spec
from ftpipe.evaluation.report import rerender, summary_table, write_report
from ftpipe.evaluation.scoring import TaskScores

__all__ = ["evaluate_run", "write_report", "rerender", "summary_table", "build_report", "tuned_model_spec",
           "compare_runs", "compare_task", "verdict", "TaskScores"]
