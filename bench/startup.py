"""Start-up: wall time of `ftpipe --help` and `ftpipe validate pipelines/demo.yaml` in fresh processes.

One untimed warm-up run each (file cache), then the median of REPEATS runs. `python -c pass` with the
same interpreter is measured too: the floor no CLI can go under. When a target is missed, the
slowest imports (`python -X importtime`) are recorded to show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEMO_SPEC, REPO, log, median, write_result  # noqa: E402

REPEATS = 5
FTPIPE = str(Path(sys.executable).with_name("ftpipe"))
COMMANDS = {
    "python -c pass": ([sys.executable, "-c", "pass"], None),
    "ftpipe --help": ([FTPIPE, "--help"], 0.5),
    "ftpipe validate pipelines/demo.yaml": ([FTPIPE, "validate", str(DEMO_SPEC)], 1.0),
}


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-500:]}")
    return elapsed


def slowest_imports(args: list[str], top: int = 12) -> list[dict]:
    """Cumulative import times of `python -X importtime -m ftpipe.cli ...`, slowest top-level packages first."""
    code = "import sys; from ftpipe.cli import main; sys.argv = ['ftpipe'] + sys.argv[1:]; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            cumulative = int(parts[1])
        except (ValueError, IndexError):
            continue
        name = parts[2].rstrip()
        if len(name) - len(name.lstrip()) == 1:  # top-level import (nested ones are indented further)
            rows.append({"module": name.strip(), "cumulative_ms": round(cumulative / 1000, 1)})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    results = {}
    for name, (cmd, target) in COMMANDS.items():
        wall(cmd)  # warm-up
        times = [round(wall(cmd), 3) for _ in range(a.repeats)]
        m = median(times)
        results[name] = {"median_s": round(m, 3), "all_s": times, "target_s": target, "met": None if target is None else m <= target}
        if target is not None and m > target:
            results[name]["slowest_imports"] = slowest_imports(cmd[1:])
        log(f"startup {name}: median {m:.3f}s")
    payload = {"what": "CLI start-up wall time, fresh processes", "settings": {"repeats": a.repeats, "warmup_runs": 1,
               "interpreter": sys.executable}, "commands": results}
    if a.out:
        a.out.write_text(json.dumps(payload, indent=2))
    else:
        log(f"wrote {write_result('startup', payload)}")


if __name__ == "__main__":
    main()
