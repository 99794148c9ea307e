"""Each Ludwig 0.17.10 workaround, and a test that fails the day upstream behaviour changes.

When one of the `test_upstream_*` tests fails after a Ludwig upgrade, the bug it pins was fixed
upstream: delete the matching workaround in ftpipe/ludwig_compat.py (or the configuration that
sidesteps it) together with the test.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch

from ftpipe.training import ludwig_compat
from ftpipe.training import CompileContext, compile_spec
from ftpipe.errors import CompileError
from ftpipe.spec import PipelineSpec
from ftpipe.data.templates import chat_prompt

ludwig_compat.import_ludwig()


def tiny_spec(**training) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "t", "base_model": "tiny-llama",
        "tasks": [{"name": "a", "source": "x.jsonl", "target": "{{ y }}"}],
        "training": {"epochs": 1, "batch_size": 4, **training},
    })


def test_upstream_adapters_null_still_rejected_by_stock_schema():
    """Workaround 1 (LudwigModel.load fails on `adapters: null`) is needed while this holds."""
    assert ludwig_compat.adapters_null_rejected()


def test_upstream_unknown_keys_still_silently_dropped(tiny_llama_dir):
    """Ludwig drops unknown keys with a hidden DeprecationWarning; check_config must catch that."""
    from ludwig.schema.model_types.base import ModelConfig

    config = compile_spec(tiny_spec(), CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=32, max_target_tokens=4))
    config["trainer"]["learnin_rate"] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolved = ModelConfig.from_dict(config).to_dict()  # no error upstream ...
    assert "learnin_rate" not in resolved["trainer"]  # ... the key just disappears
    with pytest.raises(CompileError, match="learnin_rate"):
        ludwig_compat.check_config(config)


def test_check_config_accepts_compiled_config_unchanged(tiny_llama_dir):
    config = compile_spec(tiny_spec(max_steps=3), CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=32, max_target_tokens=4))
    resolved = ludwig_compat.check_config(config)
    assert resolved["trainer"]["train_steps"] == 3 and resolved["trainer"]["learning_rate"] == 0.001
    assert resolved["preprocessing"]["split"] == {"type": "fixed", "column": "split"}


def test_upstream_prompt_cut_at_last_pad_token(tiny_llama_dir):
    """Ludwig cuts a prompt at its last pad token: with pad = eos (as SmolLM2 converts) every chat prompt
    loses its system and user turns. The store sidesteps it with pad = <|endoftext|> (id 0)."""
    from ludwig.utils.llm_utils import remove_left_padding
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    prompt = chat_prompt(tokenizer, "What is 2 + 2?", "Be brief.")
    ids = torch.tensor(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    padded = torch.cat([torch.zeros(5, dtype=torch.long), ids])
    assert tokenizer.pad_token_id == 0
    assert torch.equal(remove_left_padding(padded, tokenizer)[0], ids)  # our setting: prompt intact
    tokenizer.pad_token = tokenizer.eos_token  # the converted default
    cut = remove_left_padding(padded, tokenizer)[0]
    assert len(cut) < len(ids) / 2  # upstream bug: the system and user turns are gone
    assert "What is 2 + 2?" not in tokenizer.decode(cut)


def test_whole_chat_prompt_reaches_model_with_padding_masked(tiny_llama_dir, tmp_path):
    """Train the tiny model on chat-templated rows of different lengths; inspect every forward pass."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    users = [f"Please route ticket number {i}: " + "my card was charged twice " * (1 + i % 4) for i in range(8)]
    prompts = [chat_prompt(tokenizer, u, "You route tickets.") for u in users]
    frame = pd.DataFrame({"prompt": prompts, "target": ["billing"] * 8, "split": [0] * 8})
    n_prompt = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    config = compile_spec(tiny_spec(evaluate_during_training=False),
                          CompileContext(base_model=str(tiny_llama_dir), max_prompt_tokens=n_prompt, max_target_tokens=4,
                                         has_validation=False))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    from ludwig.callbacks import Callback

    class Capture(Callback):
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            def hook(module, args, kwargs):
                ids = kwargs.get("input_ids", args[0] if args else None)
                seen.append((ids.detach().clone(), kwargs["attention_mask"].detach().clone()))

            trainer.model.model.register_forward_pre_hook(hook, with_kwargs=True)

    ludwig_compat.train_model(ludwig_compat.check_config(config) and config, frame, tmp_path, seed=0, callbacks=[Capture()])
    assert seen, "no training forward pass was captured"
    texts = []
    for ids, mask in seen:
        assert ids.shape == mask.shape
        pad = ids == 0
        assert pad.any(), "rows of different lengths must be padded"
        assert torch.equal(mask.bool(), ~pad), "padding must be masked and every real token attended"
        for row in ids:
            texts.append(tokenizer.decode(row[row != 0]))
    for user in users[:4]:
        matching = [t for t in texts if user in t]
        assert matching, f"user turn missing from the model input: {user[:40]}"
        assert all("You route tickets." in t and t.rstrip().endswith("billing<|im_end|>") or "billing" in t for t in matching)
