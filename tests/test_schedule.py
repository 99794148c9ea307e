"""Scheduled retraining played out with the tiny model: promote, skip unchanged, refuse a model that
breaks a forgetting gate, promote a good one, roll back; two schedules at once; history kept."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ftpipe.lifecycle import history
from ftpipe.errors import EXIT_GATE_FAILED, EXIT_LOCKED
from ftpipe.lifecycle.runs import list_runs, promoted_run

FIXTURE = Path(__file__).parent / "fixtures" / "schedule"
ROOT = Path(__file__).parent.parent


def ftpipe(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ftpipe", *args], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(*args: str) -> tuple[int, str]:
    proc = ftpipe(*args)
    out, _ = proc.communicate(timeout=900)
    return proc.returncode, out


@pytest.mark.slow  # 2 minutes; test_retraining.py plays four gated cycles in the default run
def test_schedule_promotes_skips_refuses_and_rolls_back(tmp_path, tiny_llama_dir, isolated_history):
    work, runs = tmp_path / "job", tmp_path / "runs"
    shutil.copytree(FIXTURE, work)
    spec, data = work / "pipeline.yaml", work / "data.jsonl"
    good = (FIXTURE / "good.jsonl").read_text().splitlines(keepends=True)
    data.write_text("".join(good[:60]))
    cmd = ["run", str(spec), "--runs-dir", str(runs), "--if-changed"]

    code, out = run(*cmd)  # run 1: trains, passes the gate, is promoted
    assert code == 0, out
    [(run1, _)] = list_runs(runs)
    assert promoted_run("scheduled", runs) == run1 and "promoted" in out

    code, out = run(*cmd)  # run 2: nothing changed
    assert code == 0 and "nothing to do: unchanged since run " + run1.name in out
    assert len(list_runs(runs)) == 1

    data.write_text((FIXTURE / "bad.jsonl").read_text())  # run 3: gibberish raises held-out perplexity
    code, out = run(*cmd)
    assert code == EXIT_GATE_FAILED, out
    assert "FAIL max_forgetting[english_text]" in out and "nothing promoted" in out
    assert promoted_run("scheduled", runs) == run1
    assert (runs / "scheduled" / "gate_failures.log").read_text() == "scheduled max_forgetting[english_text]\n"  # hook ran

    data.write_text("".join(good))  # run 4: more good data, passes, is promoted
    code, out = run(*cmd)
    assert code == 0, out
    run4 = list_runs(runs)[0][0]
    assert promoted_run("scheduled", runs) == run4 != run1

    code, out = run("rollback", "scheduled", "--runs-dir", str(runs))
    assert code == 0 and promoted_run("scheduled", runs) == run1

    data.write_text("".join(good[:40]))  # two schedules fire at once: one runs, one is locked out
    first, second = ftpipe(*cmd), ftpipe(*cmd)
    outs = [p.communicate(timeout=900)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes[1] == EXIT_LOCKED and codes[0] in (0, EXIT_GATE_FAILED), outs
    assert any("pipeline is locked by a running job" in o for o in outs)

    rows = history.runs("scheduled")
    assert [r["status"] for r in rows].count("succeeded") == 4  # runs 1, 3, 4 and the concurrent one
    actions = [a for _, a, _ in history.promotion_history("scheduled")]
    assert [a.split(":")[0] for a in actions][:3] == ["promote", "promote", "rollback"] and "from " + run4.name in actions[2]
    with sqlite3.connect(isolated_history) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
