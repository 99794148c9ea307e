"""Training throughput: `ftpipe run` (Ludwig) against a plain transformers + PEFT loop, A/B alternated.

Both sides train the same LoRA job: SmolLM2-135M-Instruct, the same training rows (the demo spec with
48 rows per task = 96 rows, one epoch of 12 steps at batch 8), LoRA r/alpha/dropout/target modules
as Ludwig resolved them, AdamW at the same lr with the same warmup + linear decay, loss on target
tokens (+ EOS) only, fp32 on CPU, same torch thread count.

Each trial runs in its own process. What is timed, on both sides: the wall time between the end of
training step `warmup` and the end of the last step (every step after the warm-up ones), i.e.
everything a training loop does per step (batching, forward, loss, metrics, backward, optimizer,
scheduler, logging), and none of the set-up (imports, preprocessing, model load) or saving.
Real tokens = non-padding tokens of the batches in that window; tokens/s = real tokens / seconds.
Padding share = padding / (batch x longest row) over the whole epoch.

The first ftpipe trial records the exact batches Ludwig formed (token ids, in order) and the learning
rate of every step; the reference trials replay exactly those batches and rates (and clip the global
gradient norm at 0.5, Ludwig's default), so both sides see the same rows in the same order with the same
padding. Check: with full fine-tuning (no dropout) on the tiny Llama, the reference's losses equal
Ludwig's to 4 decimals at every step; with LoRA they agree at step 1 and then differ by dropout noise.

Variants (the driver runs ftpipe, reference, ftpipe-grouped-lean, reference-grouped by default):
  ftpipe               `run_pipeline(demo.yaml, overrides, evaluate=False)`, as shipped.
  reference            plain loop, Ludwig's batches (random order, padded to the longest row).
  reference-grouped    plain loop, the same rows sorted by length into batches (batch order shuffled).
  ftpipe-grouped       PROTOTYPE, not shipped: ftpipe with the training frame pre-ordered into
                       length-sorted batches and Ludwig's `trainer.should_shuffle: false`, done by
                       patching ftpipe.data.training_frame and ftpipe.compile.compile_spec in this
                       process only: what length grouping gives inside Ludwig. Its batches are
                       exactly reference-grouped's.
  ftpipe-lean          PROTOTYPE: ftpipe with Ludwig's per-step training metrics switched off
                       (`trainer._update_training_metrics` replaced by a no-op from a callback).
  ftpipe-grouped-lean  both prototypes together.

Worker:  python bench/train_ab.py --side ftpipe --out trial.json [--record-batches b.json]
Driver:  python bench/train_ab.py --driver [--rounds 3]   (writes bench/results/training.json)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEMO_SPEC, RESULTS, log, median, run_json_subprocess, write_result  # noqa: E402

ROWS_PER_TASK = 48
BATCH_SIZE = 8  # the demo's
STEPS = 12  # = one epoch of 96 rows at batch 8
WARMUP_STEPS = 2  # not timed
PAD_ID = 0  # ftpipe's stored tokenizers pad with <|endoftext|> (id 0), which never occurs in text
# BENCH_BASE_MODEL (a store name or a local HF folder; tiny-llama for smoke tests), BENCH_DEVICE (cpu or
# cuda) and BENCH_ADAPTER (lora, full or qlora) change the job on both sides; bench/gpu.py sets them.
BASE_MODEL = os.environ.get("BENCH_BASE_MODEL", "smollm2-135m-instruct")
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
ADAPTER = os.environ.get("BENCH_ADAPTER", "lora")
ADAPTER_OVERRIDES = {"lora": [], "full": ["adapter={type: full}"],
                     "qlora": ["adapter={type: qlora, r: 8, alpha: 16, bits: 4, compute_dtype: bfloat16}"]}


def overrides(steps: int) -> list[str]:
    return [f"tasks.0.max_train_rows={ROWS_PER_TASK}", f"tasks.1.max_train_rows={ROWS_PER_TASK}",
            "training.epochs=1", f"training.max_steps={steps}", "training.evaluate_during_training=false",
            "evaluation.few_shot=0", f"base_model={BASE_MODEL}", f"compute.device={DEVICE}", *ADAPTER_OVERRIDES[ADAPTER]]


def batch_stats(lengths_per_batch: list[list[int]]) -> dict:
    real = sum(sum(b) for b in lengths_per_batch)
    total = sum(len(b) * max(b) for b in lengths_per_batch)
    return {"real_tokens": real, "padded_tokens": total, "padding_share": round(1 - real / total, 4) if total else None}


def summarize_steps(step_ends: list[float], step_lengths: list[list[int]], warmup: int, components: dict | None = None) -> dict:
    """Tokens/s over steps warmup+1..N (interval between the end of step `warmup` and the end of step N)."""
    n = len(step_ends)
    window = list(range(warmup, n))  # indices of timed steps
    seconds = step_ends[-1] - step_ends[warmup - 1] if warmup >= 1 else None
    real = sum(sum(step_lengths[i]) for i in window)
    padded = sum(len(step_lengths[i]) * max(step_lengths[i]) for i in window)
    intervals = [step_ends[i] - step_ends[i - 1] for i in range(max(1, warmup), n)]
    out = {
        "steps": n,
        "timed_steps": len(window),
        "timed_seconds": round(seconds, 3),
        "real_tokens_timed": real,
        "padded_tokens_timed": padded,
        "real_tokens_per_s": round(real / seconds, 2),
        "padded_tokens_per_s": round(padded / seconds, 2),
        "s_per_step": round(seconds / len(window), 4),
        "step_seconds": [round(x, 4) for x in intervals],
        "epoch": batch_stats(step_lengths),
    }
    if components:
        out["component_s_per_step"] = {k: round(sum(v[warmup:]) / len(window), 4) for k, v in components.items() if len(v) >= n}
    return out


# =============================================================================== ftpipe side


def _sync() -> None:
    if DEVICE == "cuda":
        import torch

        torch.cuda.synchronize()


def _peak_memory_gib() -> float | None:
    if DEVICE != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def _timing_callback(record: dict, lean: bool = False):
    """A Ludwig callback recording, per step: end time, batch lengths, ids (optional), component times."""
    from ftpipe.training.ludwig_compat import import_ludwig

    import_ludwig()
    from ludwig.callbacks import Callback

    comps: dict[str, list[float]] = {k: [] for k in ("train_step", "forward_pass", "hf_model_forward", "train_loss",
                                                      "backward", "optimizer_step", "training_metrics")}
    record["components"] = comps

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                comps[name].append(time.perf_counter() - t)
        return wrapper

    class _Timing(Callback):
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            import torch

            record["t_train_setup"] = time.perf_counter()
            record["torch_threads_in_trainer"] = torch.get_num_threads()
            llm = trainer.model
            record["hf_model_class"] = type(llm.model).__name__
            record["attn_implementation"] = getattr(getattr(llm.model, "config", None), "_attn_implementation", None)
            hf = llm.model
            hf.forward = timed("hf_model_forward", hf.forward)
            llm.train_loss = timed("train_loss", llm.train_loss)
            trainer._forward_pass = timed("forward_pass", trainer._forward_pass)
            trainer._backward_pass = timed("backward", trainer._backward_pass)
            trainer._optimizer_step = timed("optimizer_step", trainer._optimizer_step)
            if lean:  # PROTOTYPE: skip Ludwig's per-step training metrics (ftpipe records the loss itself)
                trainer._update_training_metrics = lambda *a, **kw: None
            trainer._update_training_metrics = timed("training_metrics", trainer._update_training_metrics)
            original = trainer.train_step

            def train_step(*a, **kw):
                t = time.perf_counter()
                result = original(*a, **kw)
                comps["train_step"].append(time.perf_counter() - t)
                record["losses"].append(round(float(result[0].detach()), 4))
                ids = llm.model_inputs.detach().cpu()
                rows = []
                for row in ids.tolist():
                    start = next((j for j, tok in enumerate(row) if tok != PAD_ID), len(row))
                    rows.append(row[start:])
                record["lengths"].append([len(r) for r in rows])
                record["widths"].append(int(ids.shape[1]))
                if record["keep_ids"]:
                    record["batches"].append(rows)
                return result

            trainer.train_step = train_step

        def on_batch_start(self, trainer, progress_tracker, save_path, **kwargs):
            record["lrs"].append(trainer.optimizer.param_groups[0]["lr"])
            if "t_first_batch_start" not in record:
                record["t_first_batch_start"] = time.perf_counter()

        def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True, **kwargs):
            _sync()
            record["step_ends"].append(time.perf_counter())

    return _Timing()


def _install_grouping_patches(seed: int, batch_size: int) -> None:
    """PROTOTYPE of length-grouped batching inside Ludwig (this process only; ftpipe is not changed).

    Rows are sorted by token count and cut into batches, the batch order is shuffled (seeded), and
    Ludwig is told not to shuffle (`trainer.should_shuffle: false`, a key the finetune trainer keeps),
    so its sequential batcher forms exactly these batches.
    """
    import types

    import ftpipe.training.compile as compile_mod
    import ftpipe.data as data_mod

    original_frame, original_compile = data_mod.training_frame, compile_mod.compile_spec

    def grouped_frame(prepared):
        train = [r for r in prepared.train_rows if r["split"] == "train"]
        rest = [r for r in prepared.train_rows if r["split"] != "train"]
        train.sort(key=lambda r: r["tokens"])
        groups = [train[i: i + batch_size] for i in range(0, len(train), batch_size)]
        random.Random(seed).shuffle(groups)
        return original_frame(types.SimpleNamespace(train_rows=[r for g in groups for r in g] + rest))

    def compile_no_shuffle(spec, ctx):
        config = original_compile(spec, ctx)
        config["trainer"]["should_shuffle"] = False
        return config

    data_mod.training_frame = grouped_frame
    compile_mod.compile_spec = compile_no_shuffle


def run_ftpipe_side(steps: int, record_batches: Path | None, grouped: bool, lean: bool = False) -> dict:
    from ftpipe import console
    from ftpipe.training import ludwig_compat
    from ftpipe.lifecycle import run_pipeline

    console.quiet_libraries()
    record = {"step_ends": [], "losses": [], "lrs": [], "lengths": [], "widths": [], "batches": [], "keep_ids": record_batches is not None}
    callback = _timing_callback(record, lean=lean)
    original_train_model = ludwig_compat.train_model

    def train_model_with_timing(*a, callbacks=None, **kw):
        return original_train_model(*a, callbacks=[*(callbacks or []), callback], **kw)

    ludwig_compat.train_model = train_model_with_timing
    if grouped:
        _install_grouping_patches(seed=42, batch_size=BATCH_SIZE)
    root = Path(tempfile.mkdtemp(prefix="ftpipe-bench-runs-"))
    os.environ["FTPIPE_HISTORY_DB"] = str(root / "history.sqlite")  # keep the user's run history clean
    t0 = time.perf_counter()
    result = run_pipeline(DEMO_SPEC, overrides(steps), root=root, evaluate=False)
    wall = time.perf_counter() - t0
    run_dir = result.run_dir
    progress = json.loads((run_dir / "training" / "_ludwig" / "experiment_run" / "model" / "training_progress.json").read_text())
    adapter_file = run_dir / "adapter" / "adapter_config.json"
    adapter_cfg = json.loads(adapter_file.read_text()) if adapter_file.exists() else {}
    import yaml

    resolved = yaml.safe_load((run_dir / "ludwig_config.resolved.yaml").read_text())
    trainer_cfg = resolved["trainer"]
    out = summarize_steps(record["step_ends"], record["lengths"], WARMUP_STEPS, record["components"])
    order_digest = hashlib.sha256(json.dumps(record["lengths"]).encode()).hexdigest()[:16]
    out.update({
        "side": "ftpipe" + ("-grouped" if grouped else "") + ("-lean" if lean else ""),
        "run_dir": str(run_dir),
        "pipeline_wall_s": round(wall, 2),
        "stage_timings_s": result.manifest.timings,
        "setup_s_before_first_batch": round(record["t_first_batch_start"] - t0, 2),
        "torch_threads_in_trainer": record.get("torch_threads_in_trainer"),
        "attn_implementation": record.get("attn_implementation"),
        "ludwig_steps": progress.get("steps"),
        "ludwig_total_tokens_used": progress.get("total_tokens_used"),
        "losses": record["losses"],
        "learning_rates": record["lrs"],
        "batch_lengths": record["lengths"],
        "batch_order_digest": order_digest,
        "lora": {k: adapter_cfg.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias")},
        "trainer": {**{k: trainer_cfg.get(k) for k in ("batch_size", "learning_rate", "should_shuffle", "train_steps", "epochs",
                                                         "use_mixed_precision", "gradient_clipping")},
                    "optimizer": {k: trainer_cfg["optimizer"].get(k) for k in ("type", "betas", "eps", "weight_decay")},
                    "learning_rate_scheduler": {k: trainer_cfg["learning_rate_scheduler"].get(k) for k in ("decay", "warmup_fraction")}},
        "seed": result.manifest.seed,
        "device": DEVICE, "adapter": ADAPTER, "base_model": BASE_MODEL, "peak_memory_gib": _peak_memory_gib(),
    })
    if not os.environ.get("BENCH_KEEP_RUNS"):
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    if record_batches is not None:
        record_batches.write_text(json.dumps({"batches": record["batches"], "lora": out["lora"], "trainer": out["trainer"],
                                              "quantization": resolved.get("quantization") or {},
                                              "learning_rates": record["lrs"],
                                              "base_model": result.manifest.base_model, "seed": result.manifest.seed}))
    return out


# =============================================================================== reference side


def _demo_rows(tokenizer, base_path: str) -> list[dict]:
    """The training rows ftpipe hands Ludwig (same spec, same overrides), tokenized as Ludwig does."""
    from ftpipe.data import prepare_data
    from ftpipe.spec import load_spec
    from transformers import AutoConfig

    loaded = load_spec(DEMO_SPEC, overrides(STEPS))
    ctx = int(getattr(AutoConfig.from_pretrained(base_path), "max_position_embeddings", 2048))
    prepared = prepare_data(loaded, tokenizer, ctx)
    rows = []
    for r in prepared.train_rows:
        if r["split"] != "train":
            continue
        p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        t = tokenizer(r["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append({"ids": p + t, "prompt_len": len(p)})
    return rows


def reference_batches(rows: list[dict], recorded: dict | None, grouped: bool, steps: int, seed: int) -> tuple[list[list[dict]], dict]:
    """Batches for the plain loop: Ludwig's recorded batches (mapped back to rows), or grouped by length."""
    by_ids = {tuple(r["ids"]): r for r in rows}
    info: dict = {}
    if recorded is not None:
        batches, missing = [], 0
        for b in recorded["batches"]:
            mapped = [by_ids.get(tuple(ids)) for ids in b]
            missing += sum(m is None for m in mapped)
            batches.append([m for m in mapped if m is not None])
        info["rows_not_matched_to_ludwig"] = missing
        info["order"] = "ludwig's recorded batches"
        used = [r for b in batches for r in b]
    else:
        rng = random.Random(seed)
        used = rows[:]
        rng.shuffle(used)
        batches = [used[i: i + BATCH_SIZE] for i in range(0, len(used), BATCH_SIZE)]
        info["order"] = "seeded shuffle (no recorded batches)"
    if grouped:
        # Rows in prepare_data order, stably sorted by length, cut, then shuffled with the seed: the very
        # batches the ftpipe-grouped prototype gives Ludwig (its sort key, row["tokens"], is this length).
        used_ids = {id(r) for r in used}
        srt = sorted([r for r in rows if id(r) in used_ids], key=lambda r: len(r["ids"]))
        batches = [srt[i: i + BATCH_SIZE] for i in range(0, len(srt), BATCH_SIZE)]
        random.Random(seed).shuffle(batches)
        info["order"] = "same rows, sorted by length into batches, batch order shuffled"
    return batches[:steps], info


def run_reference_side(steps: int, batches_file: Path | None, grouped: bool) -> dict:
    import torch
    from ftpipe.models import store
    from ftpipe.console import quiet_libraries
    from ftpipe.data import load_tokenizer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    quiet_libraries()
    recorded = json.loads(batches_file.read_text()) if batches_file else None
    base_path = recorded["base_model"] if recorded else (BASE_MODEL if Path(BASE_MODEL).is_dir() else str(store.pull(BASE_MODEL)))
    lora = recorded["lora"] if recorded else {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "bias": "none"}
    trainer_cfg = recorded["trainer"] if recorded else {"learning_rate": 1e-3, "optimizer": {"weight_decay": 0.0},
                                                        "learning_rate_scheduler": {"warmup_fraction": 0.05}}
    seed = recorded["seed"] if recorded else 42
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(base_path)
    rows = _demo_rows(tokenizer, base_path)
    batches, info = reference_batches(rows, recorded, grouped, steps, seed)
    torch.manual_seed(seed)
    load_kwargs: dict = {"dtype": torch.float32}
    if ADAPTER == "qlora":  # as Ludwig loads it: bitsandbytes 4-bit, compute dtype from the config
        from transformers import BitsAndBytesConfig

        compute = getattr(torch, (recorded or {}).get("quantization", {}).get("bnb_4bit_compute_dtype", "bfloat16"))
        load_kwargs = {"dtype": compute, "device_map": {"": 0} if DEVICE == "cuda" else None,
                       "quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                                 bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)}
    model = AutoModelForCausalLM.from_pretrained(base_path, **load_kwargs)
    if ADAPTER != "qlora":
        model = model.to(DEVICE)
    if ADAPTER != "full":
        model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
                                                 target_modules=lora["target_modules"], bias=lora.get("bias") or "none",
                                                 task_type="CAUSAL_LM"))
    model.train()
    # Ludwig on CUDA: fp32 weights + fp16 autocast with a grad scaler when use_mixed_precision is on.
    amp = DEVICE == "cuda" and bool((recorded or {}).get("trainer", {}).get("use_mixed_precision"))
    scaler = torch.amp.GradScaler("cuda") if amp else None
    opt_cfg = trainer_cfg.get("optimizer") or {}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=trainer_cfg["learning_rate"], weight_decay=opt_cfg.get("weight_decay", 0.0) or 0.0,
                                  betas=tuple(opt_cfg.get("betas") or (0.9, 0.999)), eps=opt_cfg.get("eps") or 1e-8)
    clip = ((trainer_cfg.get("gradient_clipping") or {}).get("clipglobalnorm") if recorded else 0.5)
    warm = max(1, round((trainer_cfg.get("learning_rate_scheduler") or {}).get("warmup_fraction", 0.0) * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))

    def collate(batch):
        width = max(len(r["ids"]) for r in batch)
        ids = torch.full((len(batch), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["ids"])
            ids[i, :n] = torch.tensor(r["ids"])
            mask[i, :n] = 1
            labels[i, r["prompt_len"]:n] = torch.tensor(r["ids"][r["prompt_len"]:])
        return ids, mask, labels

    comps: dict[str, list[float]] = {"forward_with_loss": [], "backward": [], "optimizer_step": []}
    step_ends, lengths, losses, lrs = [], [], [], []
    setup = time.perf_counter() - t0
    # Ludwig's learning rate of every step, as recorded (its warmup + decay schedule), else the LambdaLR above.
    replay_lrs = (recorded or {}).get("learning_rates") or None
    for step, batch in enumerate(batches):
        ids, mask, labels = (x.to(DEVICE) for x in collate(batch))
        t = time.perf_counter()
        if amp:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        else:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        _sync()
        t1 = time.perf_counter()
        (scaler.scale(loss) if amp else loss).backward()
        _sync()
        t2 = time.perf_counter()
        if replay_lrs is not None and step < len(replay_lrs):
            for group in optimizer.param_groups:
                group["lr"] = replay_lrs[step]
        lrs.append(optimizer.param_groups[0]["lr"])
        if amp:
            scaler.unscale_(optimizer)
        if clip:  # Ludwig's default: clip the global gradient norm at 0.5 (ftpipe leaves it at that)
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        if amp:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        _sync()
        t3 = time.perf_counter()
        comps["forward_with_loss"].append(t1 - t)
        comps["backward"].append(t2 - t1)
        comps["optimizer_step"].append(t3 - t2)
        losses.append(round(float(loss.detach()), 4))
        lengths.append([len(r["ids"]) for r in batch])
        step_ends.append(time.perf_counter())
    out = summarize_steps(step_ends, lengths, WARMUP_STEPS, comps)
    out.update({"side": "reference-grouped" if grouped else "reference", "setup_s": round(setup, 2), "batches": info,
                "torch_threads": torch.get_num_threads(), "losses": losses, "learning_rates": lrs, "grad_clip_global_norm": clip, "batch_lengths": lengths,
                "attn_implementation": getattr(model.config, "_attn_implementation", None),
                "lora": lora, "seed": seed, "device": DEVICE, "adapter": ADAPTER, "autocast_fp16": amp,
                "peak_memory_gib": _peak_memory_gib()})
    return out


# =============================================================================== driver


def _same_grouped_batches(by_side: dict[str, list[dict]]) -> bool | None:
    """Did the grouped ftpipe prototype and the grouped reference get batches of the same row lengths, in order?"""
    ref = by_side.get("reference-grouped")
    ft = next((by_side[s] for s in ("ftpipe-grouped-lean", "ftpipe-grouped") if s in by_side), None)
    if not ref or not ft:
        return None
    return [sorted(b) for b in ref[0]["batch_lengths"]] == [sorted(b) for b in ft[0]["batch_lengths"]]


EXTRA_SIDES = ("ftpipe-grouped-lean", "reference-grouped")


def drive(rounds: int, steps: int, grouped_rounds: int | None = None, extra_sides: tuple[str, ...] = EXTRA_SIDES) -> dict:
    """Alternate the sides in fresh processes: ftpipe, reference, *extra_sides, ... x rounds.

    The first ftpipe trial records Ludwig's batches, which every reference trial then replays.
    `grouped_rounds`: how many of the rounds also run the extra sides (default: all).
    """
    work = Path(tempfile.mkdtemp(prefix="ftpipe-bench-ab-"))
    batches_file = work / "ludwig_batches.json"
    here = str(Path(__file__).resolve())
    grouped_rounds = rounds if grouped_rounds is None else grouped_rounds
    trials: list[dict] = []
    t_start = time.perf_counter()
    for r in range(rounds):
        plan = [("ftpipe", r == 0), ("reference", False)]
        if r < grouped_rounds:
            plan += [(side, False) for side in extra_sides]
        for side, record in plan:
            args = [here, "--side", side, "--steps", str(steps)]
            if record:
                args += ["--record-batches", str(batches_file)]
            elif side.startswith("reference"):
                args += ["--batches", str(batches_file)]
            log(f"training A/B round {r + 1}/{rounds}: {side}")
            out = run_json_subprocess(args, work / f"{side}-{r}.json", timeout=900)
            out["round"] = r + 1
            trials.append(out)
            log(f"  {side}: {out['real_tokens_per_s']:.0f} real tok/s, {out['s_per_step']:.2f} s/step, "
                f"padding {out['epoch']['padding_share']:.1%}")
    by_side: dict[str, list[dict]] = {}
    for t in trials:
        by_side.setdefault(t["side"], []).append(t)
    sides = {}
    for side, ts in by_side.items():
        comp_keys = ts[0].get("component_s_per_step", {}).keys()
        sides[side] = {
            "trials": len(ts),
            "real_tokens_per_s_median": median([t["real_tokens_per_s"] for t in ts]),
            "real_tokens_per_s_all": [t["real_tokens_per_s"] for t in ts],
            "padded_tokens_per_s_median": median([t["padded_tokens_per_s"] for t in ts]),
            "s_per_step_median": median([t["s_per_step"] for t in ts]),
            "padding_share_epoch": ts[0]["epoch"]["padding_share"],
            "real_token_share_epoch": round(1 - ts[0]["epoch"]["padding_share"], 4),
            "component_s_per_step_median": {k: median([t["component_s_per_step"][k] for t in ts]) for k in comp_keys},
        }
    def key(side: str) -> str:
        return side.replace("-", "_")

    ref = sides["reference"]["real_tokens_per_s_median"]
    ratios = {f"{key(side)}_over_reference": round(v["real_tokens_per_s_median"] / ref, 3)
              for side, v in sides.items() if side != "reference"}
    for side, v in sides.items():
        if side.startswith("ftpipe-") and "reference-grouped" in sides and "grouped" in side:
            ratios[f"{key(side)}_over_reference_grouped"] = round(
                v["real_tokens_per_s_median"] / sides["reference-grouped"]["real_tokens_per_s_median"], 3)
        if side.startswith("ftpipe-"):
            ratios[f"{key(side)}_over_ftpipe"] = round(v["real_tokens_per_s_median"] / sides["ftpipe"]["real_tokens_per_s_median"], 3)
    digests = {t["batch_order_digest"] for t in by_side["ftpipe"]}
    payload = {
        "what": "LoRA training throughput, ftpipe (Ludwig) vs a plain transformers+PEFT loop, alternated in fresh processes",
        "settings": {"spec": str(DEMO_SPEC.relative_to(DEMO_SPEC.parents[1])), "overrides": overrides(steps),
                     "rows": 2 * ROWS_PER_TASK, "batch_size": BATCH_SIZE, "steps": steps, "warmup_steps_not_timed": WARMUP_STEPS,
                     "rounds": rounds, "timed": "wall time from the end of the last warm-up step to the end of the last step",
                     "lora": trials[0]["lora"], "trainer": trials[0]["trainer"], "seed": trials[0]["seed"],
                     "dtype": "float32", "device": "cpu"},
        "sides": sides,
        "ratios": ratios,
        "targets": {"ftpipe_over_reference_min": 0.95, "real_token_share_min": 0.90},
        "checks": {"ftpipe_trials_same_batch_order": len(digests) == 1,
                   "grouped_batches_same_on_both_sides": _same_grouped_batches(by_side),
                   "reference_rows_not_matched_to_ludwig": next((t["batches"].get("rows_not_matched_to_ludwig") for t in trials
                                                                 if t["side"] == "reference"), None)},
        "wall_s": round(time.perf_counter() - t_start, 1),
        "trials": trials,
    }
    return payload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", choices=["ftpipe", "ftpipe-grouped", "ftpipe-lean", "ftpipe-grouped-lean", "reference", "reference-grouped"])
    ap.add_argument("--driver", action="store_true", help="alternate all sides and write bench/results/training.json")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--grouped-rounds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--record-batches", type=Path)
    ap.add_argument("--batches", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--result-name", default="training", help="bench/results/<name>.json (driver)")
    ap.add_argument("--extra-sides", default=",".join(EXTRA_SIDES), help="driver: comma-separated sides run after ftpipe, reference")
    a = ap.parse_args()
    if a.driver:
        extra = tuple(x for x in a.extra_sides.split(",") if x)
        path = write_result(a.result_name, drive(a.rounds, a.steps, a.grouped_rounds, extra))
        log(f"wrote {path}")
        return
    if a.side is None or a.out is None:
        ap.error("--side and --out (or --driver)")
    if a.side.startswith("ftpipe"):
        out = run_ftpipe_side(a.steps, a.record_batches, grouped="grouped" in a.side, lean="lean" in a.side)
    else:
        out = run_reference_side(a.steps, a.batches, grouped=a.side == "reference-grouped")
    a.out.write_text(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
