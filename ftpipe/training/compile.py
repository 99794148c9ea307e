"""The compiler: a validated spec (plus measured data facts) to a Ludwig LLM config dict.

`compile_spec` is pure: no I/O, no Ludwig import. Every value that matters is set explicitly,
because Ludwig's finetune trainer inherits defaults meant for other models (100 epochs, lr 1e-3,
a random 0.7/0.1/0.2 split) and silently drops keys it does not know (shared/LUDWIG.md).
`ludwig_compat.check_config` then runs Ludwig's own validation and fails if a key was dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ftpipe.version import __version__
from ftpipe.spec import FrozenAdapter, FullAdapter, PipelineSpec, PrefixTuningAdapter, PromptTuningAdapter, QloraAdapter

INPUT_FEATURE = "prompt"
OUTPUT_FEATURE = "target"
SPLIT_COLUMN = "split"
# Tokens the head's tokenizer call may add around a prompt (Ludwig's hf_tokenizer encodes with the
# tokenizer's special tokens; the data layer measures prompts without them).
HEAD_SPECIAL_TOKENS = 2


@dataclass(frozen=True)
class CompileContext:
    """Facts the compiler needs that are not in the spec.

    Attributes:
        base_model: What Ludwig loads: the resolved folder at run time, the store name in committed configs.
        max_prompt_tokens: Longest rendered prompt (training and evaluation), measured with the tokenizer.
        max_target_tokens: Longest target plus the EOS Ludwig appends.
        device: "cuda" or "cpu", once resolved from the spec's `compute.device`.
        has_validation: Whether any row has the validation split.
    """

    base_model: str
    max_prompt_tokens: int
    max_target_tokens: int
    device: str = "cpu"
    has_validation: bool = True


def context_for(prepared, base_model: str, device: str) -> CompileContext:
    """The compiler's context from prepared data (measured lengths, whether a validation split exists)."""
    return CompileContext(base_model=base_model, max_prompt_tokens=prepared.lengths["max_prompt_tokens"],
                          max_target_tokens=prepared.lengths["max_target_tokens"], device=device,
                          has_validation=any(r["split"] == "validation" for r in prepared.train_rows))


def _adapter(spec: PipelineSpec) -> dict[str, Any] | None:
    a = spec.adapter
    if isinstance(a, (FullAdapter, FrozenAdapter)):
        return None  # no adapter: Ludwig trains every weight (an ECD body without one is frozen by ludwig_compat)
    if isinstance(a, PromptTuningAdapter):  # registered with Ludwig by ludwig_compat (upstream has it commented out)
        cfg: dict[str, Any] = {"type": "prompt_tuning", "num_virtual_tokens": a.num_virtual_tokens,
                               "prompt_tuning_init": a.init.upper()}
        if a.init == "text":
            cfg["prompt_tuning_init_text"] = a.init_text
        return cfg
    if isinstance(a, PrefixTuningAdapter):
        return {"type": "prefix_tuning", "num_virtual_tokens": a.num_virtual_tokens, "prefix_projection": a.prefix_projection}
    cfg: dict[str, Any] = {"type": "lora" if isinstance(a, QloraAdapter) else a.type}
    for key in ("r", "alpha", "dropout", "target_modules", "use_dora", "use_rslora", "feedforward_modules"):
        value = getattr(a, key, None)
        if value is not None and not (key in ("use_dora", "use_rslora") and value is False):
            cfg[key] = value
    return cfg


def _quantization(spec: PipelineSpec) -> dict[str, Any] | None:
    a = spec.adapter
    if not isinstance(a, QloraAdapter):
        return None
    q: dict[str, Any] = {"bits": a.bits}
    if a.bits == 4:
        q.update(bnb_4bit_quant_type=a.quant_type, bnb_4bit_use_double_quant=a.double_quant,
                 bnb_4bit_compute_dtype=a.compute_dtype)
    return q


def _trainer(spec: PipelineSpec, ctx: CompileContext) -> dict[str, Any]:
    t = spec.training
    trainer: dict[str, Any] = {
        "type": "finetune",
        "epochs": t.epochs,
        "learning_rate": t.learning_rate,
        "batch_size": t.batch_size,
        "eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate_scheduler": {"decay": None if t.lr_schedule == "constant" else t.lr_schedule,
                                    "warmup_fraction": t.warmup_fraction},
        "optimizer": {"type": "adamw", "weight_decay": t.weight_decay},
        "enable_gradient_checkpointing": t.gradient_checkpointing,
        "checkpoints_per_epoch": t.checkpoints_per_epoch,
        "early_stop": t.early_stopping_patience if t.early_stopping_patience else -1,
        "skip_all_evaluation": not (t.evaluate_during_training and ctx.has_validation),
        "use_mixed_precision": t.precision == "fp16" or (t.precision == "auto" and ctx.device == "cuda"),
        # Ludwig scales the lr linearly with the number of processes unless told otherwise: the spec
        # says how (default constant, which leaves one-process configs as they were; issue 9).
        "learning_rate_scaling": spec.compute.distributed.learning_rate_scaling,
    }
    if t.max_steps is not None:
        trainer["train_steps"] = t.max_steps
    if t.packing:  # fields ludwig_compat registers on the finetune trainer (speed-up 3)
        trainer["packing"] = True
        if t.packing_max_tokens is not None:
            trainer["packing_max_tokens"] = t.packing_max_tokens
    if spec.method == "preference":
        # Ludwig's validation pass would score cross-entropy on the packed `chosen SEP rejected` target:
        # meaningless for a preference model, which ftpipe's evaluator judges on held-out pairs instead.
        trainer["skip_all_evaluation"] = True
    return trainer


def step_options(spec: PipelineSpec) -> dict[str, Any]:
    """ftpipe's own training options, applied around Ludwig (ludwig_compat.StepOptions), not in its config."""
    t = spec.training
    return {"group_by_length": t.group_by_length, "group_batches": t.length_group_batches,
            # distributed bf16 is Accelerate's mixed precision (ftpipe.training.distributed.strategy_kwargs)
            "bf16": t.precision == "bf16" and spec.compute.distributed.strategy == "none"}


def _ludwig_max_new_tokens(spec: PipelineSpec, ctx: CompileContext) -> int:
    """Generation length for Ludwig's own predict (ftpipe's evaluator generates by itself).

    Ludwig treats exactly 32, its default, as "unset" and replaces it with a length of its own choosing
    (schema/model_types/utils.py `_set_generation_max_new_tokens`), so 32 is sent as 33.
    """
    longest_task = max([t.max_new_tokens or 0 for t in spec.all_tasks()] + [spec.generation.max_new_tokens])
    wanted = max(longest_task, ctx.max_target_tokens)
    return 33 if wanted == 32 else wanted


def compile_spec(spec: PipelineSpec, ctx: CompileContext) -> dict[str, Any]:
    """Build the Ludwig config for a spec. Pure: same inputs, same dict."""
    if spec.method == "classification_head":
        return _compile_head(spec, ctx)
    config: dict[str, Any] = {
        "model_type": "llm",
        "base_model": ctx.base_model,
        "input_features": [{"name": INPUT_FEATURE, "type": "text",
                            "preprocessing": {"max_sequence_length": ctx.max_prompt_tokens}}],
        "output_features": [{"name": OUTPUT_FEATURE, "type": "text",
                             "preprocessing": {"max_sequence_length": ctx.max_target_tokens}}],
        # Prompts arrive fully rendered (chat template included): Ludwig's template passes them through.
        "prompt": {"template": "{" + INPUT_FEATURE + "}"},
        "trainer": _trainer(spec, ctx),
        # temperature unset: Ludwig's default 0.1 with greedy decoding is a GenerationConfig that
        # transformers refuses to save, which breaks saving a fully fine-tuned model.
        "generation": {"do_sample": False, "temperature": None, "max_new_tokens": _ludwig_max_new_tokens(spec, ctx)},
        "preprocessing": {
            "split": {"type": "fixed", "column": SPLIT_COLUMN},
            "global_max_sequence_length": ctx.max_prompt_tokens + ctx.max_target_tokens,
        },
        "backend": {"type": "local"},
    }
    adapter = _adapter(spec)
    if adapter is not None:
        config["adapter"] = adapter
    quantization = _quantization(spec)
    if quantization is not None:
        config["quantization"] = quantization
    return config


def _compile_head(spec: PipelineSpec, ctx: CompileContext) -> dict[str, Any]:
    """method classification_head: an ECD model, the base LLM as the text encoder, a new category head.

    The prompt is tokenized with the LLM's own tokenizer (Ludwig's default would feed the LLM ids of
    its own vocabulary) and padded to a fixed length; the head reads the last real token's final
    hidden state (`reduce_input: last`, with the padding masked and zeroed by ludwig_compat). The
    body has a LoRA adapter or none, and without one ludwig_compat freezes it.
    """
    encoder: dict[str, Any] = {"type": "llm", "base_model": ctx.base_model}
    adapter = _adapter(spec)
    if adapter is not None:
        encoder["adapter"] = adapter
    trainer = {k: v for k, v in _trainer(spec, ctx).items() if k != "type"}  # ECD's one trainer has no type key
    return {
        "model_type": "ecd",
        "input_features": [{"name": INPUT_FEATURE, "type": "text", "encoder": encoder,
                            "preprocessing": {"tokenizer": "hf_tokenizer", "pretrained_model_name_or_path": ctx.base_model,
                                              "sequence_length": ctx.max_prompt_tokens + HEAD_SPECIAL_TOKENS}}],
        "output_features": [{"name": OUTPUT_FEATURE, "type": "category", "reduce_input": "last"}],
        "trainer": trainer,
        "preprocessing": {"split": {"type": "fixed", "column": SPLIT_COLUMN}},
        "backend": {"type": "local"},
    }


def render_compiled(config: dict[str, Any], spec_name: str, spec_sha256: str) -> str:
    """The committed form of a compiled config: a do-not-edit header, then YAML with sorted keys."""
    import yaml

    header = (
        f"# Generated by ftpipe {__version__} from {spec_name} (spec sha256 {spec_sha256[:16]}). Do not edit:\n"
        f"# run `make configs` to regenerate. base_model is the store name here; `ftpipe run`\n"
        f"# substitutes the stored folder's path.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=True, default_flow_style=False, allow_unicode=True)


def config_hash(config: dict[str, Any]) -> str:
    """Short hash of a compiled config (recorded in manifests)."""
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
