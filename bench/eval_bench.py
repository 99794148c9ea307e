"""Evaluation: batched against one-by-one greedy generation on the same demo items (same model, same limits).

Items: the first ITEMS_PER_TASK evaluation items of each free-generation task of pipelines/demo.yaml
(ticket_routing, order_extraction, capitals, word_opposites), rendered exactly as the evaluator renders
them (`prepare_data`), each with its task's max_new_tokens. Model: the base SmolLM2-135M-Instruct through
`ftpipe.evaluation.generation.load_model`, the evaluator's loader. Batched = `generate(batch_size=B)` with
B = `evaluation.batch_size`'s default (read from the schema, 64); one-by-one = `generate(batch_size=1)`;
also the previous default, batch 16 (before 2026-12-02), to show what the larger default buys. They
alternate, batched first and last (REPEATS one-by-one passes, REPEATS + 1 batched, after warm-up calls of
each shape), medians compared; the texts must be identical (fp32 greedy).

Also reported: the demo's total evaluation time (base + tuned + few-shot base on five tasks), read from
the newest successful demo run's manifest under ./runs (or $FTPIPE_RUNS, or BENCH_DEMO_RUNS).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEMO_SPEC, REPO, log, median, write_result  # noqa: E402

ITEMS_PER_TASK = 48  # a task's items fill most of a default batch, as the demo's 80 do
OLD_BATCH_SIZE = 16  # evaluation.batch_size's default until 2026-12-02
REPEATS = 1
MODEL = os.environ.get("BENCH_BASE_MODEL", "smollm2-135m-instruct")


def demo_items() -> list[dict]:
    from ftpipe.models import store
    from ftpipe.data import load_tokenizer, prepare_data
    from ftpipe.spec import load_spec
    from transformers import AutoConfig

    base = str(store.pull(MODEL))
    loaded = load_spec(DEMO_SPEC, [f"base_model={MODEL}"])
    tok = load_tokenizer(base)
    prepared = prepare_data(loaded, tok, int(getattr(AutoConfig.from_pretrained(base), "max_position_embeddings", 2048)))
    gen = loaded.spec.generation
    items = []
    for t in prepared.eval_tasks():
        if t.task.kind in ("multiple_choice", "perplexity"):
            continue
        for item in t.eval_items[:ITEMS_PER_TASK]:
            items.append({"task": t.task.name, "prompt": item.prompt, "max_new_tokens": t.task.max_new_tokens or gen.max_new_tokens})
    return items, base, gen.stop or None


def timed_generate(model, items: list[dict], batch_size: int, stop) -> tuple[float, list[str]]:
    """Generate every item, task by task (as the evaluator does), and return (seconds, texts)."""
    outputs: list[str] = []
    t = time.perf_counter()
    tasks: dict[str, list[dict]] = {}
    for it in items:
        tasks.setdefault(it["task"], []).append(it)
    for task_items in tasks.values():
        outputs += model.generate([i["prompt"] for i in task_items], max_new_tokens=task_items[0]["max_new_tokens"],
                                  batch_size=batch_size, stop=stop)
    return time.perf_counter() - t, outputs


def newest_demo_eval() -> dict:
    roots = [Path(p) for p in (os.environ.get("BENCH_DEMO_RUNS"), os.environ.get("FTPIPE_RUNS"), str(REPO / "runs")) if p]
    best = None
    for root in roots:
        for manifest in (root / "demo").glob("*/manifest.json"):
            try:
                m = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if m.get("status") == "succeeded" and "evaluate" in (m.get("timings") or {}):
                if best is None or m.get("started_at", "") > best[1].get("started_at", ""):
                    best = (manifest.parent, m)
    if best is None:
        return {"measured": False, "searched": [str(r) for r in roots],
                "note": "no successful demo run found: run `make demo` (or `ftpipe run pipelines/demo.yaml`) first"}
    run_dir, m = best
    out = {"measured": True, "run_dir": str(run_dir), "started_at": m.get("started_at"), "timings_s": m.get("timings"),
           "evaluate_s": m["timings"]["evaluate"], "device": m.get("device")}
    data = run_dir / "data_summary.json"
    if data.exists():
        out["eval_items"] = json.loads(data.read_text()).get("eval_items")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--out", type=Path, help="write here instead of bench/results/evaluation.json")
    a = ap.parse_args()
    from ftpipe.console import quiet_libraries

    quiet_libraries()
    from ftpipe.evaluation.generation import ModelSpec, load_model
    from ftpipe.spec.schema import EvaluationSpec

    batch_size = EvaluationSpec.model_fields["batch_size"].default
    items, base, stop = demo_items()
    t = time.perf_counter()
    model = load_model(ModelSpec(base_path=base, device="cpu"))
    load_s = time.perf_counter() - t
    # Warm-up of every shape (the first large-batch forward passes are much slower: allocator, kernel choice).
    warm = [i["prompt"] for i in items[:batch_size]]
    for size in (batch_size, OLD_BATCH_SIZE):
        model.generate(warm[:size], max_new_tokens=8, batch_size=size)
    model.generate(warm[:2], max_new_tokens=8, batch_size=1)
    batched_s, old_s, single_s, texts_b, texts_o, texts_s = [], [], [], None, None, None
    # Alternate B O S B O S B: batched is cheap, so it gets one more repeat than the others.
    for r in range(a.repeats + 1):
        s, texts_b = timed_generate(model, items, batch_size, stop)
        batched_s.append(round(s, 3))
        log(f"evaluation rep {r + 1}: batched ({batch_size}) {s:.1f}s")
        if r == a.repeats:
            break
        s, texts_o = timed_generate(model, items, OLD_BATCH_SIZE, stop)
        old_s.append(round(s, 3))
        log(f"evaluation rep {r + 1}: batch {OLD_BATCH_SIZE} {s:.1f}s")
        s, texts_s = timed_generate(model, items, 1, stop)
        single_s.append(round(s, 3))
        log(f"evaluation rep {r + 1}: one-by-one {s:.1f}s")
    new_tokens = sum(len(model.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in texts_b)
    # Where the time goes: the prompts' own tokens (prefill: the same work batched or not) against decoding.
    prefill = {}
    for name, size in (("batched", batch_size), ("batch_16", OLD_BATCH_SIZE), ("one_by_one", 1)):
        prefill[name] = round(timed_generate(model, [{**i, "max_new_tokens": 1} for i in items], size, stop)[0], 3)
        log(f"evaluation prefill only (1 new token): {name} {prefill[name]:.1f}s")
    b, o, s1 = median(batched_s), median(old_s), median(single_s)
    payload = {
        "what": "batched vs one-by-one greedy generation on the same demo items",
        "settings": {"model": MODEL, "dtype": model.dtype, "device": model.device, "items": len(items),
                     "items_per_task": ITEMS_PER_TASK, "tasks": sorted({i["task"] for i in items}),
                     "max_new_tokens": {i["task"]: i["max_new_tokens"] for i in items}, "batch_size": batch_size,
                     "old_batch_size": OLD_BATCH_SIZE,
                     "repeats_one_by_one": a.repeats, "repeats_batched": a.repeats + 1, "generator": "ftpipe.evaluation.generation.LoadedModel.generate"},
        "model_load_s": round(load_s, 2),
        "batched_s": batched_s,
        "one_by_one_s": single_s,
        "batched_s_median": b,
        "batch_16_s": old_s,
        "batch_16_s_median": o,
        "over_batch_16": round(o / b, 2),
        "identical_to_batch_16": texts_b == texts_o,
        "one_by_one_s_median": s1,
        "speedup": round(s1 / b, 2),
        "target_speedup_min": 6.0,  # issue 16
        "prefill_only_s": prefill,
        "decode_s": {"batched": round(b - prefill["batched"], 3), "batch_16": round(o - prefill["batch_16"], 3),
                     "one_by_one": round(s1 - prefill["one_by_one"], 3)},
        "identical_outputs": texts_b == texts_s,
        "differing_outputs": sum(x != y for x, y in zip(texts_b, texts_s)),
        "new_tokens_batched_reencoded": new_tokens,
        "items_per_s_batched": round(len(items) / b, 2),
        "items_per_s_one_by_one": round(len(items) / s1, 2),
        "demo_evaluation": newest_demo_eval(),
    }
    if a.out:
        a.out.write_text(json.dumps(payload, indent=2))
    else:
        log(f"wrote {write_result('evaluation', payload)}")


if __name__ == "__main__":
    main()
