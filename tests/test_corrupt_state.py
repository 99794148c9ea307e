"""Damaged state gets a clear message and a way out, never a traceback: truncated manifests, a corrupt
or locked history database, a promoted pointer to a deleted run, a store entry with missing files,
and a full disk."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftpipe.cli import app
from ftpipe.errors import EXIT_BAD_INPUT, EXIT_FAILURE
from ftpipe.lifecycle import history
from ftpipe.lifecycle.promotion import promote
from ftpipe.lifecycle.runs import Manifest, list_runs, load_manifest, promoted_run, save_manifest

ROOT = Path(__file__).resolve().parent.parent


def make_run(root: Path, run_id: str, status: str = "succeeded", pipeline: str = "pipe") -> Path:
    run_dir = root / pipeline / run_id
    run_dir.mkdir(parents=True)
    save_manifest(run_dir, Manifest(run_id=run_id, pipeline=pipeline, status=status, spec_path="spec.yaml", spec_hash="x"))
    (run_dir / "adapter").mkdir()
    return run_dir


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_a_truncated_manifest_is_named_and_repaired(tmp_path):
    good, bad = make_run(tmp_path, "20261201T000000Z-aaaa"), make_run(tmp_path, "20261202T000000Z-bbbb")
    text = (bad / "manifest.json").read_text()
    (bad / "manifest.json").write_text(text[: len(text) // 2])
    code, out = cli("runs", "list", "--runs-dir", str(tmp_path))
    assert code == 0 and good.name in out and f"{bad.name}" in out and "ftpipe runs repair pipe" in out
    code, out = cli("runs", "show", str(bad), "--runs-dir", str(tmp_path))
    assert code == EXIT_FAILURE and "unreadable manifest" in out and "Traceback" not in out
    code, out = cli("runs", "repair", "pipe", "--runs-dir", str(tmp_path))
    assert code == 0 and "unreadable manifest kept as manifest.json.corrupt; run marked failed" in out
    assert load_manifest(bad).status == "failed" and (bad / "manifest.json.corrupt").read_text() == text[: len(text) // 2]
    assert {d.name for d, _ in list_runs(tmp_path)} == {good.name, bad.name}


def test_a_corrupt_history_database_is_rebuilt_from_the_run_folders(tmp_path, isolated_history):
    runs = [make_run(tmp_path, f"2026120{i}T000000Z-cccc") for i in (1, 2)]
    for run in runs:
        promote(str(run), tmp_path)
    isolated_history.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{isolated_history}{suffix}").unlink(missing_ok=True)
    with pytest.raises(Exception, match="history database .* cannot be read"):
        history.runs("pipe")
    promote(str(runs[0]), tmp_path)  # a write with the database broken: a warning, not a failure
    assert promoted_run("pipe", tmp_path) == runs[0]
    code, out = cli("runs", "repair", "pipe", "--runs-dir", str(tmp_path))
    assert code == 0 and "history rebuilt from 2 run folders" in out and "moved aside" in out
    assert {r["run_id"] for r in history.runs("pipe")} == {r.name for r in runs}
    assert [a.split(":")[0] for _, a, _ in history.promotion_history("pipe")] == ["promote"] * 3
    assert list(isolated_history.parent.glob("history.sqlite.corrupt-*"))


def test_a_locked_history_database_warns_and_the_promotion_still_happens(tmp_path, isolated_history, monkeypatch):
    run = make_run(tmp_path, "20261201T000000Z-dddd")
    history.record_run(load_manifest(run), run)
    holder = sqlite3.connect(isolated_history, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(history, "CONNECT_TIMEOUT_S", 0.2)
    try:
        promote(str(run), tmp_path)
    finally:
        holder.rollback()
        holder.close()
    assert promoted_run("pipe", tmp_path) == run


def test_a_promoted_pointer_to_a_deleted_run_is_reported_and_walked_back(tmp_path):
    a, b = make_run(tmp_path, "20261201T000000Z-eeee"), make_run(tmp_path, "20261202T000000Z-eeee")
    promote(str(a), tmp_path)
    promote(str(b), tmp_path)
    shutil.rmtree(b)
    code, out = cli("runs", "list", "--runs-dir", str(tmp_path))
    assert "the promoted pointer names a missing run" in out
    code, out = cli("runs", "repair", "pipe", "--runs-dir", str(tmp_path))
    assert code == 0 and "passed over missing or incomplete 20261202T000000Z-eeee" in out
    assert promoted_run("pipe", tmp_path) == a


def test_a_store_entry_with_missing_files_is_named_and_rebuilt(ftpipe_home, tiny_llama_dir):
    from ftpipe.errors import ModelNotFoundError
    from ftpipe.models import store

    entry = ftpipe_home / "models" / "tiny-llama"
    shutil.copytree(tiny_llama_dir, entry)
    (entry / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match=r"incomplete \(missing or damaged: model.safetensors\)"):
        store.model_path("tiny-llama")
    said: list[str] = []
    rebuilt = store.pull("tiny-llama", progress=said.append)
    assert (rebuilt / "model.safetensors").is_file() and any(m.startswith("rebuilding tiny-llama") for m in said)
    assert store.model_path("tiny-llama") == rebuilt


FULL_DISK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from ftpipe.cli import main
sys.argv = ["ftpipe", "run", sys.argv[2], "--runs-dir", sys.argv[3], "--set", "training.max_steps=2"]
main()
"""


def test_a_full_disk_fails_the_run_with_one_line_and_leaves_the_promoted_model_alone(tmp_path, tiny_llama_dir):
    """RLIMIT_FSIZE stands in for a full disk: the first write past 200 KB fails like ENOSPC would."""
    spec = ROOT / "tests" / "fixtures" / "specs" / "tiny_lora.yaml"
    runs = tmp_path / "runs"
    promoted = make_run(runs, "20261201T000000Z-ffff", pipeline="tiny-lora")  # the model in service
    promote(str(promoted), runs)
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(200_000), str(spec), str(runs)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == EXIT_FAILURE, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not write" in errors[0] and "a file-size limit was reached" in errors[0]
    assert "Traceback" not in done.stderr
    assert promoted_run("tiny-lora", runs).name == promoted.name  # the model in service is untouched
    failed = [m for _, m in list_runs(runs, "tiny-lora") if m.run_id != promoted.name]
    assert [m.status for m in failed] == ["failed"] and "could not write" in failed[0].error
    for path in runs.glob("*/*/*.json"):  # what ftpipe trusts: each run's own records (Ludwig's files stay in
        json.loads(path.read_text())  # the failed run's training folder, which nothing resumes or reads)
    assert not [p for p in runs.glob("*/*/.*tmp*")]
