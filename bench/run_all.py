"""`make bench`: run the CPU benchmarks one after another, then print the table.

  1. startup     `ftpipe --help` and `ftpipe validate` wall time            -> bench/results/startup.json
  2. evaluation  batched vs one-by-one generation; demo evaluation time     -> bench/results/evaluation.json
  3. training    ftpipe vs plain PEFT loop, alternated, + length grouping   -> bench/results/training.json
  4. gpu         only with a CUDA GPU (else records `skipped`)              -> bench/results/gpu.json

Each benchmark runs in its own process, never two at once (2 cores: parallel torch jobs oversubscribe).
The table is also written to bench/results/table.md.

  python bench/run_all.py                 # everything (13-15 minutes on 2 CPU cores)
  python bench/run_all.py --only training --rounds 2
  python bench/run_all.py --table         # print the table of the latest results, run nothing
  python bench/run_all.py --quick         # smoke test: tiny model, few steps (numbers meaningless)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DIR, RESULTS, log  # noqa: E402

BENCHMARKS = ("startup", "evaluation", "training", "gpu")


def run(name: str, args: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    log(f"=== {name}: {' '.join(args)}")
    proc = subprocess.run([sys.executable, *args], cwd=BENCH_DIR.parent, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"benchmark {name} failed (exit {proc.returncode})")
    return time.perf_counter() - t


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x, spec=".0f", suffix=""):
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def _met(ok) -> str:
    return "" if ok is None else ("yes" if ok else "**no**")


def table() -> str:
    rows: list[tuple[str, str, str, str]] = []
    st, ev, tr, gpu = (_load(n) for n in BENCHMARKS)
    if tr:
        s, r = tr["sides"], tr["ratios"]
        f, ref = s["ftpipe"], s["reference"]
        n = f"{f['trials']}+{ref['trials']} trials, median"
        rows += [
            ("train: ftpipe real tokens/s", f"{f['real_tokens_per_s_median']:.0f} ({f['s_per_step_median']:.2f} s/step)", "", n),
            ("train: reference loop real tokens/s", f"{ref['real_tokens_per_s_median']:.0f} ({ref['s_per_step_median']:.2f} s/step)", "", n),
            ("train: ftpipe / reference", f"{r['ftpipe_over_reference']:.3f}", ">= 0.95", _met(r["ftpipe_over_reference"] >= 0.95)),
            ("train: real-token share of ftpipe batches", f"{f['real_token_share_epoch']:.1%}", ">= 90%", _met(f["real_token_share_epoch"] >= 0.90)),
        ]
        notes = {"reference-grouped": "plain loop, same rows grouped by length",
                 "ftpipe-grouped": "prototype: length-grouped batches via should_shuffle=false",
                 "ftpipe-lean": "prototype: per-step training metrics off",
                 "ftpipe-grouped-lean": "prototype: grouped batches + training metrics off"}
        for side, v in s.items():
            if side in ("ftpipe", "reference"):
                continue
            k = side.replace("-", "_")
            value = f"{v['real_tokens_per_s_median']:.0f} (x{r[k + '_over_reference']:.3f} of reference"
            if k + "_over_reference_grouped" in r:
                value += f", x{r[k + '_over_reference_grouped']:.3f} of reference-grouped"
            value += ")"
            met = _met(r[k + "_over_reference"] >= 0.95) if side.startswith("ftpipe") else ""
            rows.append((f"train: {side} real tokens/s", value, ">= 0.95" if met else "", f"{notes.get(side, '')}; {met}".strip("; ")))
            rows.append((f"train: real-token share, {side}", f"{v['real_token_share_epoch']:.1%}", ">= 90%",
                         _met(v["real_token_share_epoch"] >= 0.90)))
        fc, rc = dict(f["component_s_per_step_median"]), ref["component_s_per_step_median"]
        if {"forward_pass", "hf_model_forward", "train_loss"} <= fc.keys():
            fc["ludwig_forward_extras"] = fc["forward_pass"] - fc["hf_model_forward"] - fc["train_loss"]
        rows.append(("train: ftpipe s/step: model fwd / Ludwig fwd extras / loss / metrics / backward / optim",
                     " / ".join(_fmt(fc.get(k), ".3f") for k in ("hf_model_forward", "ludwig_forward_extras", "train_loss",
                                                                  "training_metrics", "backward", "optimizer_step")),
                     "", "where the time goes"))
        rows.append(("train: reference s/step: fwd+loss / backward / optim",
                     " / ".join(_fmt(rc.get(k), ".3f") for k in ("forward_with_loss", "backward", "optimizer_step")), "", ""))
    if ev:
        rows += [
            ("eval: batched (batch 16) s", f"{ev['batched_s_median']:.1f}", "", f"{ev['settings']['items']} items"),
            ("eval: one-by-one s", f"{ev['one_by_one_s_median']:.1f}", "", "same items, same outputs" if ev["identical_outputs"]
             else f"{ev['differing_outputs']} outputs differ"),
            ("eval: batched speedup", f"{ev['speedup']:.2f}x", ">= 4x", _met(ev["speedup"] >= 4)),
        ]
        d = ev["demo_evaluation"]
        rows.append(("eval: demo base+tuned evaluation, total", f"{d['evaluate_s']:.0f} s" if d.get("measured") else "not measured",
                     "", Path(d["run_dir"]).name if d.get("measured") else "no demo run found"))
    if st:
        for name, target in (("ftpipe --help", 0.5), ("ftpipe validate pipelines/demo.yaml", 1.0)):
            c = st["commands"][name]
            rows.append((f"startup: {name}", f"{c['median_s']:.2f} s", f"<= {target} s", _met(c["met"])))
        rows.append(("startup: python -c pass (floor)", f"{st['commands']['python -c pass']['median_s']:.2f} s", "", ""))
    if gpu:
        if gpu.get("skipped"):
            rows.append(("gpu", "skipped", "", gpu.get("reason", "")))
        else:
            for r in gpu.get("reference_loop", []):
                if "tokens_per_s" in r:
                    rows.append((f"gpu: {r['model']} {r['method']} (reference loop)",
                                 f"{r['tokens_per_s']:.0f} tok/s, {r['peak_allocated_gib']:.2f} GiB, MFU {_fmt(r['mfu'], '.1%')}", "", r["device"]))
                else:
                    rows.append((f"gpu: {r['model']} {r['method']}", r.get("skipped") or "error", "", ""))
            for r in gpu.get("ftpipe_vs_reference", []):
                if "ratios" in r:
                    rows.append((f"gpu: {r['model']} {r['method']} ftpipe / reference", f"{r['ratios']['ftpipe_over_reference']:.3f}",
                                 ">= 0.95", _met(r["ratios"]["ftpipe_over_reference"] >= 0.95)))
    machine = (tr or ev or st or {}).get("machine", {})
    head = (f"Measured {(tr or ev or st or {}).get('measured_at', '?')} on {machine.get('cpu')} x{machine.get('cpu_count')} "
            f"(torch threads {machine.get('torch_threads')}), {machine.get('mem_gib')} GiB.\n\n")
    lines = ["| measure | value | target | met / note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=BENCHMARKS, action="append")
    ap.add_argument("--rounds", type=int, default=3, help="training A/B rounds (each: ftpipe, reference, both grouped)")
    ap.add_argument("--grouped-rounds", type=int, default=2, help="rounds that also run the extra variants")
    ap.add_argument("--extra-sides", default=None, help="training variants after ftpipe, reference (see bench/train_ab.py)")
    ap.add_argument("--table", action="store_true", help="print the table of the latest results only")
    ap.add_argument("--quick", action="store_true", help="smoke test on the tiny model (results are not kept as the real ones)")
    a = ap.parse_args()
    if a.quick:  # keep smoke-test numbers away from the real results (children inherit the variable)
        os.environ["BENCH_RESULTS_DIR"] = os.environ.get("BENCH_RESULTS_DIR") or "/tmp/ftpipe-bench-quick"
        global RESULTS
        RESULTS = Path(os.environ["BENCH_RESULTS_DIR"])
        RESULTS.mkdir(parents=True, exist_ok=True)
    if not a.table:
        t0 = time.perf_counter()
        env = {"BENCH_BASE_MODEL": "tiny-llama"} if a.quick else {}
        todo = a.only or list(BENCHMARKS)
        spent = {}
        if "startup" in todo:
            spent["startup"] = run("startup", ["bench/startup.py", *(["--repeats", "2"] if a.quick else [])])
        if "evaluation" in todo:
            spent["evaluation"] = run("evaluation", ["bench/eval_bench.py", *(["--repeats", "1"] if a.quick else [])], env)
        if "training" in todo:
            args = ["bench/train_ab.py", "--driver", "--rounds", str(1 if a.quick else a.rounds)]
            if a.grouped_rounds is not None:
                args += ["--grouped-rounds", str(a.grouped_rounds)]
            if a.extra_sides is not None:
                args += ["--extra-sides", a.extra_sides]
            if a.quick:
                args += ["--steps", "4"]
            spent["training"] = run("training", args, env)
        if "gpu" in todo:
            spent["gpu"] = run("gpu", ["bench/gpu.py"])
        log("wall per benchmark: " + ", ".join(f"{k} {v:.0f}s" for k, v in spent.items())
            + f"; total {time.perf_counter() - t0:.0f}s")
        if a.quick:
            log("--quick: tiny model, the numbers below mean nothing")
    text = table()
    (RESULTS / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
