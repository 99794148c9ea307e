"""`make gpu-check`: everything that needs a CUDA GPU, in one command of under 10 minutes.

1. the `gpu` test marker (pytest -m gpu);
2. a QLoRA `ftpipe run` end to end on CUDA (train, evaluate, report) of pipelines/qlora.yaml,
   in a temporary runs folder so nothing is promoted in the checkout;
3. bench/gpu.py (peak memory, tokens/s and MFU of full, LoRA and QLoRA; ftpipe against the plain loop).

Prints each step's result and the figures, and exits 1 when a step failed. Where there is no CUDA
GPU it prints "gpu-check: skipped (...)" and exits 0, so it is safe on any machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Step budgets (seconds): together under the 10-minute promise, with room for model loading.
BUDGET = {"tests": 150, "qlora run": 240, "bench": 180}


def cuda_devices() -> list[str]:
    """Names of the visible CUDA devices (asked in a child, so this process never initialises CUDA)."""
    probe = ("import torch, json; print(json.dumps([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]"
             " if torch.cuda.is_available() else []))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else []


def step(name: str, cmd: list[str], **kw) -> bool:
    start = time.monotonic()
    print(f"gpu-check: {name}: {' '.join(cmd)}", flush=True)
    try:
        rc = subprocess.run(cmd, cwd=ROOT, timeout=BUDGET[name], **kw).returncode
    except subprocess.TimeoutExpired:
        print(f"gpu-check: {name}: over its {BUDGET[name]} s budget", flush=True)
        return False
    print(f"gpu-check: {name}: {'ok' if rc == 0 else f'failed (exit {rc})'} in {time.monotonic() - start:.0f} s", flush=True)
    return rc == 0


def summarize_run(runs: Path) -> None:
    for report in sorted(runs.glob("*/*/report.json")):
        data = json.loads(report.read_text())
        for t in data.get("tasks", []):
            print(f"  {t['task']} ({t['role']}): base {t.get('base')} -> tuned {t.get('tuned')} [{t.get('ci_low')}, "
                  f"{t.get('ci_high')}] {t.get('verdict')}")


def summarize_bench() -> None:
    path = ROOT / "bench" / "results" / "gpu.json"
    if path.exists():
        print(json.dumps(json.loads(path.read_text()), indent=1)[:6000])


def main() -> int:
    devices = cuda_devices()
    if not devices:
        print("gpu-check: skipped (no CUDA GPU: torch.cuda.is_available() is False here)")
        return 0
    print(f"gpu-check: {len(devices)} CUDA device(s): {', '.join(devices)}")
    ok = step("tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"])
    subprocess.run([str(BIN / "ftpipe"), "models", "pull", "smollm2-135m-instruct"], cwd=ROOT, check=False)
    with tempfile.TemporaryDirectory(prefix="ftpipe-gpu-check-") as runs:
        ran = step("qlora run", [str(BIN / "ftpipe"), "run", "pipelines/qlora.yaml", "--runs-dir", runs,
                                 "--set", "compute.device=cuda"])
        summarize_run(Path(runs))
    benched = step("bench", [sys.executable, "bench/gpu.py", "--steps", "10", "--warmup", "3", "--ftpipe-rounds", "1"])
    summarize_bench()
    print(f"gpu-check: {'passed' if ok and ran and benched else 'FAILED'}")
    return 0 if ok and ran and benched else 1


if __name__ == "__main__":
    sys.exit(main())
