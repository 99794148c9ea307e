"""The real model end to end (marked slow: `make test-slow`, about 10 minutes on 2 CPU cores).

The demo pipeline, trimmed: SmolLM2-135M-Instruct must learn both target tasks (the lower CI bound
of the gain above zero) and the report must show how the held-out probes moved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.lifecycle import run_pipeline

DEMO = Path(__file__).parent.parent / "pipelines" / "demo.yaml"


@pytest.mark.slow
def test_demo_learns_target_tasks_and_reports_forgetting(tmp_path, smollm2_dir):
    overrides = ["evaluation.max_items=40", "evaluation.few_shot=0", "tasks.0.max_train_rows=80", "tasks.1.max_train_rows=80"]
    result = run_pipeline(DEMO, overrides, tmp_path)
    report = json.loads((result.run_dir / "report.json").read_text())
    by_task = {t["task"]: t for t in report["tasks"]}
    for name in ("ticket_routing", "order_extraction"):
        assert by_task[name]["base"] < 0.2 and by_task[name]["ci_low"] > 0.1, by_task[name]
        assert by_task[name]["verdict"] == "learned"
    for name in ("capitals", "word_opposites", "everyday_mc"):
        assert by_task[name]["base"] > 0.4  # the probes are things the base model can do
        assert by_task[name]["forgetting"] is not None and by_task[name]["ci_low"] <= by_task[name]["item_delta"]
