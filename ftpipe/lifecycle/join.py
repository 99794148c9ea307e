"""`ftpipe join SPEC --node-rank K`: machines 1..N-1 of a multi-machine run join the one node 0 started."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ftpipe.errors import BadInputError
from ftpipe.lifecycle.runs import list_runs
from ftpipe.spec import load_spec
from ftpipe.training.distributed import JOB_FOLDER, join


def find_job(spec_path: Path, overrides: list[str], root: Path | None, wait_s: float, poll_s: float = 2.0) -> Path:
    """The job file of the newest running run of this spec (same spec hash) that node 0 has launched."""
    loaded = load_spec(spec_path, overrides)
    spec_hash, deadline = loaded.spec_hash(), time.monotonic() + wait_s
    while True:
        for run_dir, manifest in list_runs(root, loaded.spec.name):
            job_file = run_dir / "training" / JOB_FOLDER / "job.json"
            if manifest.spec_hash == spec_hash and manifest.status == "running" and job_file.exists():
                if json.loads(job_file.read_text()).get("status") == "launched":
                    return job_file
        if time.monotonic() > deadline:
            raise BadInputError(f"no launched run of {loaded.spec.name} with this spec under {root or 'the runs root'} "
                                f"after {wait_s:.0f}s", hint="start `ftpipe run` on node 0 with the same spec and --set "
                                                            "options, and put the runs root on storage every node sees")
        time.sleep(poll_s)


def join_run(spec_path: Path | None, overrides: list[str], node_rank: int, job: Path | None = None,
             root: Path | None = None, wait_s: float = 900) -> int:
    """Start this machine's processes of the run node 0 launched for this spec (or of an explicit job file)."""
    if node_rank < 1:
        raise BadInputError("join needs --node-rank 1..nodes-1 (node 0 is the machine running `ftpipe run`)")
    if job is None and spec_path is None:
        raise BadInputError("join needs a spec or --job")
    return join(job or find_job(spec_path, overrides, root, wait_s), node_rank)
