"""Evaluation speed-ups of issue 16, side by side in one run: KV-cache reuse against the paths it replaces.

Multiple choice (everyday_mc, the first ITEMS items, contexts and options built exactly as scoring.py builds them):
  * cached:     `LoadedModel.loglikelihood` (reuse_kv=True: each context once, options from its KV cache)
  * full:       `LoadedModel.loglikelihood` with reuse_kv=False (the previous path: one full row per option, batched)
  * plain loop: one unpadded transformers forward per (item, option), the naive reference loop
  Targets: cached >= 2x the plain loop; the same chosen option on every item; |dLL| < 1e-4.

Generation (ticket_routing and order_extraction, the first ITEMS items each, the task's max_new_tokens, the demo's
stop strings): `generate(batch_size=16)` with reuse_kv=True (the shared prompt prefix runs once per call, incl. that
prefix forward) against reuse_kv=False (plain left-padded batches). Target: >= 1.5x; identical texts.

Model: $BENCH_BASE_MODEL if set (run_all.py --quick: tiny-llama), else SmolLM2-135M-Instruct from the store if
present, else tiny-llama; float32 (--dtype) on the CPU, one torch thread. Both variants set `reuse_kv` explicitly
(it is on by default only in float32).
Times are the thread's CPU time (time.thread_time), which a busy machine disturbs much less than wall time (wall
time is recorded too); the variants alternate, ROUNDS rounds, medians compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEMO_SPEC, log, write_result  # noqa: E402

ITEMS = 16
ROUNDS = 3
BATCH_SIZE = 16
MC_TASK = "everyday_mc"
GEN_TASKS = ("ticket_routing", "order_extraction")
TARGETS = {"mc_cached_vs_plain_loop": 2.0, "generation_prefix_vs_plain_batched": 1.5}


def pick_model() -> tuple[str, str]:
    from ftpipe.models import store

    wanted = os.environ.get("BENCH_BASE_MODEL")  # run_all.py --quick sets tiny-llama
    for name in ([wanted] if wanted else [store.SMOLLM2, store.TINY_LLAMA]):
        try:
            return name, str(store.pull(name))  # a no-op when the store has it
        except Exception as exc:  # noqa: BLE001 - no network: try the next one
            log(f"{name} not available: {exc}")
    raise SystemExit("no model: neither $BENCH_BASE_MODEL nor smollm2-135m-instruct / tiny-llama is in the store")


def demo_tasks(model_name: str, base: str, n: int) -> tuple[dict, dict, list[str] | None]:
    """Items of the demo as the evaluator renders them: {task: (prompts, max_new_tokens)}, the MC items, stops."""
    from transformers import AutoConfig

    from ftpipe.data import load_tokenizer, prepare_data
    from ftpipe.spec import load_spec

    loaded = load_spec(DEMO_SPEC, [f"base_model={model_name}"])
    prepared = prepare_data(loaded, load_tokenizer(base),
                            int(getattr(AutoConfig.from_pretrained(base), "max_position_embeddings", 2048)))
    gen = loaded.spec.generation
    tasks = {t.task.name: t for t in prepared.eval_tasks()}
    generation = {name: ([i.prompt for i in tasks[name].eval_items[:n]], tasks[name].task.max_new_tokens or gen.max_new_tokens)
                  for name in GEN_TASKS}
    return generation, tasks[MC_TASK].eval_items[:n], gen.stop or None


def mc_pairs(items) -> tuple[list[str], list[str]]:
    contexts = [it.prompt for it in items for _ in it.choices]  # as ftpipe.evaluation.scoring builds them
    conts = [c if it.prompt.endswith(("\n", " ")) else " " + c for it in items for c in it.choices]
    return contexts, conts


def plain_loop(lm, contexts: list[str], conts: list[str]) -> list[tuple[float, int]]:
    """The naive reference: one unpadded forward per pair, same token boundary as ftpipe."""
    import torch

    out = []
    for ctx, cont in zip(contexts, conts):
        c, o = lm._continuation_request(ctx, cont)
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([c + o[:-1]], device=lm.device)).logits[0, len(c) - 1:]
        logp = torch.log_softmax(logits.float(), -1)
        out.append((float(logp.gather(-1, torch.tensor(o, device=logp.device)[:, None]).sum()), len(o)))
    return out


def chosen(items, lls) -> list[int]:
    picks, k = [], 0
    for it in items:
        n = len(it.choices)
        picks.append(max(range(n), key=lambda j: lls[k + j][0]))
        k += n
    return picks


def timed(fn):
    c, w = time.thread_time(), time.perf_counter()
    result = fn()
    return time.thread_time() - c, time.perf_counter() - w, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=ITEMS)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--dtype", default="float32", help="bfloat16 measures the opt-in 16-bit case (not identical there)")
    ap.add_argument("--out", type=Path, help="write here instead of bench/results/eval_speed.json")
    a = ap.parse_args()
    import torch

    from ftpipe.console import quiet_libraries
    from ftpipe.evaluation.generation import ModelSpec, load_model

    quiet_libraries()
    torch.set_num_threads(1)
    model_name, base = pick_model()
    generation, mc_items, stop = demo_tasks(model_name, base, a.items)
    lm = load_model(ModelSpec(base_path=base, device="cpu", dtype=a.dtype))
    contexts, conts = mc_pairs(mc_items)

    def ll(reuse: bool):
        lm.reuse_kv = reuse
        return lm.loglikelihood(contexts, conts, batch_size=BATCH_SIZE)

    def gen(reuse: bool):
        lm.reuse_kv = reuse
        return {name: lm.generate(p, max_new_tokens=m, batch_size=BATCH_SIZE, stop=stop) for name, (p, m) in generation.items()}

    variants = {
        "mc_cached": lambda: ll(True), "mc_full": lambda: ll(False), "mc_plain_loop": lambda: plain_loop(lm, contexts, conts),
        "gen_prefix": lambda: gen(True), "gen_plain_batched": lambda: gen(False),
    }
    # Warm-up: the first forward passes pay for allocation and kernel selection.
    lm.generate(generation[GEN_TASKS[0]][0][:4], max_new_tokens=2, batch_size=4)
    lm.loglikelihood(contexts[:8], conts[:8], batch_size=8)
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    results: dict = {}
    names = list(variants)
    for r in range(a.rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            c, w, results[k] = timed(variants[k])
            cpu[k].append(round(c, 3))
            wall[k].append(round(w, 3))
        log(f"round {r + 1}: " + ", ".join(f"{k} {cpu[k][-1]:.1f}s" for k in names))
    lm.reuse_kv = True
    med = {k: statistics.median(v) for k, v in cpu.items()}
    ref = results["mc_full"]
    d_full = [abs(x[0] - y[0]) for x, y in zip(results["mc_cached"], ref)]
    d_loop = [abs(x[0] - y[0]) for x, y in zip(results["mc_cached"], results["mc_plain_loop"])]
    same_choice = chosen(mc_items, results["mc_cached"]) == chosen(mc_items, ref) == chosen(mc_items, results["mc_plain_loop"])
    gp, gb = results["gen_prefix"], results["gen_plain_batched"]
    same_texts = {name: sum(x == y for x, y in zip(gp[name], gb[name])) for name in gp}
    enc = {name: [len(lm._encode(x)) for x in p] for name, (p, _) in generation.items()}
    shared = {name: lm._shared_prefix_cache([lm._encode(x) for x in p], [s for s in stop or [] if s])[0]
              for name, (p, _) in generation.items()}
    ratios = {
        "mc_cached_vs_plain_loop": med["mc_plain_loop"] / med["mc_cached"],
        "mc_cached_vs_full": med["mc_full"] / med["mc_cached"],
        "mc_full_vs_plain_loop": med["mc_plain_loop"] / med["mc_full"],
        "generation_prefix_vs_plain_batched": med["gen_plain_batched"] / med["gen_prefix"],
    }
    identical = {"mc_cached_vs_plain_loop": same_choice, "mc_cached_vs_full": same_choice,
                 "generation_prefix_vs_plain_batched": all(v == len(gp[n]) for n, v in same_texts.items())}
    checks = {k: {"ratio": round(v, 2), "target": TARGETS.get(k), "identical": identical.get(k),
                  "met": (v >= TARGETS[k] and bool(identical[k])) if k in TARGETS else None} for k, v in ratios.items()}
    payload = {
        "what": "KV-cache reuse in evaluation (issue 16): MC from the context cache, generation from a shared-prefix cache",
        "settings": {"model": model_name, "dtype": lm.dtype, "device": lm.device, "torch_threads": 1, "items": a.items,
                     "mc_pairs": len(contexts), "mc_task": MC_TASK, "generation_tasks": list(GEN_TASKS),
                     "max_new_tokens": {n: m for n, (_, m) in generation.items()}, "stop": stop, "batch_size": BATCH_SIZE,
                     "rounds": a.rounds, "clock": "time.thread_time (CPU), medians"},
        "mc_context_tokens": [min(len(lm._encode(i.prompt)) for i in mc_items), max(len(lm._encode(i.prompt)) for i in mc_items)],
        "generation_prompt_tokens": {n: [min(v), max(v)] for n, v in enc.items()},
        "generation_shared_prefix_tokens": shared,
        "cpu_s": cpu, "wall_s": wall, "cpu_s_median": {k: round(v, 3) for k, v in med.items()},
        "checks": checks,
        "mc_max_abs_dll_vs_full": max(d_full), "mc_max_abs_dll_vs_plain_loop": max(d_loop),
        "mc_same_choice_all_three": same_choice,
        "generation_identical_rows": same_texts,
    }
    for k, v in checks.items():
        log(f"{k}: {v['ratio']}x (target {v['target']}) identical={v['identical']} met={v['met']}")
    log(f"MC max |dLL| vs full {max(d_full):.2e}, vs plain loop {max(d_loop):.2e}; shared prefixes {shared}")
    if a.out:
        a.out.write_text(json.dumps(payload, indent=2))
    else:
        log(f"wrote {write_result('eval_speed', payload)}")


if __name__ == "__main__":
    main()
