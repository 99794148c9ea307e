"""Shared helpers of the benchmarks: machine facts, package versions, result files, statistics.

Imports nothing heavy at module level (startup.py must not pay for torch).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# BENCH_RESULTS_DIR moves the results elsewhere (run_all.py --quick does, so smoke tests never overwrite real numbers).
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or BENCH_DIR / "results")
DEMO_SPEC = REPO / "pipelines" / "demo.yaml"
PACKAGES = ("ftpipe", "ludwig", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "tokenizers", "numpy")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def package_versions() -> dict[str, str | None]:
    """Installed versions (from metadata: imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx")))
    except OSError:
        pass
    return []


def machine_info(torch_threads: bool = True) -> dict:
    """Where a number was measured. `torch_threads` imports torch to read its thread count."""
    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_flags": _cpu_flags(),
        "mem_gib": None,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["mem_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    if torch_threads:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def write_result(name: str, payload: dict) -> Path:
    """Write bench/results/<name>.json with machine, versions and time stamp added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "measured_at": utc_now(), "machine": machine_info(), "versions": package_versions(), **payload}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def python() -> str:
    """The interpreter of the venv this runs in."""
    return sys.executable


def run_json_subprocess(args: list[str], out_file: Path, timeout: float, env: dict | None = None) -> dict:
    """Run a bench worker in its own process (fresh allocator, no shared imports) and read its JSON."""
    if out_file.exists():
        out_file.unlink()
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([python(), *args, "--out", str(out_file)], cwd=REPO, env=full_env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not out_file.exists():
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(out_file.read_text())
