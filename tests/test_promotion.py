"""The promoted pointer: a journal that rolls back like a stack, survives a kill between its writes,
and a lock whose readers never take it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftpipe.errors import BadInputError, LockedError
from ftpipe.lifecycle import history
from ftpipe.lifecycle.promotion import JOURNAL, promote, promotion_stack, reconcile, rollback
from ftpipe.lifecycle.runs import Manifest, PipelineLock, display_status, promoted_run, save_manifest

ROOT = Path(__file__).resolve().parent.parent


def make_run(root: Path, run_id: str, status: str = "succeeded", model: bool = True) -> Path:
    """A run folder as `ftpipe run` leaves it, with an (empty) adapter folder."""
    run_dir = root / "pipe" / run_id
    run_dir.mkdir(parents=True)
    save_manifest(run_dir, Manifest(run_id=run_id, pipeline="pipe", status=status, spec_path="spec.yaml", spec_hash="x"))
    if model:
        (run_dir / "adapter").mkdir()
    return run_dir


def test_rollback_walks_back_like_a_stack(tmp_path):
    runs = [make_run(tmp_path, f"2026120{i}T000000Z-aaaa") for i in (1, 2, 3)]
    for run in runs:
        promote(str(run), tmp_path)
    assert promoted_run("pipe", tmp_path) == runs[2]
    assert rollback("pipe", tmp_path) == runs[1]
    assert rollback("pipe", tmp_path) == runs[0]  # not back to C, as the old rollback did
    with pytest.raises(BadInputError, match="no earlier promoted run to roll back to"):
        rollback("pipe", tmp_path)
    assert promoted_run("pipe", tmp_path) == runs[0]
    actions = [a for _, a, _ in history.promotion_history("pipe")]
    assert [a.split(":")[0] for a in actions] == ["promote"] * 3 + ["rollback"] * 2


def test_rollback_passes_over_runs_whose_folder_is_gone(tmp_path):
    a, b, c = (make_run(tmp_path, f"2026120{i}T000000Z-bbbb") for i in (1, 2, 3))
    for run in (a, b, c):
        promote(str(run), tmp_path)
    import shutil

    shutil.rmtree(b)
    assert rollback("pipe", tmp_path) == a
    assert "passing over 20261202T000000Z-bbbb" in history.promotion_history("pipe")[-1][1]


def test_only_succeeded_runs_with_a_model_are_promoted(tmp_path):
    trained = make_run(tmp_path, "20261201T000000Z-cccc", status="trained")
    with pytest.raises(BadInputError, match="status trained; only succeeded runs can be promoted"):
        promote(str(trained), tmp_path)
    assert promoted_run("pipe", tmp_path) is None


def test_a_kill_between_journal_and_pointer_is_repaired_by_the_next_writer(tmp_path):
    a, b = make_run(tmp_path, "20261201T000000Z-dddd"), make_run(tmp_path, "20261202T000000Z-dddd")
    promote(str(a), tmp_path)
    # what a kill right after the journal line and before the symlink swap leaves behind:
    pdir = tmp_path / "pipe"
    with (pdir / JOURNAL).open("a") as f:
        f.write(json.dumps({"at": "now", "action": "promote", "run": b.name, "stack": [a.name, b.name], "detail": ""}) + "\n")
        f.write('{"at": "now", "action": "promote", "run": "half a li')  # and a torn last line
    assert promoted_run("pipe", tmp_path) == a  # readers still see a complete, succeeded run
    assert promotion_stack(pdir) == [a.name, b.name]
    reconcile(pdir)
    assert promoted_run("pipe", tmp_path) == b


def test_promote_and_rollback_take_the_lock(tmp_path):
    a = make_run(tmp_path, "20261201T000000Z-eeee")
    lock = PipelineLock(tmp_path / "pipe")
    lock.acquire("a run")
    try:
        with pytest.raises(LockedError):
            promote(str(a), tmp_path)
        with pytest.raises(LockedError):
            rollback("pipe", tmp_path)
    finally:
        lock.release()
    promote(str(a), tmp_path)


HOLDER = """
import sys, time
from pathlib import Path
from ftpipe.lifecycle.runs import PipelineLock
lock = PipelineLock(Path(sys.argv[1]))
lock.acquire("holder")
print("held", flush=True)
time.sleep(60)
"""


def test_lock_readers_never_take_the_lock(tmp_path):
    pdir = tmp_path / "pipe"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(pdir)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        reader = PipelineLock(pdir)
        assert all(reader.is_held() for _ in range(200))
        run_dir = make_run(tmp_path, "20261201T000000Z-ffff", status="running")
        assert display_status(run_dir, Manifest.model_validate_json((run_dir / "manifest.json").read_text())) == "running"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert not reader.is_held()  # its holder is dead: a killed run shows as interrupted
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_reader_loop_never_makes_a_writer_fail_to_lock(tmp_path):
    """A tight `is_held` loop in another process, while this one takes and releases the lock 200 times."""
    pdir = tmp_path / "pipe"
    PipelineLock(pdir)
    loop = ("import sys\nfrom pathlib import Path\nfrom ftpipe.lifecycle.runs import PipelineLock\n"
            "lock = PipelineLock(Path(sys.argv[1]))\nwhile True:\n    lock.is_held()\n")
    reader = subprocess.Popen([sys.executable, "-c", loop, str(pdir)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        time.sleep(1.0)
        for _ in range(200):
            lock = PipelineLock(pdir)
            lock.acquire("writer")  # wait_s=0: any contention would raise LockedError
            lock.release()
    finally:
        reader.kill()
        reader.wait()
