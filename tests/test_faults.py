"""Kill anywhere, lose nothing: a real `ftpipe run` SIGKILLs itself at each fault point
(ftpipe.faults.POINTS), then runs again. After every case:

- the rerun finishes;
- a resumed training continues from its checkpoint (it runs fewer steps than a fresh run and its
  step count goes on from the checkpoint), never silently from scratch, and a checkpoint that was
  only partly written is not resumed from;
- every JSON record of every run folder parses;
- the promoted pointer names a complete succeeded run, or nothing;
- the history database agrees with the run folders.

The whole matrix is `make test-slow` (docs/reliability.md has the counts); tests/test_resume.py kills
real runs in the default one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ftpipe import faults
from ftpipe.lifecycle import history
from ftpipe.lifecycle.promotion import journal_events, promotion_stack
from ftpipe.lifecycle.runs import list_runs, load_manifest, promoted_run
from ftpipe.training import read_losses

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OVERRIDES = ["--set", "training.epochs=2", "--set", "training.checkpoints_per_epoch=1",
             "--set", "training.evaluate_during_training=false", "--set", "evaluation.max_items=8",
             "--set", "gates.max_forgetting=1.0"]


def ftpipe(*args: str, cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FTPIPE_FAULT", None)
    if fault:
        env["FTPIPE_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "ftpipe", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def promoted_job(tiny_llama_dir, tmp_path_factory) -> Path:
    """A job folder whose pipeline already has a promoted run: what a kill must never disturb."""
    job = tmp_path_factory.mktemp("faults") / "job"
    shutil.copytree(FIXTURES, job)
    with pytest.MonkeyPatch.context() as mp:  # not the user's history; each test rebuilds its own
        mp.setenv("FTPIPE_HISTORY_DB", str(job / "history.sqlite"))
        first = ftpipe("run", "specs/tiny_lora.yaml", "--runs-dir", "runs", *OVERRIDES, cwd=job)
    assert first.returncode == 0, first.stderr[-2000:]
    return job


def copy_job(job: Path, tmp_path: Path) -> Path:
    """A copy of the promoted job, its history rebuilt from its folders into this test's database."""
    copy = tmp_path / "job"
    shutil.copytree(job, copy, symlinks=True)
    repaired = ftpipe("runs", "repair", "tiny-lora", "--runs-dir", "runs", cwd=copy)
    assert repaired.returncode == 0, repaired.stderr
    return copy


def check_invariants(runs: Path) -> None:
    """What must hold after any kill and rerun."""
    for path in runs.glob("*/*/*.json"):
        json.loads(path.read_text())  # every record of every run folder parses
    promoted = promoted_run("tiny-lora", runs)
    if promoted is not None:
        manifest = load_manifest(promoted)
        assert manifest.status == "succeeded" and (promoted / "adapter" / "adapter_model.safetensors").is_file()
        assert promotion_stack(runs / "tiny-lora")[-1] == promoted.name
    rows = {r["run_id"]: r["status"] for r in history.runs("tiny-lora")}
    for run_dir, manifest in list_runs(runs, "tiny-lora"):
        assert rows.get(run_dir.name) == manifest.status, (run_dir.name, rows.get(run_dir.name), manifest.status)


@pytest.mark.slow  # 1-2 minutes a case; tests/test_resume.py kills real runs in the default run
@pytest.mark.parametrize("point", faults.POINTS)
def test_kill_at_each_point_then_rerun(point, promoted_job, tmp_path):
    job = copy_job(promoted_job, tmp_path)
    before = promoted_run("tiny-lora", job / "runs")
    data = job / "data" / "colors.jsonl"  # new data: a new run, not "unchanged"
    data.write_text(data.read_text() + json.dumps({"question": "What color is a ripe plum?", "color": "purple"}) + "\n")

    killed = ftpipe("run", "specs/tiny_lora.yaml", "--runs-dir", "runs", *OVERRIDES, cwd=job, fault=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    victim = max(list_runs(job / "runs", "tiny-lora"), key=lambda x: x[1].started_at)[0]
    pointer_after_kill = promoted_run("tiny-lora", job / "runs")
    assert pointer_after_kill in (before, victim)  # the old model, or (a kill mid-promotion) the complete new one
    if pointer_after_kill == before:
        assert load_manifest(before).status == "succeeded"

    rerun = ftpipe("run", "specs/tiny_lora.yaml", "--runs-dir", "runs", *OVERRIDES, cwd=job)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_invariants(job / "runs")
    victim_manifest = load_manifest(victim)

    if point == "train:step":  # killed at epoch 2's first step, after epoch 1's checkpoint: resumed, not restarted
        assert "resuming its checkpoint" in rerun.stderr and victim_manifest.attempts == 2
        first_attempt, second_attempt = _attempts([row["step"] for row in read_losses(victim)])
        per_epoch = first_attempt[-1] - 1
        assert second_attempt and second_attempt[0] == per_epoch + 1  # goes on from the checkpoint, not from step 1
        assert len(second_attempt) < 2 * per_epoch  # fewer steps than a fresh run of both epochs
    elif point == "train:checkpoint":  # a checkpoint not recorded complete is never resumed from
        assert "its last checkpoint is incomplete" in rerun.stderr
        assert victim_manifest.status == "failed" and victim_manifest.error.startswith("abandoned")
    elif point in ("train:adapter", "prepare", "compile"):
        assert victim_manifest.status == "succeeded" and victim_manifest.attempts == 2
        assert not list(victim.glob(".adapter.tmp"))
    elif point in ("evaluate", "report"):  # training was done: the rerun keeps its model
        assert "already done in an earlier attempt" in rerun.stderr
        assert victim_manifest.status == "succeeded" and victim_manifest.attempts == 2
    elif point == "promote":  # journal written, pointer not moved: the rerun's first act repairs the pointer
        assert "repairing the promoted pointer" in rerun.stderr
    assert promoted_run("tiny-lora", job / "runs") is not None


def _attempts(steps: list[int]) -> tuple[list[int], list[int]]:
    """Split the logged steps where the count starts again (the resumed attempt)."""
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            return steps[:i], steps[i:]
    return steps, []


@pytest.mark.slow  # 2-3 minutes; test_promotion.py races the lock and journal in the default run
def test_promote_and_rollback_racing_a_finishing_run_end_consistent(promoted_job, tmp_path):
    """Operators promote and roll back by hand while a scheduled run finishes and promotes itself."""
    job = copy_job(promoted_job, tmp_path)
    runs = job / "runs"
    first = promoted_run("tiny-lora", runs)
    data = job / "data" / "colors.jsonl"
    data.write_text(data.read_text() + json.dumps({"question": "What color is wet sand?", "color": "brown"}) + "\n")
    moves: list[int] = []
    shows: list[int] = []
    stop = threading.Event()

    def operator():
        while not stop.is_set():
            moves.append(ftpipe("promote", first.name, "--runs-dir", "runs", cwd=job).returncode)
            moves.append(ftpipe("rollback", "tiny-lora", "--runs-dir", "runs", cwd=job).returncode)
            shows.append(ftpipe("runs", "show", first.name, "--runs-dir", "runs", cwd=job).returncode)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FTPIPE_FAULT", None)
    run = subprocess.Popen([sys.executable, "-m", "ftpipe", "run", "specs/tiny_lora.yaml", "--runs-dir", "runs", *OVERRIDES],
                           cwd=job, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while len(list_runs(runs, "tiny-lora")) < 2:  # the run holds the lock: operators race it from here
        assert run.poll() is None, run.communicate()[1][-2000:]
        time.sleep(0.2)
    racers = [threading.Thread(target=operator, daemon=True) for _ in range(2)]
    for t in racers:
        t.start()
    try:
        _, err = run.communicate(timeout=900)
        time.sleep(20)  # and a while after it finished and promoted itself
    finally:
        stop.set()
        for t in racers:
            t.join(timeout=300)
    assert run.returncode == 0, err[-2000:]
    assert set(moves) <= {0, 2, 4} and 0 in moves  # done, "nothing earlier to roll back to", or "locked"
    assert set(shows) == {0}  # reading never fails, lock or no lock
    check_invariants(runs)
    events = journal_events(runs / "tiny-lora")
    newest = max(list_runs(runs, "tiny-lora"), key=lambda x: x[1].started_at)[0]
    assert any(e["action"] == "promote" and e["run"] == newest.name for e in events)  # the run promoted itself
    promotions = history.promotion_history("tiny-lora")
    assert len(promotions) == len(events)  # every move is in the history, once
    assert promoted_run("tiny-lora", runs).name == events[-1]["stack"][-1]
