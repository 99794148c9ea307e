"""Retraining you can stake a promotion on, played out with real `ftpipe` processes on the tiny model.

Four cycles of a gated pipeline on growing data (a new column in one, reordered columns in
another, a row leaked from a held-out probe in a third): earlier test items never enter training,
the pointer only ever names a gate-passing succeeded run, rollbacks walk back the promotions one by
one, and a `runs list` loop running beside it all never makes a run exit 4. Plus: a spec without
gates is never promoted, a --no-eval run is never promoted or "unchanged", and `ftpipe eval`
judges the gates again.
"""

from __future__ import annotations

import pytest

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

from ftpipe.errors import EXIT_BAD_INPUT, EXIT_LOCKED
from ftpipe.lifecycle.runs import list_runs, load_manifest, promoted_run

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["billing", "shipping", "technical", "account", "refund"]

SPEC = """\
name: cycle
base_model: tiny-llama
tasks:
  - name: tickets
    source: tickets.jsonl
    kind: classification
    labels: [billing, shipping, technical, account, refund]
    prompt: "Route: {{ message }}"
    target: "{{ label }}"
training:
  max_steps: 2
  batch_size: 8
  evaluate_during_training: false
generation:
  max_new_tokens: 3
evaluation:
  max_items: 24
  bootstrap_resamples: 200
  held_out:
    - {name: say_word, source: probe.jsonl, kind: contains, prompt: "{{ message }}", answer: answers}
"""
GATES = """\
gates:
  max_forgetting: 1.0
  no_regression_vs_promoted: true
"""


def ftpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftpipe", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def tickets(start: int, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = ["card", "parcel", "router", "password", "invoice", "courier", "laptop", "login", "payment"]
    return [{"message": f"ticket {start + i}: my {rng.choice(words)} {rng.choice(words)} needs attention",
             "label": rng.choice(LABELS)} for i in range(n)]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def ids(run_dir: Path, name: str, task: str = "tickets") -> set[str]:
    data = json.loads((run_dir / name).read_text())
    items = data.get(task, [])
    return {i["item_id"] if isinstance(i, dict) else i for i in items}


def test_four_retraining_cycles_keep_test_sets_stable_and_promote_only_on_evidence(tmp_path, tiny_llama_dir):
    work, runs = tmp_path / "job", tmp_path / "runs"
    work.mkdir()
    (work / "spec.yaml").write_text(SPEC + GATES)
    probe = [{"message": f"Say the word {w}.", "answers": [w]} for w in ("apple", "river", "stone", "cloud", "tiger",
                                                                          "piano", "maple", "ocean", "candle", "bridge")]
    write(work / "probe.jsonl", probe)
    rows = tickets(0, 120, seed=1)
    run_args = ["run", "spec.yaml", "--runs-dir", str(runs)]

    listing_codes: list[int] = []
    stop = threading.Event()

    def list_forever():  # an operator watching: must never disturb a run
        while not stop.is_set():
            listing_codes.append(ftpipe("runs", "list", "--runs-dir", str(runs), cwd=work).returncode)

    watcher = threading.Thread(target=list_forever, daemon=True)
    watcher.start()
    try:
        outcomes = []
        # cycle 1: the first model
        write(work / "tickets.jsonl", rows)
        outcomes.append(ftpipe(*run_args, cwd=work))
        # cycle 2: 40 new rows that carry a new column
        rows = [dict(r) for r in rows] + [dict(r, channel="chat") for r in tickets(1000, 40, seed=2)]
        write(work / "tickets.jsonl", rows)
        outcomes.append(ftpipe(*run_args, cwd=work))
        # cycle 3: columns reordered, 20 new rows, and rows copied from the held-out probe (leaks; one
        # of them lands in a split that trains unless all six hash into the test split, p = 0.2 ** 6)
        rows = [{k: r[k] for k in reversed(list(r))} for r in rows] + tickets(2000, 20, seed=3)
        write(work / "tickets.jsonl", rows + [{"message": p["message"], "label": "account"} for p in probe[:6]])
        outcomes.append(ftpipe(*run_args, cwd=work))
        # cycle 4: the leak removed, 30 more rows
        rows = rows + tickets(3000, 30, seed=4)
        write(work / "tickets.jsonl", rows)
        outcomes.append(ftpipe(*run_args, cwd=work))
    finally:
        stop.set()
        watcher.join(timeout=120)

    codes = [o.returncode for o in outcomes]
    assert codes == [0, 0, EXIT_BAD_INPUT, 0], [o.stderr[-800:] for o in outcomes]
    assert "leakage: evaluated items also in training (say_word: " in outcomes[2].stderr
    assert listing_codes and EXIT_LOCKED not in listing_codes and set(listing_codes) == {0}

    finished = sorted((m.started_at, d) for d, m in list_runs(runs) if m.status == "succeeded")
    assert len(finished) == 3
    run_dirs = [d for _, d in finished]
    # earlier test items never enter training, in any later cycle
    for i, earlier in enumerate(run_dirs):
        for later in run_dirs[i + 1:]:
            assert not ids(earlier, "eval_items.json") & ids(later, "trained_ids.json")
    # every run passed its gates and was promoted in turn; the pointer names the last one
    for run_dir in run_dirs:
        report = json.loads((run_dir / "report.json").read_text())
        assert report["gates"]["passed"] and report["gates"]["configured"]
        assert load_manifest(run_dir).status == "succeeded"
    assert promoted_run("cycle", runs) == run_dirs[2]
    later_report = json.loads((run_dirs[1] / "report.json").read_text())
    assert later_report["comparability"]["overlap"] == 0

    # two rollbacks walk back two promotions; a third has nowhere to go
    assert ftpipe("rollback", "cycle", "--runs-dir", str(runs), cwd=work).returncode == 0
    assert promoted_run("cycle", runs) == run_dirs[1]
    assert ftpipe("rollback", "cycle", "--runs-dir", str(runs), cwd=work).returncode == 0
    assert promoted_run("cycle", runs) == run_dirs[0]
    last = ftpipe("rollback", "cycle", "--runs-dir", str(runs), cwd=work)
    assert last.returncode == EXIT_BAD_INPUT and "no earlier promoted run to roll back to" in last.stderr
    assert promoted_run("cycle", runs) == run_dirs[0]


@pytest.mark.slow  # test_gates.py pins the no-gates rule in the default run
def test_no_gates_no_promotion_and_no_eval_runs_are_never_promoted_or_unchanged(tmp_path, tiny_llama_dir):
    work, runs = tmp_path / "job", tmp_path / "runs"
    work.mkdir()
    (work / "spec.yaml").write_text(SPEC)
    write(work / "probe.jsonl", [{"message": f"Say the word {w}.", "answers": [w]} for w in ("apple", "river", "stone")])
    write(work / "tickets.jsonl", tickets(0, 60, seed=5))

    trained = ftpipe("run", "spec.yaml", "--runs-dir", str(runs), "--no-eval", cwd=work)
    assert trained.returncode == 0, trained.stderr[-800:]
    [(run_dir, manifest)] = list_runs(runs)
    assert manifest.status == "trained" and promoted_run("cycle", runs) is None
    refused = ftpipe("promote", run_dir.name, "--runs-dir", str(runs), cwd=work)
    assert refused.returncode == EXIT_BAD_INPUT and "status trained" in refused.stderr

    again = ftpipe("run", "spec.yaml", "--runs-dir", str(runs), "--if-changed", cwd=work)
    assert again.returncode == 0 and "nothing to do" not in again.stdout  # a trained run is not a verdict
    assert "not promoted: no gates" in again.stderr
    assert promoted_run("cycle", runs) is None
    newest = list_runs(runs)[0][0]
    report = json.loads((newest / "report.json").read_text())
    assert report["gates"]["configured"] is False and "not promoted: no gates" in (newest / "report.md").read_text()

    # `ftpipe eval` turns the trained run into a judged, succeeded one (and promotes nothing)
    judged = ftpipe("eval", run_dir.name, "--runs-dir", str(runs), cwd=work)
    assert judged.returncode == 0, judged.stderr[-800:]
    manifest = load_manifest(run_dir)
    assert manifest.status == "succeeded" and "gates_passed" in manifest.summary
    assert json.loads((run_dir / "report.json").read_text())["gates"]["results"] == []  # its own spec has no gates
    assert promoted_run("cycle", runs) is None
