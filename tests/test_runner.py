"""End to end on the tiny model: LoRA, QLoRA (CPU path), full fine-tuning and multitask; a run killed
with SIGKILL resumes and finishes; a second run of a locked pipeline exits with the lock code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftpipe.errors import EXIT_LOCKED, LockedError
from ftpipe.lifecycle.runs import PipelineLock, display_status, list_runs, load_manifest
from ftpipe.lifecycle import run_pipeline

SPECS = Path(__file__).parent / "fixtures" / "specs"
TINY = SPECS / "tiny_lora.yaml"
ROOT = Path(__file__).parent.parent


def check_complete_run(run_dir: Path, adapter: bool = True) -> dict:
    manifest = load_manifest(run_dir)
    assert manifest.status == "succeeded" and manifest.finished_at
    for name in ("spec.yaml", "ludwig_config.yaml", "ludwig_config.resolved.yaml", "data_summary.json",
                 "training_statistics.json", "metrics.json", "report.json", "report.md", "learning_forgetting.png"):
        assert (run_dir / name).exists(), name
    assert (run_dir / ("adapter/adapter_model.safetensors" if adapter else "weights/model.safetensors")).exists()
    assert set(manifest.timings) >= {"prepare data", "compile", "train", "evaluate"}
    assert manifest.versions["ludwig"] == "0.17.10" and manifest.data_fingerprint and manifest.config_hash
    report = json.loads((run_dir / "report.json").read_text())
    for task in report["tasks"]:
        assert task["ci_low"] <= task["item_delta"] <= task["ci_high"]
        assert (run_dir / "predictions" / f"{task['task']}.jsonl").exists()
    return report


@pytest.mark.parametrize("overrides, adapter", [
    ([], True),
    (["adapter={type: qlora, bits: 4, r: 4}"], True),
    (["adapter={type: full}", "training.learning_rate=0.0001"], False),
], ids=["lora", "qlora-cpu", "full"])
def test_end_to_end_tiny(tmp_path, tiny_llama_dir, overrides, adapter):
    result = run_pipeline(TINY, overrides + ["training.max_steps=6"], tmp_path)
    report = check_complete_run(result.run_dir, adapter)
    assert {t["task"] for t in report["tasks"]} == {"colors", "category_mc", "say_word"}
    assert (result.run_dir / "report.md").read_text().startswith("# ftpipe report: tiny-lora")
    if any("qlora" in o for o in overrides):
        # forgetting is measured against the base quantized as in training; the cost of 4-bit is shown apart
        assert report["quantized_base"] and set(report["model_fingerprints"]) == {"base", "base_full_precision", "tuned"}
        for t in report["tasks"]:
            assert t["quantization_cost"] == pytest.approx(t["base"] - t["base_full_precision"])
        assert "base (full precision)" in (result.run_dir / "report.md").read_text()
    else:
        assert not report["quantized_base"]


def test_multitask_end_to_end(tmp_path, tiny_llama_dir):
    result = run_pipeline(SPECS / "tiny_multitask.yaml", ["training.max_steps=4"], tmp_path)
    report = check_complete_run(result.run_dir)
    assert set(report["mixture"]) == {"colors", "count_words"}
    assert [t["role"] for t in report["tasks"]] == ["target", "target", "held_out"]


def test_domain_adaptation_end_to_end(tmp_path, tiny_llama_dir):
    spec = ROOT / "pipelines" / "domain_adaptation.yaml"
    result = run_pipeline(spec, ["base_model=tiny-llama", "training.max_steps=3", "evaluation.max_items=8"], tmp_path)
    report = check_complete_run(result.run_dir)
    by_task = {t["task"]: t for t in report["tasks"]}
    assert by_task["harbor_handbook"]["metric"] == "perplexity" and by_task["harbor_handbook"]["role"] == "target"
    assert by_task["harbor_handbook_heldout"]["forgetting"] is not None
    rows = json.loads((result.run_dir / "data_summary.json").read_text())
    assert rows["leakage"]["action"] == "drop"


def _ftpipe(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ftpipe", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow  # the fault matrix's train:step case (tests/test_faults.py) checks the same in the default run
def test_sigkill_mid_training_then_rerun_resumes_and_finishes(tmp_path, tiny_llama_dir, isolated_history):
    """Kill a run after its first Ludwig checkpoint; the rerun resumes that run folder and succeeds."""
    args = ["run", str(TINY), "--runs-dir", str(tmp_path), "--no-eval",
            "--set", "training.epochs=6", "--set", "training.checkpoints_per_epoch=2"]
    proc = _ftpipe(*args, start_new_session=True)
    checkpoint = lambda: list(tmp_path.glob("tiny-lora/*/training/_ludwig/experiment_run/model/ftpipe_checkpoint.json"))
    assert _wait_for(checkpoint, 300), proc.communicate()[0] if proc.poll() is not None else "no checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    [(run_dir, manifest)] = list_runs(tmp_path)
    assert manifest.status == "running" and display_status(run_dir, manifest) == "interrupted"
    assert not (run_dir / "report.json").exists()
    import sqlite3

    from ftpipe.lifecycle import history

    with sqlite3.connect(isolated_history) as conn:  # the history survives the kill, intact
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [(r["run_id"], r["status"]) for r in history.runs("tiny-lora")] == [(run_dir.name, "running")]

    rerun = _ftpipe(*args, "--set", "training.max_steps=1")  # a different spec hash: starts a new run
    rerun.communicate(timeout=600)
    assert len(list_runs(tmp_path)) == 2  # the killed run was left alone, never marked succeeded
    assert load_manifest(run_dir).status == "running"

    same = _ftpipe(*args)  # the same spec: resumes the killed run's folder
    out, _ = same.communicate(timeout=900)
    assert same.returncode == 0, out
    assert "resuming interrupted run" in out
    manifest = load_manifest(run_dir)
    assert manifest.status == "trained" and manifest.attempts == 2  # --no-eval: a model, no verdict yet
    progress = json.loads((run_dir / "training/_ludwig/experiment_run/model/training_progress.json").read_text())
    rows = json.loads((run_dir / "data_summary.json").read_text())["mixture"]["colors"]["rows"]
    assert progress["steps"] == 6 * -(-rows // 8)  # it finished all 6 epochs


def test_second_run_of_locked_pipeline_exits_with_lock_code(tmp_path, tiny_llama_dir):
    lock = PipelineLock(tmp_path / "tiny-lora")
    lock.acquire("a test holding the lock")
    try:
        proc = _ftpipe("run", str(TINY), "--runs-dir", str(tmp_path))
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == EXIT_LOCKED, out
        assert f"pid {os.getpid()}" in out and "a test holding the lock" in out
        with pytest.raises(LockedError):
            run_pipeline(TINY, [], tmp_path)
    finally:
        lock.release()
    assert not lock.is_held()


def test_ctrl_c_during_training_fails_the_run_instead_of_evaluating_it(tmp_path, tiny_llama_dir):
    """Ludwig swallows the first Ctrl-C and returns a half-trained model; ftpipe must not report it as a result."""
    proc = _ftpipe("run", str(TINY), "--runs-dir", str(tmp_path), "--set", "training.epochs=20",
                   "--set", "training.checkpoints_per_epoch=2")
    checkpoint = lambda: list(tmp_path.glob("tiny-lora/*/training/_ludwig/experiment_run/model/ftpipe_checkpoint.json"))
    assert _wait_for(checkpoint, 300), proc.communicate()[0] if proc.poll() is not None else "no checkpoint"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    [(run_dir, manifest)] = list_runs(tmp_path)
    assert manifest.status == "failed" and "interrupted" in manifest.error
    assert not (run_dir / "report.json").exists() and not (run_dir / "adapter").exists()
