"""Training throughput (issue 16): `ftpipe run` (Ludwig) against a plain transformers + PEFT loop, A/B alternated.

Every side trains the same LoRA job: SmolLM2-135M-Instruct, the same training rows (the demo spec with 48 rows
per task = 96 rows, one epoch of 12 steps at batch 8), LoRA r/alpha/dropout/target modules as Ludwig resolved
them, AdamW at the same lr with the same warmup + linear decay, global gradient-norm clipping at 0.5 (Ludwig's
default), loss on target tokens (+ EOS) only, fp32 weights on CPU, the same torch thread count.

Sides (SIDES; each trial runs in its own process, the driver alternates them and reports medians):
  ftpipe                  `run_pipeline(demo.yaml, overrides, evaluate=False)` as shipped: length-grouped
                          batches (training.group_by_length, groups of 8 batches), lean steps, fp32.
  reference-same-batches  the plain loop (`run_reference_side`) fed exactly ftpipe's batches: the first ftpipe
                          trial records every batch (token ids, in order) and every step's learning rate, this
                          side replays them.
  reference-ungrouped     the plain loop fed Ludwig-style random batches of the same rows: the seeded permutation
                          Ludwig's sampler draws without length grouping, cut into batches of 8, same rates (with
                          ftpipe-ungrouped in the run, `reference_ungrouped_matches_ludwig` checks they are
                          Ludwig's own batches: same row lengths in the same order; true on the tiny model).
  ftpipe-packed           ftpipe with training.packing=true and packing_max_tokens=PACK_TOKENS, so a batch of 8
                          demo rows (73-110 tokens) fits one pack (at the default width, the longest prompt +
                          target, no two demo rows fit together and nothing would be packed).
  ftpipe-bf16             ftpipe with training.precision=bf16 (bf16 autocast of the training forward); skipped
                          when the CPU has no native bf16 (AVX512-BF16 or AMX).
  ftpipe-ungrouped        ftpipe with training.group_by_length=false (Ludwig's random batches); not run by
                          default (`--extra-sides ftpipe-packed,ftpipe-bf16,ftpipe-ungrouped`).

Targets (the driver's `targets`; ratios of median real tokens/s, never a timed test):
  ftpipe / reference-ungrouped >= 1.05; ftpipe / reference-same-batches >= 0.95; ftpipe-bf16 / ftpipe >= 1.3;
  real tokens >= 97% of each of ftpipe's (grouped) batches and >= 99% of each ftpipe-packed batch.

Timed, on every side: the wall time between the end of training step WARMUP_STEPS and the end of the last step,
i.e. everything a training loop does per step (batching, forward, loss, backward, optimizer, scheduler, logging)
and none of the set-up (imports, preprocessing, model load) or saving. Real tokens = non-padding tokens of the
batches in that window; tokens/s = real tokens / seconds. A batch's real-token share = real / (rows x longest
row), for a packed batch real / (packs x widest pack); reported over the epoch and for its worst batch.

Compute: training FLOPs = 6 * N * real tokens, with N = the weights of every nn.Linear a token passes through
(attention and MLP projections and the LM head, which SmolLM2 ties to its embedding; not the embedding lookup,
norms, LoRA's small A/B matrices or attention scores). 6N is the usual full forward + backward estimate; a LoRA
step does less (frozen weights get no weight gradient: about 4N), so the shares compare sides rather than measure
utilisation. Peak: after the trials the driver times back-to-back torch.matmul of two 2048 x 2048 matrices with
the trials' torch thread count, fp32 and (when the CPU has native bf16) bf16, best of 3 one-second windows; every
side's GFLOP/s is given as a share of each peak.

Worker:  python bench/train_ab.py --side ftpipe --out trial.json [--record-batches b.json]
Driver:  python bench/train_ab.py --driver [--rounds 3] [--extra-rounds 2]   (writes bench/results/training.json)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEMO_SPEC, log, median, run_json_subprocess, write_result  # noqa: E402

ROWS_PER_TASK = 48
BATCH_SIZE = 8  # the demo's
STEPS = 12  # = one epoch of 96 rows at batch 8
WARMUP_STEPS = 2  # not timed
PAD_ID = 0  # ftpipe's stored tokenizers pad with <|endoftext|> (id 0), which never occurs in text
PACK_TOKENS = 1024  # >= 8 of the demo's longest rows (110 tokens): one pack per batch
# BENCH_BASE_MODEL (a store name or a local HF folder; tiny-llama for smoke tests), BENCH_DEVICE (cpu or
# cuda) and BENCH_ADAPTER (lora, full or qlora) change the job on both sides; bench/gpu.py sets them.
BASE_MODEL = os.environ.get("BENCH_BASE_MODEL", "smollm2-135m-instruct")
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
ADAPTER = os.environ.get("BENCH_ADAPTER", "lora")
ADAPTER_OVERRIDES = {"lora": [], "full": ["adapter={type: full}"],
                     "qlora": ["adapter={type: qlora, r: 8, alpha: 16, bits: 4, compute_dtype: bfloat16}"]}

SIDES: dict[str, list[str] | None] = {  # side -> its ftpipe overrides on top of overrides(); None: the plain loop
    "ftpipe": [],
    "reference-same-batches": None,
    "reference-ungrouped": None,
    "ftpipe-packed": ["training.packing=true", f"training.packing_max_tokens={PACK_TOKENS}"],
    "ftpipe-bf16": ["training.precision=bf16"],
    "ftpipe-ungrouped": ["training.group_by_length=false"],
}
CORE_SIDES = ("ftpipe", "reference-same-batches", "reference-ungrouped")  # every round
EXTRA_SIDES = ("ftpipe-packed", "ftpipe-bf16")  # default extras, in the first `extra_rounds` rounds
TARGETS = {  # name -> (what, minimum)
    "ftpipe_over_reference_ungrouped": ("ratio", 1.05),
    "ftpipe_over_reference_same_batches": ("ratio", 0.95),
    "ftpipe_bf16_over_ftpipe": ("ratio", 1.3),
    "real_token_share_grouped_each_batch": ("ftpipe", 0.97),
    "real_token_share_packed_each_batch": ("ftpipe-packed", 0.99),
}


def overrides(steps: int) -> list[str]:
    return [f"tasks.0.max_train_rows={ROWS_PER_TASK}", f"tasks.1.max_train_rows={ROWS_PER_TASK}",
            "training.epochs=1", f"training.max_steps={steps}", "training.evaluate_during_training=false",
            "evaluation.few_shot=0", f"base_model={BASE_MODEL}", f"compute.device={DEVICE}", *ADAPTER_OVERRIDES[ADAPTER]]


def batch_stats(lengths_per_batch: list[list[int]]) -> dict:
    """Real and computed tokens of batches given as real lengths per row (or per pack), each padded to its longest."""
    real = sum(sum(b) for b in lengths_per_batch)
    total = sum(len(b) * max(b) for b in lengths_per_batch)
    worst = min((sum(b) / (len(b) * max(b)) for b in lengths_per_batch), default=None)
    return {"real_tokens": real, "padded_tokens": total, "padding_share": round(1 - real / total, 4) if total else None,
            "worst_batch_real_share": None if worst is None else round(worst, 4)}


def matmul_params(model) -> int:
    """N of 6*N*tokens: the weights of every nn.Linear (LoRA's A and B excluded) in `model`."""
    import torch

    return sum(m.in_features * m.out_features for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in name)


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


def _timing_callback(record: dict):
    """A Ludwig callback recording, per step: end time, real lengths per row (or pack), ids (optional), component times.

    Added after ftpipe's own callbacks, so it times the step as ftpipe shaped it (lean, bf16 autocast, packing).
    """
    from ftpipe.training import ludwig_compat

    ludwig_compat.import_ludwig()
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

            record["torch_threads_in_trainer"] = torch.get_num_threads()
            # what ftpipe applied around Ludwig in this run (StepOptions), read back from the trainer
            record["step_options"] = {**dataclasses.asdict(ludwig_compat._ACTIVE),
                                      "lean_applied": bool(getattr(trainer, "_ftpipe_lean", False)),
                                      "bf16_applied": bool(getattr(trainer, "_ftpipe_bf16", False))}
            llm = trainer.model
            hf = llm.model
            record["hf_model_class"] = type(hf).__name__
            record["attn_implementation"] = getattr(getattr(hf, "config", None), "_attn_implementation", None)
            record["matmul_params"] = matmul_params(hf)
            hf.forward = timed("hf_model_forward", hf.forward)
            llm.train_loss = timed("train_loss", llm.train_loss)
            trainer._forward_pass = timed("forward_pass", trainer._forward_pass)
            trainer._backward_pass = timed("backward", trainer._backward_pass)
            trainer._optimizer_step = timed("optimizer_step", trainer._optimizer_step)
            trainer._update_training_metrics = timed("training_metrics", trainer._update_training_metrics)
            original = trainer.train_step

            def train_step(*a, **kw):
                t = time.perf_counter()
                result = original(*a, **kw)
                comps["train_step"].append(time.perf_counter() - t)
                record["losses"].append(round(float(result[0].detach()), 4))
                ids = llm.model_inputs.detach().cpu()  # rows left-padded, or packs right-padded, with id 0
                real = ids != PAD_ID
                record["lengths"].append(real.sum(1).tolist())
                if record["keep_ids"]:
                    record["batches"].append([row[keep].tolist() for row, keep in zip(ids, real)])
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


def run_ftpipe_side(side: str, steps: int, record_batches: Path | None) -> dict:
    from ftpipe import console
    from ftpipe.lifecycle import run_pipeline
    from ftpipe.training import ludwig_compat

    console.quiet_libraries()
    record = {"step_ends": [], "losses": [], "lrs": [], "lengths": [], "batches": [], "keep_ids": record_batches is not None}
    callback = _timing_callback(record)
    original_train_model = ludwig_compat.train_model

    def train_model_with_timing(*a, callbacks=None, **kw):
        return original_train_model(*a, callbacks=[*(callbacks or []), callback], **kw)

    ludwig_compat.train_model = train_model_with_timing
    root = Path(tempfile.mkdtemp(prefix="ftpipe-bench-runs-"))
    os.environ["FTPIPE_HISTORY_DB"] = str(root / "history.sqlite")  # keep the user's run history clean
    t0 = time.perf_counter()
    result = run_pipeline(DEMO_SPEC, overrides(steps) + SIDES[side], root=root, evaluate=False)
    wall = time.perf_counter() - t0
    run_dir = result.run_dir
    progress = json.loads((run_dir / "training" / "_ludwig" / "experiment_run" / "model" / "training_progress.json").read_text())
    adapter_file = run_dir / "adapter" / "adapter_config.json"
    adapter_cfg = json.loads(adapter_file.read_text()) if adapter_file.exists() else {}
    import yaml

    resolved = yaml.safe_load((run_dir / "ludwig_config.resolved.yaml").read_text())
    trainer_cfg = resolved["trainer"]
    out = summarize_steps(record["step_ends"], record["lengths"], WARMUP_STEPS, record["components"])
    out.update({
        "side": side,
        "side_overrides": SIDES[side],
        "step_options": record.get("step_options"),
        "run_dir": str(run_dir),
        "pipeline_wall_s": round(wall, 2),
        "stage_timings_s": result.manifest.timings,
        "setup_s_before_first_batch": round(record["t_first_batch_start"] - t0, 2),
        "torch_threads_in_trainer": record.get("torch_threads_in_trainer"),
        "attn_implementation": record.get("attn_implementation"),
        "matmul_params": record.get("matmul_params"),
        "ludwig_steps": progress.get("steps"),
        "ludwig_total_tokens_used": progress.get("total_tokens_used"),
        "losses": record["losses"],
        "learning_rates": record["lrs"],
        "batch_lengths": record["lengths"],
        "batch_order_digest": hashlib.sha256(json.dumps(record["lengths"]).encode()).hexdigest()[:16],
        "lora": {k: adapter_cfg.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias")},
        "trainer": {**{k: trainer_cfg.get(k) for k in ("batch_size", "learning_rate", "should_shuffle", "train_steps", "epochs",
                                                         "use_mixed_precision", "gradient_clipping", "packing", "packing_max_tokens")},
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


def reference_batches(rows: list[dict], recorded: dict | None, same: bool, steps: int, seed: int) -> tuple[list[list[dict]], dict]:
    """Batches for the plain loop: ftpipe's recorded batches mapped back to rows, or Ludwig-style random ones."""
    info: dict = {}
    if same:
        if recorded is None:
            raise SystemExit("reference-same-batches replays an ftpipe trial's batches: pass --batches (see --record-batches)")
        by_ids = {tuple(r["ids"]): r for r in rows}
        batches, missing = [], 0
        for b in recorded["batches"]:
            mapped = [by_ids.get(tuple(ids)) for ids in b]
            missing += sum(m is None for m in mapped)
            batches.append([m for m in mapped if m is not None])
        info["rows_not_matched_to_ludwig"] = missing
        info["order"] = "ftpipe's recorded batches"
    else:
        import numpy as np

        order = np.random.RandomState(seed).permutation(len(rows))  # Ludwig's sampler: a seeded permutation, cut
        batches = [[rows[i] for i in order[j: j + BATCH_SIZE]] for j in range(0, len(rows), BATCH_SIZE)]
        info["order"] = "Ludwig-style random batches: seeded permutation of the rows, no length grouping"
    return batches[:steps], info


def run_reference_side(side: str, steps: int, batches_file: Path | None) -> dict:
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
    batches, info = reference_batches(rows, recorded, side == "reference-same-batches", steps, seed)
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
    out.update({"side": side, "setup_s": round(setup, 2), "batches": info, "matmul_params": matmul_params(model),
                "torch_threads": torch.get_num_threads(), "losses": losses, "learning_rates": lrs, "grad_clip_global_norm": clip, "batch_lengths": lengths,
                "attn_implementation": getattr(model.config, "_attn_implementation", None),
                "lora": lora, "seed": seed, "device": DEVICE, "adapter": ADAPTER, "autocast_fp16": amp,
                "peak_memory_gib": _peak_memory_gib()})
    return out


# =============================================================================== driver


def matmul_peak(dtype: str, threads: int, n: int = 2048, seconds: float = 1.0, windows: int = 3) -> float:
    """FLOP/s of back-to-back torch.matmul on two n x n matrices: the best of `windows` windows of `seconds`."""
    import torch

    torch.set_num_threads(threads)
    a, b = (torch.randn(n, n).to(getattr(torch, dtype)) for _ in range(2))
    torch.matmul(a, b)  # warm-up
    best = 0.0
    for _ in range(windows):
        k, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            torch.matmul(a, b)
            k += 1
        best = max(best, 2 * n**3 * k / elapsed)
    return best


def native_bf16() -> bool:
    import torch

    return DEVICE == "cuda" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def summarize_side(ts: list[dict], peaks: dict[str, float]) -> dict:
    tok_s = median([t["real_tokens_per_s"] for t in ts])
    flops = 6 * ts[0]["matmul_params"] * tok_s
    comp_keys = ts[0].get("component_s_per_step", {}).keys()
    return {
        "trials": len(ts),
        "real_tokens_per_s_median": tok_s,
        "real_tokens_per_s_all": [t["real_tokens_per_s"] for t in ts],
        "padded_tokens_per_s_median": median([t["padded_tokens_per_s"] for t in ts]),
        "s_per_step_median": median([t["s_per_step"] for t in ts]),
        "padding_share_epoch": ts[0]["epoch"]["padding_share"],
        "real_token_share_epoch": round(1 - ts[0]["epoch"]["padding_share"], 4),
        "real_token_share_worst_batch": ts[0]["epoch"]["worst_batch_real_share"],
        "matmul_params": ts[0]["matmul_params"],
        "gflops_6n": round(flops / 1e9, 2),
        **{f"share_of_{k}_peak": round(flops / v, 4) for k, v in peaks.items()},
        "component_s_per_step_median": {k: median([t["component_s_per_step"][k] for t in ts]) for k in comp_keys},
    }


def drive(rounds: int, steps: int, extra_rounds: int | None = None, extra_sides: tuple[str, ...] = EXTRA_SIDES) -> dict:
    """Alternate the sides in fresh processes: CORE_SIDES, then *extra_sides in the first `extra_rounds` rounds.

    The first ftpipe trial records its batches and learning rates, which every reference trial reads.
    """
    work = Path(tempfile.mkdtemp(prefix="ftpipe-bench-ab-"))
    batches_file = work / "ftpipe_batches.json"
    here = str(Path(__file__).resolve())
    extra_rounds = rounds if extra_rounds is None else extra_rounds
    skipped = {}
    if "ftpipe-bf16" in extra_sides and not native_bf16():
        skipped["ftpipe-bf16"] = "this CPU has no native bf16 (AVX512-BF16 or AMX)"
        extra_sides = tuple(s for s in extra_sides if s != "ftpipe-bf16")
    trials: list[dict] = []
    t_start = time.perf_counter()
    for r in range(rounds):
        for side in CORE_SIDES + (extra_sides if r < extra_rounds else ()):
            args = [here, "--side", side, "--steps", str(steps)]
            if side == "ftpipe" and r == 0:
                args += ["--record-batches", str(batches_file)]
            elif side.startswith("reference"):
                args += ["--batches", str(batches_file)]
            log(f"training A/B round {r + 1}/{rounds}: {side}")
            out = run_json_subprocess(args, work / f"{side}-{r}.json", timeout=900)
            out["round"] = r + 1
            trials.append(out)
            log(f"  {side}: {out['real_tokens_per_s']:.0f} real tok/s, {out['s_per_step']:.2f} s/step, "
                f"real tokens {1 - out['epoch']['padding_share']:.1%} (worst batch {out['epoch']['worst_batch_real_share']:.1%})")
    by_side: dict[str, list[dict]] = {}
    for t in trials:
        by_side.setdefault(t["side"], []).append(t)
    threads = trials[0].get("torch_threads_in_trainer") or trials[0].get("torch_threads")
    peaks: dict[str, float] = {}
    if DEVICE == "cpu":  # bench/gpu.py has the GPU's own peak and MFU
        log(f"matmul peak, {threads} threads")
        peaks = {"fp32": matmul_peak("float32", threads), **({"bf16": matmul_peak("bfloat16", threads)} if native_bf16() else {})}
    sides = {side: summarize_side(ts, peaks) for side, ts in by_side.items()}

    def ratio(a: str, b: str) -> float | None:
        if a not in sides or b not in sides:
            return None
        return round(sides[a]["real_tokens_per_s_median"] / sides[b]["real_tokens_per_s_median"], 3)

    pairs = [("ftpipe", "reference-ungrouped"), ("ftpipe", "reference-same-batches"), ("ftpipe-bf16", "ftpipe"),
             ("ftpipe-packed", "ftpipe"), ("ftpipe-ungrouped", "ftpipe"), ("reference-same-batches", "reference-ungrouped")]
    ratios = {f"{a}_over_{b}".replace("-", "_"): ratio(a, b) for a, b in pairs if ratio(a, b) is not None}
    targets = {}
    for name, (what, minimum) in TARGETS.items():
        value = ratios.get(name) if what == "ratio" else sides.get(what, {}).get("real_token_share_worst_batch")
        targets[name] = {"value": value, "target": minimum, "met": None if value is None else value >= minimum}
    ft, same = by_side["ftpipe"], by_side.get("reference-same-batches")
    ung, ludwig_ung = by_side.get("reference-ungrouped"), by_side.get("ftpipe-ungrouped")
    if same:  # robust to the host's noise bursts: the same batch, same round, step against step
        paired = [r["step_seconds"][i] / f["step_seconds"][i] for f in ft for r in same if r["round"] == f["round"]
                  for i in range(min(len(f["step_seconds"]), len(r["step_seconds"])))]
        ratios["ftpipe_over_reference_same_batches_paired_steps"] = round(median(paired), 3)
    # the best any length grouping of these rows can do at this batch size: the whole epoch sorted
    ordered = sorted((n for b in ft[0]["batch_lengths"] for n in b), reverse=True)
    sorted_epoch = batch_stats([ordered[i:i + BATCH_SIZE] for i in range(0, len(ordered), BATCH_SIZE)])
    return {
        "what": "LoRA training throughput, ftpipe (Ludwig) vs a plain transformers+PEFT loop, alternated in fresh processes",
        "settings": {"spec": str(DEMO_SPEC.relative_to(DEMO_SPEC.parents[1])), "overrides": overrides(steps),
                     "side_overrides": {s: SIDES[s] for s in by_side}, "rows": 2 * ROWS_PER_TASK, "batch_size": BATCH_SIZE,
                     "steps": steps, "warmup_steps_not_timed": WARMUP_STEPS, "rounds": rounds, "extra_rounds": extra_rounds,
                     "timed": "wall time from the end of the last warm-up step to the end of the last step",
                     "flops": "6 * matmul_params * real tokens (matmul_params: nn.Linear weights incl. the LM head, no LoRA A/B)",
                     "matmul_peak": "torch.matmul 2048x2048, best of 3 one-second windows, after the trials",
                     "lora": ft[0]["lora"], "trainer": ft[0]["trainer"], "seed": ft[0]["seed"],
                     "weights": "float32", "device": DEVICE, "torch_threads": threads},
        "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "skipped_sides": skipped,
        "sides": sides,
        "ratios": ratios,
        "targets": targets,
        "sorted_epoch_bound": sorted_epoch,
        "checks": {"ftpipe_trials_same_batch_order": len({t["batch_order_digest"] for t in ft}) == 1,
                   "reference_same_batches_match_ftpipe": None if not same else
                   [sorted(b) for b in same[0]["batch_lengths"]] == [sorted(b) for b in ft[0]["batch_lengths"]],
                   "reference_rows_not_matched_to_ftpipe": None if not same else same[0]["batches"].get("rows_not_matched_to_ludwig"),
                   "reference_ungrouped_matches_ludwig": None if not (ung and ludwig_ung) else
                   ung[0]["batch_lengths"] == ludwig_ung[0]["batch_lengths"],
                   "ftpipe_step_options": ft[0].get("step_options")},
        "wall_s": round(time.perf_counter() - t_start, 1),
        "trials": trials,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", choices=list(SIDES))
    ap.add_argument("--driver", action="store_true", help="alternate the sides and write bench/results/training.json")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--extra-rounds", "--grouped-rounds", dest="extra_rounds", type=int, default=None,
                    help="driver: rounds that also run the extra sides (default: all)")
    ap.add_argument("--extra-sides", default=",".join(EXTRA_SIDES),
                    help=f"driver: comma-separated sides run after {', '.join(CORE_SIDES)} (choices: {', '.join(s for s in SIDES if s not in CORE_SIDES)})")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--record-batches", type=Path)
    ap.add_argument("--batches", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--result-name", default="training", help="bench/results/<name>.json (driver)")
    a = ap.parse_args()
    if a.driver:
        extra = tuple(x for x in a.extra_sides.split(",") if x)
        unknown = [x for x in extra if x not in SIDES or x in CORE_SIDES]
        if unknown:
            ap.error(f"--extra-sides: not an extra side: {', '.join(unknown)}")
        path = write_result(a.result_name, drive(a.rounds, a.steps, a.extra_rounds, extra))
        log(f"wrote {path}")
        return
    if a.side is None or a.out is None:
        ap.error("--side and --out (or --driver)")
    if SIDES[a.side] is None:
        out = run_reference_side(a.side, a.steps, a.batches)
    else:
        out = run_ftpipe_side(a.side, a.steps, a.record_batches)
    a.out.write_text(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
