"""Resume only what can be resumed: the same spec, the same data and a completely written checkpoint.

Each case kills a real `ftpipe run` with SIGKILL, changes what the case is about, and runs again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ftpipe.lifecycle.runs import list_runs, load_manifest
from ftpipe.training.ludwig_compat import CHECKPOINT_RECORD, checkpoint_state, record_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "fixtures" / "specs" / "tiny_lora.yaml"
ARGS = ["--no-eval", "--set", "training.epochs=2", "--set", "training.checkpoints_per_epoch=1",
        "--set", "training.evaluate_during_training=false"]


def ftpipe(*args: str, cwd: Path, extra_env: dict | None = None, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "FTPIPE_FAULT"} | {"PYTHONPATH": str(ROOT)} | (extra_env or {})
    return subprocess.Popen([sys.executable, "-m", "ftpipe", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def killed_run(work: Path, runs: Path, until=None) -> Path:
    """Start a run and SIGKILL it, return its folder.

    With `until`, the whole process group is killed from outside once `until(runs)` holds; without,
    the run kills itself right after its first checkpoint (`FTPIPE_FAULT=train:step`: the first step
    of the second epoch). Polling for the checkpoint and killing from outside raced the next save on
    a fast machine, so the kill found a half-written checkpoint, which ftpipe rightly refused.
    """
    fault = {} if until else {"FTPIPE_FAULT": "train:step"}
    proc = ftpipe("run", str(work / "tiny_lora.yaml"), "--runs-dir", str(runs), *ARGS, cwd=work, start_new_session=True,
                  extra_env=fault)
    if until is None:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, out[-2000:]
    else:
        deadline = time.monotonic() + 300
        while not until(runs):
            assert proc.poll() is None, proc.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "the run never reached the point to kill it at"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    [(run_dir, manifest)] = [(d, m) for d, m in list_runs(runs) if m.status == "running"]
    return run_dir


def training_started(runs: Path) -> bool:
    return bool(list(runs.glob("*/*/training/_ludwig/experiment_run")))


def rerun(work: Path, runs: Path) -> str:
    proc = ftpipe("run", str(work / "tiny_lora.yaml"), "--runs-dir", str(runs), *ARGS, cwd=work)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-2000:]
    return out


def job(tmp_path: Path) -> tuple[Path, Path]:
    work = tmp_path / "job"
    shutil.copytree(SPEC.parent.parent, work)  # specs/ and data/, so the spec's relative paths hold
    return work / "specs", tmp_path / "runs"


def test_changed_data_starts_a_new_run_instead_of_resuming(tmp_path, tiny_llama_dir):
    work, runs = job(tmp_path)
    old = killed_run(work, runs)
    data = work.parent / "data" / "colors.jsonl"
    data.write_text(data.read_text() + json.dumps({"question": "What color is fresh snow?", "color": "white"}) + "\n")
    out = rerun(work, runs)
    assert "not resuming interrupted run" in out and "its data changed" in out
    assert load_manifest(old).status == "failed" and load_manifest(old).error.startswith("abandoned: its data changed")
    assert len(list_runs(runs)) == 2


def test_a_partly_written_checkpoint_is_detected_and_not_resumed(tmp_path, tiny_llama_dir):
    work, runs = job(tmp_path)
    old = killed_run(work, runs)
    weights = old / "training/_ludwig/experiment_run/model/training_checkpoints/latest.ckpt.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a save cut short
    assert checkpoint_state(old / "training")[0] == "partial"
    out = rerun(work, runs)
    assert "its last checkpoint is incomplete" in out
    assert load_manifest(old).status == "failed"


def test_a_complete_checkpoint_is_resumed_in_its_own_folder(tmp_path, tiny_llama_dir):
    work, runs = job(tmp_path)
    old = killed_run(work, runs)
    step = json.loads((old / f"training/_ludwig/experiment_run/model/{CHECKPOINT_RECORD}").read_text())["step"]
    out = rerun(work, runs)
    assert "resuming interrupted run" in out and "(resuming its checkpoint)" in out
    manifest = load_manifest(old)
    assert manifest.status == "trained" and manifest.attempts == 2 and step > 0


def test_a_run_killed_before_its_first_checkpoint_resumes_into_the_right_folder(tmp_path, tiny_llama_dir):
    work, runs = job(tmp_path)
    old = killed_run(work, runs, training_started)
    rerun(work, runs)
    manifest = load_manifest(old)
    assert manifest.status == "trained" and manifest.attempts == 2
    assert not list((old / "training/_ludwig").glob("experiment_run_*"))  # no experiment_run_0 beside it
    # The statistics come from the folder this run trained into (with evaluation during training off,
    # Ludwig records no per-set metrics, so compare the files rather than look for a loss).
    ludwig_stats = old / "training/_ludwig/experiment_run/training_statistics.json"
    assert ludwig_stats.is_file(), "training statistics were read from the wrong Ludwig folder"
    assert json.loads((old / "training_statistics.json").read_text()) == json.loads(ludwig_stats.read_text())


def test_checkpoint_state_compares_every_part_with_the_record(tmp_path):
    model = tmp_path / "training" / "_ludwig" / "experiment_run" / "model"
    (model / "training_checkpoints").mkdir(parents=True)
    assert checkpoint_state(tmp_path / "training")[0] == "none"
    for name, data in (("training_checkpoints/latest.ckpt", b"meta"), ("training_checkpoints/latest.ckpt.safetensors", b"w" * 64),
                       ("training_progress.json", b"{}")):
        (model / name).write_bytes(data)
    assert checkpoint_state(tmp_path / "training")[0] == "partial"  # never recorded: killed while saving
    record_checkpoint(model, 12)
    assert checkpoint_state(tmp_path / "training") == ("complete", "step 12")
    (model / "training_progress.json").write_bytes(b'{"steps": 13}')  # a newer part beside older ones
    state, why = checkpoint_state(tmp_path / "training")
    assert state == "partial" and "training_progress.json" in why
