"""`make bench`: run the CPU benchmarks one after another, then print the table.

  1. startup     `ftpipe --help` and `ftpipe validate` wall time                  -> bench/results/startup.json
  2. evaluation  batched vs one-by-one generation; demo evaluation time           -> bench/results/evaluation.json
  3. training    ftpipe vs plain PEFT loop (ungrouped, same batches), packed, bf16 -> bench/results/training.json
  4. gpu         only with a CUDA GPU (else records `skipped`)                    -> bench/results/gpu.json
  Only with --only (not in the default run, to keep it near 20 minutes):
  5. eval_speed  KV-cache reuse in evaluation (bench/eval_speed.py, ~4 min)        -> bench/results/eval_speed.json
  6. data        prepare_data on 100k rows vs its floor (bench/data_scale.py)       -> bench/results/data.json

Each benchmark runs in its own process, never two at once (2 cores: parallel torch jobs oversubscribe).
The table shows the latest result file of each benchmark that has one (each section says when it was measured)
and is also written to bench/results/table.md and into bench/README.md between its table markers.

  python bench/run_all.py                 # 1-4 (about 20 minutes on 2 CPU cores)
  python bench/run_all.py --only training --rounds 2
  python bench/run_all.py --only eval_speed --only data
  python bench/run_all.py --table         # print the table of the latest results, run nothing
  python bench/run_all.py --quick         # smoke test: tiny model, few steps (numbers meaningless; results in /tmp)
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

BENCHMARKS = ("startup", "evaluation", "training", "gpu", "eval_speed", "data")
DEFAULT = ("startup", "evaluation", "training", "gpu")
SIDE_NOTES = {"ftpipe": "as shipped: length-grouped batches, lean steps, fp32",
              "reference-same-batches": "plain loop, ftpipe's own batches replayed",
              "reference-ungrouped": "plain loop, Ludwig-style random batches",
              "ftpipe-packed": "training.packing (one pack per batch)",
              "ftpipe-bf16": "training.precision bf16 (autocast)",
              "ftpipe-ungrouped": "training.group_by_length false"}
TARGET_LABELS = {"ftpipe_over_reference_ungrouped": "train: ftpipe / reference-ungrouped",
                 "ftpipe_over_reference_same_batches": "train: ftpipe / reference-same-batches",
                 "ftpipe_bf16_over_ftpipe": "train: ftpipe-bf16 / ftpipe",
                 "real_token_share_grouped_each_batch": "train: real tokens per batch, ftpipe (grouped)",
                 "real_token_share_packed_each_batch": "train: real tokens per batch, ftpipe-packed"}


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


def training_rows(tr: dict) -> list[tuple[str, str, str, str]]:
    if "ftpipe_over_reference_same_batches" not in tr.get("targets", {}):
        return [("train", "stale: training.json predates issue 16's sides", "", "rerun: run_all.py --only training")]
    s, peaks = tr["sides"], tr.get("matmul_peak_gflops", {})
    rows = []
    if peaks:
        rows.append((f"train: matmul peak {' / '.join(peaks)}", " / ".join(f"{v:.0f}" for v in peaks.values()) + " GFLOP/s", "",
                     f"torch.matmul 2048x2048, {tr['settings']['torch_threads']} threads"))
    for side, v in s.items():
        shares = ", ".join(f"{v[f'share_of_{k}_peak']:.1%} of {k} peak" for k in peaks)
        rows.append((f"train: {side} real tokens/s",
                     f"{v['real_tokens_per_s_median']:.0f} ({v['s_per_step_median']:.2f} s/step; 6N: {v['gflops_6n']:.1f} GFLOP/s"
                     + (f" = {shares})" if shares else ")"), "", f"median of {v['trials']} trial{'s' * (v['trials'] != 1)}; {SIDE_NOTES.get(side, '')}"))
    for name, t in tr["targets"].items():
        if name.startswith("real_token_share"):
            side = s.get("ftpipe-packed" if "packed" in name else "ftpipe")
            value = "not run" if side is None else f"{t['value']:.1%} worst batch ({side['real_token_share_epoch']:.1%} of the epoch)"
            target = f">= {t['target']:.0%} each batch"
        else:
            value, target = ("not run" if t["value"] is None else f"{t['value']:.3f}"), f">= {t['target']}"
        rows.append((TARGET_LABELS.get(name, name), value, target, _met(t["met"])))
    bound = tr.get("sorted_epoch_bound")
    if bound:
        rows.append(("train: real tokens per batch, whole epoch sorted by length", f"{bound['worst_batch_real_share']:.1%} worst batch "
                     f"({1 - bound['padding_share']:.1%} of the epoch)", "", "the best any length grouping of these rows reaches at this batch size"))
    if "ftpipe_over_reference_same_batches_paired_steps" in tr["ratios"]:
        rows.append(("train: ftpipe / reference-same-batches, step against step", f"{tr['ratios']['ftpipe_over_reference_same_batches_paired_steps']:.3f}",
                     "", "median over rounds and steps of the same batch's step-time ratio (robust to the host's noise bursts)"))
    if "reference-ungrouped" in s:
        rows.append(("train: real tokens, reference-ungrouped", f"{s['reference-ungrouped']['real_token_share_epoch']:.1%} of the epoch",
                     "", "what ungrouped batches carry"))
    for key in ("reference_same_batches_over_reference_ungrouped", "ftpipe_packed_over_ftpipe", "ftpipe_ungrouped_over_ftpipe"):
        if key in tr["ratios"]:
            rows.append((f"train: {key.replace('_over_', ' / ').replace('_', '-')}", f"{tr['ratios'][key]:.3f}", "", ""))
    fc = dict(s["ftpipe"]["component_s_per_step_median"])
    rc = s.get("reference-same-batches", {}).get("component_s_per_step_median", {})
    if {"forward_pass", "hf_model_forward", "train_loss"} <= fc.keys():
        fc["ludwig_forward_extras"] = fc["forward_pass"] - fc["hf_model_forward"] - fc["train_loss"]
    rows.append(("train: ftpipe s/step: model fwd / Ludwig fwd extras / loss / metrics / backward / optim",
                 " / ".join(_fmt(fc.get(k), ".3f") for k in ("hf_model_forward", "ludwig_forward_extras", "train_loss",
                                                              "training_metrics", "backward", "optimizer_step")),
                 "", "where the time goes"))
    rows.append(("train: reference-same-batches s/step: fwd+loss / backward / optim",
                 " / ".join(_fmt(rc.get(k), ".3f") for k in ("forward_with_loss", "backward", "optimizer_step")), "", ""))
    return rows


def table() -> str:
    rows: list[tuple[str, str, str, str]] = []
    st, ev, tr, gpu, es, data = (_load(n) for n in BENCHMARKS)
    if tr:
        rows += training_rows(tr)
    if ev:
        rows += [
            (f"eval: batched (batch {ev['settings']['batch_size']}) s", f"{ev['batched_s_median']:.1f}", "",
             f"{ev['settings']['items']} items ({ev['settings'].get('items_per_task', 16)} per task); measured {ev['measured_at']}"),
            ("eval: one-by-one s", f"{ev['one_by_one_s_median']:.1f}", "", "same items, same outputs" if ev["identical_outputs"]
             else f"{ev['differing_outputs']} outputs differ"),
            ("eval: batched speedup", f"{ev['speedup']:.2f}x", ">= 6x", _met(ev["speedup"] >= 6)),
        ]
        if "batch_16_s_median" in ev:  # the default batch against the previous default (16)
            rows.append(("eval: default batch / batch 16", f"{ev['over_batch_16']:.2f}x", "",
                         f"batch 16 {ev['batch_16_s_median']:.1f} s; " + ("same outputs" if ev["identical_to_batch_16"] else "outputs differ")))
        if "prefill_only_s" in ev:
            p, dec = ev["prefill_only_s"], ev["decode_s"]
            rows.append(("eval: prefill only (1 new token) batched / one-by-one s", f"{p['batched']:.1f} / {p['one_by_one']:.1f}",
                         "", f"the rest, decoding: {dec['batched']:.1f} / {dec['one_by_one']:.1f} s "
                         f"({dec['one_by_one'] / dec['batched']:.2f}x)" if dec["batched"] > 0 else ""))
        d = ev["demo_evaluation"]
        rows.append(("eval: demo base+tuned evaluation, total", f"{d['evaluate_s']:.0f} s" if d.get("measured") else "not measured",
                     "", (Path(d["run_dir"]).name + "; the newest demo run (a rerun reads the base scores from the cache)") if d.get("measured") else "no demo run found"))
    if es:
        for name, c in es["checks"].items():
            ok = _met(c["met"]) + ("" if c["identical"] in (True, None) else "; outputs differ")
            rows.append((f"eval_speed: {name.replace('_', ' ')}", f"{c['ratio']:.2f}x", f">= {c['target']}x" if c["target"] else "",
                         f"{ok}; measured {es['measured_at']}".strip("; ")))
    if data:
        leaks = min(p["leaks_found"] for p in data["prepare"]) if all("leaks_found" in p for p in data["prepare"]) else None
        note = f"{data['rows']} rows, {data['evaluated_items']} evaluated; measured {data['measured_at']}"
        rows += [("data: prepare_data / floor", f"{data['ratio_prepare_over_floor']:.2f}x", f"<= {data['target_ratio']:g}x",
                  f"{_met(data['ratio_prepare_over_floor'] <= data['target_ratio'])}; {note}"),
                 ("data: prepare_data peak memory", f"{data['peak_mb']:.0f} MB", f"<= {data['target_peak_mb'] / 1024:g} GB",
                  _met(data["peak_mb"] <= data["target_peak_mb"])),
                 ("data: planted leaks found", _fmt(leaks, "d", f"/{data['planted_leaks']}"), "", "")]
    if st:
        for name, target in (("ftpipe --help", 0.5), ("ftpipe validate pipelines/demo.yaml", 1.0)):
            c = st["commands"][name]
            rows.append((f"startup: {name}", f"{c['median_s']:.2f} s", f"<= {target} s", f"{_met(c['met'])}; measured {st['measured_at']}"))
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
                ratio = r.get("ratios", {}).get("ftpipe_over_reference_same_batches")
                if ratio is not None:
                    rows.append((f"gpu: {r['model']} {r['method']} ftpipe / reference-same-batches", f"{ratio:.3f}",
                                 ">= 0.95", _met(ratio >= 0.95)))
    machine = (tr or ev or st or {}).get("machine", {})
    head = (f"Measured {(tr or ev or st or {}).get('measured_at', '?')} on {machine.get('cpu')} x{machine.get('cpu_count')} "
            f"(torch threads {machine.get('torch_threads')}), {machine.get('mem_gib')} GiB.\n\n")
    lines = ["| measure | value | target | met / note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return head + "\n".join(lines) + "\n"


README = BENCH_DIR / "README.md"
TABLE_START = "<!-- bench table: written by bench/run_all.py from bench/results/, do not edit by hand -->"
TABLE_END = "<!-- end of bench table -->"


def write_into_readme(text: str, readme: Path = README) -> None:
    """Replace the table between the markers in bench/README.md (the prose around it stays by hand)."""
    from ftpipe.files import write_text_atomic

    doc = readme.read_text()
    start, end = doc.find(TABLE_START), doc.find(TABLE_END)
    if start < 0 or end < start:
        log(f"{readme}: no table markers ({TABLE_START!r} ... {TABLE_END!r}); table not written there")
        return
    write_text_atomic(readme, doc[:start + len(TABLE_START)] + "\n" + text.rstrip("\n") + "\n" + doc[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=BENCHMARKS, action="append", help=f"repeatable; default: {', '.join(DEFAULT)}")
    ap.add_argument("--rounds", type=int, default=3, help="training A/B rounds (each: ftpipe and both reference sides)")
    ap.add_argument("--extra-rounds", "--grouped-rounds", dest="extra_rounds", type=int, default=2,
                    help="training rounds that also run the extra sides (ftpipe-packed, ftpipe-bf16)")
    ap.add_argument("--extra-sides", default=None, help="training sides besides the core three (see bench/train_ab.py)")
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
        todo = a.only or list(DEFAULT)
        spent = {}
        if "startup" in todo:
            spent["startup"] = run("startup", ["bench/startup.py", *(["--repeats", "2"] if a.quick else [])])
        if "evaluation" in todo:
            spent["evaluation"] = run("evaluation", ["bench/eval_bench.py", *(["--repeats", "1"] if a.quick else [])], env)
        if "training" in todo:
            args = ["bench/train_ab.py", "--driver", "--rounds", str(1 if a.quick else a.rounds), "--extra-rounds", str(a.extra_rounds)]
            if a.extra_sides is not None:
                args += ["--extra-sides", a.extra_sides]
            if a.quick:
                args += ["--steps", "4"]
            spent["training"] = run("training", args, env)
        if "gpu" in todo:
            spent["gpu"] = run("gpu", ["bench/gpu.py"])
        if "eval_speed" in todo:
            spent["eval_speed"] = run("eval_speed", ["bench/eval_speed.py", *(["--items", "2", "--rounds", "1"] if a.quick else [])], env)
        if "data" in todo:
            spent["data"] = run("data", ["bench/data_scale.py", *(["--rows", "2000", "--eval", "200", "--rounds", "1"] if a.quick else [])])
        log("wall per benchmark: " + ", ".join(f"{k} {v:.0f}s" for k, v in spent.items())
            + f"; total {time.perf_counter() - t0:.0f}s")
        if a.quick:
            log("--quick: tiny model, the numbers below mean nothing")
    text = table()
    (RESULTS / "table.md").write_text(text)
    if not a.quick and RESULTS == BENCH_DIR / "results":  # the README shows the kept results only
        write_into_readme(text)
    print(text)


if __name__ == "__main__":
    main()
