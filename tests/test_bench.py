"""The benchmarks' plumbing: bench/README.md shows the table `bench/run_all.py` builds from bench/results/,
and bench/gpu.py's worker runs (on CPU here: nothing else checks it before a GPU is lent)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str = "run_all"):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_readme_table_is_built_from_the_kept_results():
    run_all = load_bench()
    doc = (BENCH / "README.md").read_text()
    start, end = doc.index(run_all.TABLE_START) + len(run_all.TABLE_START), doc.index(run_all.TABLE_END)
    assert doc[start:end].strip("\n") == run_all.table().strip("\n"), \
        "bench/README.md's table differs from bench/results/: rewrite it with `.venv/bin/python bench/run_all.py --table`"


def test_the_table_replaces_only_what_lies_between_the_markers(tmp_path):
    run_all = load_bench()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{run_all.TABLE_START}\n| old | table |\n{run_all.TABLE_END}\n\nanalysis by hand\n")
    run_all.write_into_readme("| measure | value |\n|---|---|\n| a | 1 |\n", readme)
    assert readme.read_text() == (f"intro\n\n{run_all.TABLE_START}\n| measure | value |\n|---|---|\n| a | 1 |\n"
                                  f"{run_all.TABLE_END}\n\nanalysis by hand\n")
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary file left beside it
    readme.write_text("no markers\n")
    run_all.write_into_readme("| a |\n", readme)
    assert readme.read_text() == "no markers\n"  # left alone, with a log line saying why


def test_gpu_bench_worker_trains_full_and_lora_on_a_built_llama(tmp_path):
    """bench/gpu.py's reference loop and its random-Llama builder, smoke-tested on CPU at a tiny shape: the
    figures mean nothing here, but every field the GPU table reads is filled in."""
    gpu = load_bench("gpu")
    shape = dict(gpu.LLAMA_1B, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=256)
    path = gpu.build_llama_1b(tmp_path / "llama", None, shape=shape, dev="cpu")
    for method in ("full", "lora"):
        out = gpu.run_one(path, method, steps=3, warmup=1, batch_size=2, seq_len=16, dev="cpu")
        assert out["tokens_per_s"] > 0 and out["device"] == "cpu" and out["mfu"] is None, out
        assert out["matmul_params"] == 2 * (32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64) + 256 * 32  # attention, MLP, LM head
        trainable = out["params_trainable"]
        assert trainable == out["params_total"] if method == "full" else 0 < trainable < out["params_total"] / 2
        assert math.isfinite(out["final_loss"]) and out["train_flops_per_token"] > 0
