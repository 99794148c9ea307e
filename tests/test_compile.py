"""The compiler: example specs compile, Ludwig accepts them with no key dropped, and the committed
ludwig_configs/ stay in sync; generated specs always compile to configs Ludwig accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftpipe.training import ludwig_compat
from ftpipe.training import CompileContext, compile_spec
from ftpipe.training.golden import compiled_for_spec, example_specs, golden_path
from ftpipe.spec import PipelineSpec

EXAMPLES = example_specs()


def test_every_example_kind_is_present():
    names = {p.stem for p in EXAMPLES}
    assert {"demo", "instruction_lora", "multitask_replay", "qlora", "full_finetune", "domain_adaptation",
            "prompt_tuning", "classification_head", "preference_dpo"} <= names


@pytest.mark.parametrize("spec_path", EXAMPLES, ids=lambda p: p.stem)
def test_example_compiles_passes_ludwig_and_matches_committed_config(spec_path: Path, smollm2_dir):
    text, config = compiled_for_spec(spec_path, resolve_model=True)
    golden = golden_path(spec_path)
    assert golden.exists(), f"{golden} is missing: run `make configs`"
    assert golden.read_text() == text, f"{golden} is stale: run `make configs`"
    resolved = ludwig_compat.check_config(config)  # raises if Ludwig rejected, dropped or changed a key
    expected = "ecd" if spec_path.stem == "classification_head" else "llm"  # a new head on the LLM is an ECD model
    assert resolved["model_type"] == expected and resolved["backend"]["type"] == "local"


def test_compile_is_pure_and_explicit(tiny_llama_dir):
    spec = PipelineSpec.model_validate({"name": "x", "base_model": "tiny-llama",
                                        "tasks": [{"name": "a", "source": "a.jsonl", "target": "{{ y }}"}]})
    ctx = CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=40, max_target_tokens=6)
    first, second = compile_spec(spec, ctx), compile_spec(spec, ctx)
    assert first == second
    trainer = first["trainer"]
    # Ludwig's finetune defaults are ECD's (100 epochs, lr 1e-3, random split): all set explicitly
    assert trainer["epochs"] == 3 and trainer["learning_rate"] == 0.001 and trainer["type"] == "finetune"
    assert first["preprocessing"]["split"] == {"type": "fixed", "column": "split"}
    assert first["input_features"][0]["preprocessing"]["max_sequence_length"] == 40
    assert first["preprocessing"]["global_max_sequence_length"] == 46
    assert first["generation"] == {"do_sample": False, "temperature": None, "max_new_tokens": 33}  # 32 means "unset" to Ludwig


ADAPTERS = st.one_of(
    st.just({"type": "full"}),
    st.builds(lambda r, a, d, dora: {"type": "lora", "r": r, "alpha": a, "dropout": d, "use_dora": dora},
              st.integers(1, 64), st.integers(1, 128), st.sampled_from([0.0, 0.05, 0.1]), st.booleans()),
    st.builds(lambda r, q, dq, dt: {"type": "qlora", "r": r, "quant_type": q, "double_quant": dq, "compute_dtype": dt},
              st.integers(1, 32), st.sampled_from(["nf4", "fp4"]), st.booleans(), st.sampled_from(["float32", "bfloat16"])),
    st.just({"type": "qlora", "bits": 8}),
    st.builds(lambda r: {"type": "loha", "r": r}, st.integers(1, 16)),
    st.builds(lambda r: {"type": "lokr", "r": r}, st.integers(1, 16)),
    st.just({"type": "ia3"}),
    st.builds(lambda r: {"type": "adalora", "r": r}, st.integers(2, 16)),
    st.builds(lambda n, text: {"type": "prompt_tuning", "num_virtual_tokens": n, "init": "text", "init_text": text},
              st.integers(1, 64), st.sampled_from(["Answer:", "Route the ticket to one team."])),
    st.builds(lambda n: {"type": "prompt_tuning", "num_virtual_tokens": n, "init": "random"}, st.integers(1, 64)),
    st.builds(lambda n, proj: {"type": "prefix_tuning", "num_virtual_tokens": n, "prefix_projection": proj},
              st.integers(1, 64), st.booleans()),
)
TRAINING = st.fixed_dictionaries({
    "epochs": st.integers(1, 20),
    "learning_rate": st.sampled_from([1e-5, 5e-5, 2e-4, 1e-3, 0.01]),
    "lr_schedule": st.sampled_from(["constant", "linear", "cosine"]),
    "warmup_fraction": st.sampled_from([0.0, 0.03, 0.1]),
    "batch_size": st.integers(1, 64),
    "gradient_accumulation_steps": st.integers(1, 8),
    "gradient_checkpointing": st.booleans(),
    "early_stopping_patience": st.one_of(st.none(), st.integers(1, 5)),
    "checkpoints_per_epoch": st.integers(1, 4),
    "evaluate_during_training": st.booleans(),
    "weight_decay": st.sampled_from([0.0, 0.01]),
    "precision": st.sampled_from(["auto", "fp32", "fp16", "bf16"]),
    "group_by_length": st.booleans(),
}, optional={"max_steps": st.integers(1, 1000), "packing": st.booleans()})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(adapter=ADAPTERS, training=TRAINING, max_new=st.integers(1, 256), prompt_len=st.integers(8, 512),
       device=st.sampled_from(["cpu", "cuda"]))
def test_generated_specs_compile_to_configs_ludwig_accepts(tiny_llama_dir, adapter, training, max_new, prompt_len, device):
    if adapter["type"] in ("prompt_tuning", "prefix_tuning"):
        training = {**training, "packing": False}  # virtual tokens cannot be packed (the spec refuses it)
    spec = PipelineSpec.model_validate({
        "name": "gen", "base_model": "tiny-llama", "adapter": adapter, "training": training,
        "generation": {"max_new_tokens": max_new},
        "tasks": [{"name": "a", "source": "a.jsonl", "target": "{{ y }}"}],
    })
    config = compile_spec(spec, CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=prompt_len,
                                               max_target_tokens=16, device=device))
    resolved = ludwig_compat.check_config(config)
    assert resolved["trainer"]["learning_rate"] == training["learning_rate"]
    assert (resolved.get("adapter") or {}).get("type", "full") == ("lora" if adapter["type"] == "qlora" else adapter["type"])
    if adapter["type"] == "qlora":
        assert resolved["quantization"]["bits"] == adapter.get("bits", 4)
    assert resolved["trainer"]["packing"] is training.get("packing", False)
    assert resolved["trainer"]["use_mixed_precision"] is (training["precision"] == "fp16" or
                                                          (training["precision"] == "auto" and device == "cuda"))


def test_committed_configs_have_header_and_sorted_keys():
    for spec_path in EXAMPLES:
        text = golden_path(spec_path).read_text()
        assert text.startswith("# Generated by ftpipe") and "Do not edit" in text
        body = yaml.safe_load(text)
        assert list(body) == sorted(body)
