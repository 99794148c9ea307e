"""The evaluator's access to models: batched greedy generation, log-likelihoods, text NLL, merging.

Ludwig's own ``predict`` generates one row at a time without an attention mask, so the evaluator
loads models itself: the base model from a local HF folder, optionally a PEFT adapter on top (as
Ludwig saves it) or a full fine-tuned folder instead, optionally quantized with bitsandbytes the
same way Ludwig quantized it for training.

Importing this module is cheap: torch, transformers and peft are imported only when a model is
loaded, merged or fingerprinted with an ``"auto"`` dtype.

Numerics worth knowing (measured on a 2-core x86 CPU with AVX512-BF16, bitsandbytes 0.50.2):

* bitsandbytes' 4-bit ``Linear4bit`` switches, in eval mode on such CPUs, to a fused kernel that
  computes in bfloat16 whatever ``compute_dtype`` says, while training (Ludwig's) computes
  ``dequantize(W) @ x`` in the compute dtype. We turn the fused path off so the adapter is scored on
  exactly the arithmetic it was trained with.
* That fused path also repacks the weights in place; ``model.dequantize()`` afterwards returns
  garbage weights. Merging therefore dequantizes a freshly loaded model, before any forward pass.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.errors import BadInputError, EvalError, ModelNotFoundError
from ftpipe.files import sha256_file

__all__ = [
    "ModelSpec",
    "LoadedModel",
    "ClassificationHead",
    "load_head",
    "load_model",
    "merge_and_save",
    "spec_fingerprint",
    "normalize_quantization",
]

# Bump when the meaning of generate/loglikelihood/text_nll changes, to invalidate cached results.
_SEMANTICS_VERSION = "ftpipe-generation-1"

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}



@dataclass(frozen=True)
class ModelSpec:
    """What to load: a base model, optionally with a PEFT adapter, or full fine-tuned weights.

    Attributes:
        base_path: Local HF folder of the base model (also the tokenizer's source).
        adapter_path: A PEFT adapter folder (``adapter_config.json`` +
            ``adapter_model.safetensors``, as Ludwig saves it). Its ``base_model_name_or_path``
            is ignored: the base always comes from ``base_path``.
        weights_path: A full fine-tuned HF folder, loaded instead of ``base_path`` (tokenizer
            from it when it has one, else from ``base_path``).
        quantization: bitsandbytes settings as in Ludwig's ``quantization`` section, so that an
            adapter is scored on the quantized weights it was trained on: ``bits`` (4 or 8),
            ``quant_type`` / ``bnb_4bit_quant_type`` (default nf4), ``double_quant`` /
            ``bnb_4bit_use_double_quant`` (default True), ``compute_dtype`` /
            ``bnb_4bit_compute_dtype`` (default float16, Ludwig's default),
            ``llm_int8_threshold``, ``llm_int8_has_fp16_weight``.
        device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
        dtype: "auto" (bf16 on CUDA when supported, else fp32), or float32/bfloat16/float16.
            With quantization, "auto" means the compute dtype (Ludwig loads it that way).
    """

    base_path: str
    adapter_path: str | None = None
    weights_path: str | None = None
    quantization: dict | None = field(default=None, hash=False)
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.adapter_path and self.weights_path:
            raise ValueError("ModelSpec: give adapter_path or weights_path, not both")
        if self.dtype != "auto" and self.dtype not in _DTYPE_NAMES:
            raise ValueError(f"ModelSpec: unknown dtype {self.dtype!r}")
        if self.quantization is not None:
            normalize_quantization(self.quantization)  # validates


def normalize_quantization(q: dict | None) -> dict | None:
    """Canonical bitsandbytes settings (Ludwig's key names, Ludwig's defaults filled in).

    Args:
        q: Settings with Ludwig's names or the short aliases ``quant_type``, ``double_quant``,
            ``compute_dtype``; None or empty for no quantization.

    Returns:
        The canonical dict, or None.

    Raises:
        ValueError: An unknown key or an invalid value.
    """
    if not q:
        return None
    aliases = {
        "quant_type": "bnb_4bit_quant_type",
        "double_quant": "bnb_4bit_use_double_quant",
        "compute_dtype": "bnb_4bit_compute_dtype",
    }
    out = {
        "bits": 4,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "float16",
        "llm_int8_threshold": 6.0,
        "llm_int8_has_fp16_weight": False,
    }
    for key, value in q.items():
        key = aliases.get(key, key)
        if key == "backend":
            if value not in (None, "bitsandbytes"):
                raise ValueError(f"quantization backend {value!r} is not supported for evaluation")
            continue
        if key not in out:
            raise ValueError(f"unknown quantization setting {key!r}")
        out[key] = value
    if out["bits"] not in (4, 8):
        raise ValueError(f"quantization bits must be 4 or 8, not {out['bits']!r}")
    if out["bnb_4bit_quant_type"] not in ("nf4", "fp4"):
        raise ValueError(f"quant_type must be nf4 or fp4, not {out['bnb_4bit_quant_type']!r}")
    cd = _DTYPE_NAMES.get(str(out["bnb_4bit_compute_dtype"]))
    if cd is None:
        raise ValueError(f"unknown compute_dtype {out['bnb_4bit_compute_dtype']!r}")
    out["bnb_4bit_compute_dtype"] = cd
    return out


# ----------------------------------------------------------------------------- resolution


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype_name(spec: ModelSpec, device: str) -> str:
    if spec.dtype != "auto":
        return _DTYPE_NAMES[spec.dtype]
    q = normalize_quantization(spec.quantization)
    if q is not None:
        return q["bnb_4bit_compute_dtype"]
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "float32"


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def _bnb_config(q: dict):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=q["bits"] == 4,
        load_in_8bit=q["bits"] == 8,
        llm_int8_threshold=q["llm_int8_threshold"],
        llm_int8_has_fp16_weight=q["llm_int8_has_fp16_weight"],
        bnb_4bit_compute_dtype=_torch_dtype(q["bnb_4bit_compute_dtype"]),
        bnb_4bit_use_double_quant=q["bnb_4bit_use_double_quant"],
        bnb_4bit_quant_type=q["bnb_4bit_quant_type"],
    )


def _has_tokenizer(folder: str) -> bool:
    p = Path(folder)
    return (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()


def _tokenizer_source(spec: ModelSpec) -> str:
    if spec.weights_path and _has_tokenizer(spec.weights_path):
        return spec.weights_path
    return spec.base_path


def _load_tokenizer(spec: ModelSpec, *, for_inference: bool = True):
    """The spec's tokenizer; for inference with a pad token (eos if it has none) and left padding."""
    from transformers import AutoTokenizer

    src = _tokenizer_source(spec)
    tok = AutoTokenizer.from_pretrained(src)
    if not for_inference:
        return tok
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer in {src} has neither a pad nor an eos token")
        warnings.warn(
            f"tokenizer in {src} has no pad token; using eos {tok.eos_token!r} as pad",
            stacklevel=3,
        )
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _check_folder(path: str, what: str) -> None:
    if not Path(path).is_dir():
        raise ModelNotFoundError(f"{what} folder not found: {path}")


# ----------------------------------------------------------------------------- fingerprint


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weights_folder_summary(folder: Path) -> dict:
    """A full fine-tuned folder: its small text files and every weight file, by content."""
    from ftpipe.models.registry import FINGERPRINT_TEXT_FILES, WEIGHT_SUFFIXES

    out: dict[str, Any] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        if p.name.endswith(WEIGHT_SUFFIXES) or p.name in FINGERPRINT_TEXT_FILES:
            out[p.name] = sha256_file(p)
    return out


def _base_summary(base: Path) -> str:
    # The store's definition: config/tokenizer files plus each weight file by the sha256 that
    # ftpipe_model.json records (or by size and mtime for folders from outside the store).
    from ftpipe.models import model_fingerprint

    return model_fingerprint(base)


def _adapter_summary(adapter: Path) -> dict:
    _check_folder(str(adapter), "adapter")
    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        weights = adapter / "adapter_model.bin"
    if not weights.exists():
        raise ModelNotFoundError(f"no adapter_model.safetensors in adapter folder {adapter}")
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    # Where the base lived on the training machine does not change the adapter.
    for key in ("base_model_name_or_path", "revision"):
        cfg.pop(key, None)
    return {"adapter_config": cfg, "weights": sha256_file(weights)}


def spec_fingerprint(spec: ModelSpec) -> str:
    """A short stable hash of what ``load_model(spec)`` loads, usable before loading it.

    Meant as the cache key of base-model results. Covers the base folder
    (``ftpipe.models.model_fingerprint``: config and tokenizer files plus the weight hashes its
    ``ftpipe_model.json`` records, else weight sizes and mtimes), the adapter (its config without
    the base path, sha256 of its weights), full weights (sha256 of every weight and config file),
    quantization, the resolved dtype and the scoring semantics version. The device is not part
    of it.

    Args:
        spec: What would be loaded.

    Returns:
        16 hex characters.

    Raises:
        ModelNotFoundError: A folder of the spec, or the adapter's weights, do not exist.
    """
    device = _resolve_device(spec.device)
    parts: dict[str, Any] = {
        "v": _SEMANTICS_VERSION,
        "dtype": _resolve_dtype_name(spec, device),
        "quantization": normalize_quantization(spec.quantization),
    }
    if spec.weights_path:
        parts["weights"] = _weights_folder_summary(Path(spec.weights_path))
        if not _has_tokenizer(spec.weights_path):
            parts["base"] = _base_summary(Path(spec.base_path))
    else:
        parts["base"] = _base_summary(Path(spec.base_path))
    if spec.adapter_path:
        parts["adapter"] = _adapter_summary(Path(spec.adapter_path))
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return _sha256_bytes(blob)[:16]


# ----------------------------------------------------------------------------- loading


def _load_hf_model(spec: ModelSpec, device: str, dtype_name: str, *, quantize: bool = True):
    from transformers import AutoModelForCausalLM

    path = spec.weights_path or spec.base_path
    _check_folder(path, "model")
    q = normalize_quantization(spec.quantization) if quantize else None
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype_name)}
    if q is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            raise EvalError(
                "loading a quantized model needs bitsandbytes", hint="pip install 'bitsandbytes>=0.50'"
            ) from e
        kwargs["quantization_config"] = _bnb_config(q)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if q is None:
        model.to(device)
    return model


def _attach_adapter(model, adapter_path: str):
    from peft import PeftConfig, PeftModel

    _check_folder(adapter_path, "adapter")
    config = PeftConfig.from_pretrained(adapter_path)
    # The recorded base path may be another machine's; we load the base from the spec.
    config.base_model_name_or_path = None
    config.inference_mode = True
    if getattr(config, "tokenizer_name_or_path", None):
        # Prompt tuning with text init re-runs that init from this tokenizer before loading the
        # trained embeddings: the training machine's path may not exist here (the base's tokenizer is it).
        config.tokenizer_name_or_path = getattr(model, "name_or_path", None) or config.tokenizer_name_or_path
    return PeftModel.from_pretrained(model, adapter_path, config=config, is_trainable=False)


def _disable_cpu_bf16_4bit_kernel(model) -> int:
    """Make bitsandbytes' CPU 4-bit layers compute as in training (see module docstring)."""
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - no quantized layers then
        return 0
    n = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def _eos_ids(tokenizer, model) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in (gen_eos, tokenizer.eos_token_id):
        if v is None:
            continue
        for i in v if isinstance(v, (list, tuple)) else [v]:
            if i not in ids:
                ids.append(int(i))
    return ids


def load_model(spec: ModelSpec, *, fast_cpu_4bit: bool = False) -> LoadedModel:
    """Load the tokenizer, the model (quantized if asked) and the adapter, in eval mode.

    The tokenizer pads on the left (eos stands in for a missing pad token, with a warning). The
    model's generation config is replaced by plain greedy decoding, so that settings shipped in a
    checkpoint's ``generation_config.json`` (sampling, repetition penalty) cannot make base and
    tuned models decode differently.

    Args:
        spec: What to load.
        fast_cpu_4bit: On CPUs with AVX512-BF16, let bitsandbytes run 4-bit layers with its fused
            bf16 kernel (about 1.8x faster on SmolLM2-135M) instead of the float32
            ``dequantize(W) @ x`` that training used; greedy outputs can then differ slightly
            (1 of 8 answers changed in a probe).

    Returns:
        The loaded model.

    Raises:
        ModelNotFoundError: A folder of the spec does not exist.
        EvalError: Quantization was asked for and bitsandbytes is missing.
    """
    _check_folder(spec.base_path, "base model")
    device = _resolve_device(spec.device)
    dtype_name = _resolve_dtype_name(spec, device)
    tokenizer = _load_tokenizer(spec)
    model = _load_hf_model(spec, device, dtype_name)
    if spec.quantization and device == "cpu" and not fast_cpu_4bit:
        _disable_cpu_bf16_4bit_kernel(model)
    if spec.adapter_path:
        model = _attach_adapter(model, spec.adapter_path)
    model.eval()
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, device=device, dtype=dtype_name)


# ----------------------------------------------------------------------------- the loaded model


def _soft_prompt_tokens(model) -> int:
    """Number of virtual tokens of a PEFT prompt-tuning model, else 0."""
    config = getattr(model, "active_peft_config", None)
    if config is None or str(getattr(config, "peft_type", "")).split(".")[-1] != "PROMPT_TUNING":
        return 0
    return int(config.num_virtual_tokens)


def _prompt_learning(model) -> bool:
    """A PEFT prompt-learning adapter (prompt/prefix/p-tuning): its virtual tokens live in the embeddings or in
    the KV cache itself, so the KV-cache shortcuts below do not apply."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


def _plain_kv_cache(cache) -> bool:
    """A DynamicCache of plain full-attention layers only, the one kind whose rows we may repeat and select.

    Sliding-window, linear-attention, quantized or static layers (and older transformers without ``layers``)
    make the callers fall back to their uncached path.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return (type(cache) is DynamicCache and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
            and hasattr(cache, "batch_repeat_interleave") and hasattr(cache, "batch_select_indices"))


def _common_prefix_len(rows: list[list[int]]) -> int:
    """Length of the longest common token prefix of the rows."""
    n = min(len(r) for r in rows)
    first = rows[0]
    for j in range(n):
        if any(r[j] != first[j] for r in rows):
            return j
    return n


# A shared prompt prefix shorter than this is not worth its extra forward pass.
_MIN_SHARED_PREFIX = 8


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    if stop:
        cut = len(text)
        for s in stop:
            if s:
                i = text.find(s)
                if 0 <= i < cut:
                    cut = i
        text = text[:cut]
    return text.strip()


class LoadedModel:
    """A loaded model (base, base + adapter, or full weights) with its tokenizer, ready to score.

    Built by ``load_model``. Its methods run under ``torch.inference_mode`` and never print;
    long calls report through a ``progress`` callback.

    Attributes:
        spec: What was loaded.
        model: The transformers model, or a ``PeftModel`` wrapping it.
        tokenizer: Its tokenizer (left padding).
        device: The resolved device ("cpu", "cuda", ...).
        dtype: The resolved dtype name ("float32", "bfloat16", "float16").
        pad_id: The pad token id used for batching.
        eos_ids: Token ids that end a generation.
        reuse_kv: Reuse KV caches: a prompt prefix shared by a whole ``generate`` call is run once,
            and each distinct multiple-choice context once for all its options. On by default only
            in float32 (compute dtype float32 when quantized), where the results equal the full
            paths (generations token for token, log-likelihoods to ~1e-5). In bf16/fp16 they
            differ by as much as batching already makes them (SmolLM2 bf16, 16 items: |dLL| up to
            0.45 against 0.37 from batch 16 vs 1; 12-14/16 generations identical against 10-14/16),
            so it is off there and outputs stay as before; set it True to trade that for speed.
            False runs every row in full. Prompt-learning adapters always run in full.
    """

    def __init__(self, *, spec: ModelSpec, model, tokenizer, device: str, dtype: str):
        from transformers import GenerationConfig

        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.pad_id = int(tokenizer.pad_token_id)
        hf = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.eos_ids = _eos_ids(tokenizer, hf)
        # A clean generation config: plain greedy, nothing inherited from the checkpoint's
        # generation_config.json (sampling, repetition penalties...), so base and tuned compare fairly.
        hf.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=self.eos_ids or None,
            pad_token_id=self.pad_id,
            do_sample=False,
            num_beams=1,
        )
        cfg = getattr(hf, "config", None)
        self.max_length = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
        self._fingerprint: str | None = None
        self.soft_prompt_tokens = _soft_prompt_tokens(model)
        self.reuse_kv = dtype == "float32"

    # -- helpers

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _left_pad(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _right_pad(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    def new_tokens(self, row: list[int]) -> list[int]:
        """A generated row's tokens up to (without) its first end-of-sequence token."""
        eos = set(self.eos_ids)
        for j, t in enumerate(row):
            if t in eos:
                return row[:j]
        return row

    def _with_soft_prompt(self, input_ids, mask):
        """Prompt tuning: embeddings laid out [left padding][soft prompt][tokens][right padding], and the mask.

        PEFT puts the soft prompt before the padding, so with RoPE a row's result depends on how much
        padding its batch gave it; here the soft prompt always sits right before the row's first token,
        as in training (ftpipe.training.ludwig_compat). Returns (embeddings, mask, positions of the
        tokens in the new layout).
        """
        import torch

        base = self.model.get_base_model()
        n, (batch, width) = self.soft_prompt_tokens, input_ids.shape
        emb = base.get_input_embeddings()(input_ids)
        soft = self.model.get_prompt(batch_size=batch).to(emb.dtype)
        lead = (mask.cumsum(-1) == 0).sum(-1)  # leading zeros of the mask: left padding
        token_pos = torch.arange(width, device=input_ids.device)[None, :]
        dest = token_pos + n * (token_pos >= lead[:, None])
        slots = torch.arange(width + n, device=input_ids.device)[None, :]
        is_soft = (slots >= lead[:, None]) & (slots < lead[:, None] + n)
        full = emb.new_zeros(batch, width + n, emb.shape[-1])
        full[is_soft] = soft.reshape(-1, soft.shape[-1])
        full = full.scatter(1, dest[..., None].expand(-1, -1, emb.shape[-1]), emb)
        new_mask = mask.new_zeros(batch, width + n)
        new_mask[is_soft] = 1
        new_mask = new_mask.scatter(1, dest, mask)
        return full, new_mask, dest

    # -- generation

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        batch_size: int = 16,
        stop: list[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Greedy completions of fully rendered prompts, in the prompts' order.

        Prompts are tokenized as they are (no special tokens added: the chat template is already
        in them), sorted by length (longest first) and left-padded in batches with attention
        masks. In float32 the results equal generating each prompt alone, token for token (in
        bf16/fp16 padding can flip near-ties). A row stops at an eos token, at ``max_new_tokens``,
        or once its text contains a stop string. With ``reuse_kv``, a token prefix all prompts share
        (a system prompt, few-shot examples) is run once per call and its KV cache reused by every
        batch (see ``_shared_prefix_cache``), with the same outputs.

        Args:
            prompts: Fully rendered prompts.
            max_new_tokens: Most tokens generated per prompt.
            batch_size: Prompts per forward pass.
            stop: Strings that end a completion; the text is cut before the first one found.
            progress: Called after each batch with the number of prompts finished so far.

        Returns:
            For each prompt, only the new text, decoded without special tokens, cut at the first
            stop string and stripped.
        """
        import torch

        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        encoded = [self._encode(p) for p in prompts]
        for i, e in enumerate(encoded):
            if not e:
                raise ValueError(f"prompt {i} is empty after tokenization")
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[str | None] = [None] * len(prompts)
        stops = [s for s in (stop or []) if s]
        # transformers' own stop-string check works on token ids (no decoding of every row at every
        # step); the text is cut at the first stop string afterwards either way, so outputs are the same.
        stop_kwargs = {"stop_strings": stops, "tokenizer": self.tokenizer} if stops else {}
        shared, prefix_cache = self._shared_prefix_cache(encoded, stops)

        finished = 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            cache_kwargs = {}
            if prefix_cache is not None:
                input_ids, mask = self._prefix_pad([encoded[i] for i in idx], shared)
                cache = copy.deepcopy(prefix_cache)  # generate extends the cache in place
                cache.batch_repeat_interleave(len(idx))
                cache_kwargs["past_key_values"] = cache
            else:
                input_ids, mask = self._left_pad([encoded[i] for i in idx])
            width = input_ids.shape[1]
            if self.soft_prompt_tokens:  # from embeddings: only the new tokens come back
                width = 0
            with torch.inference_mode():
                if self.soft_prompt_tokens:
                    embeds, soft_mask, _ = self._with_soft_prompt(input_ids, mask)
                    out = self.model.get_base_model().generate(
                        inputs_embeds=embeds, attention_mask=soft_mask, max_new_tokens=max_new_tokens,
                        do_sample=False, num_beams=1, **stop_kwargs)
                else:
                    out = self.model.generate(
                        input_ids=input_ids,
                        attention_mask=mask,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        num_beams=1,
                        **stop_kwargs,
                        **cache_kwargs,
                    )
            for row, i in zip(out[:, width:].tolist(), idx):
                text = self.tokenizer.decode(self.new_tokens(row), skip_special_tokens=True)
                results[i] = _cut_at_stop(text, stops)
            finished += len(idx)
            if progress is not None:
                progress(finished)
        return [r if r is not None else "" for r in results]

    def _shared_prefix_cache(self, encoded: list[list[int]], stops: list[str]):
        """(p, KV cache of the first p tokens at batch size 1) for the prompts' shared token prefix, or (0, None).

        Left padding would put a shared prefix at different columns in every row, so ``_prefix_pad`` lays
        the rows out as [prefix][padding][suffix] instead; ``generate`` takes position ids from the
        attention mask, so each real token keeps its unpadded position and the result is the plain
        batched one (token for token in float32). The prefix is a common *token* prefix (a common
        text prefix may tokenize differently at its end) and leaves every row at least one suffix
        token, or, with stop strings, as many suffix tokens as the longest stop string has characters:
        transformers matches stop strings on that many trailing ids, prompt included, and those must
        be the prompt's own tokens, not padding.
        """
        if not self.reuse_kv or _prompt_learning(self.model) or not encoded:
            return 0, None
        keep = max([1] + [len(s) for s in stops])
        p = min(_common_prefix_len(encoded), min(len(e) for e in encoded) - keep)
        if p < _MIN_SHARED_PREFIX:
            return 0, None
        import torch

        ids = torch.tensor([encoded[0][:p]], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            cache = self.model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        return (p, cache) if _plain_kv_cache(cache) else (0, None)

    def _prefix_pad(self, rows: list[list[int]], p: int):
        """Rows sharing their first p tokens as [prefix][padding][suffix], and the attention mask (0 on padding)."""
        import torch

        suffixes = [r[p:] for r in rows]
        width = p + max(len(s) for s in suffixes)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        ids[:, :p] = torch.tensor(rows[0][:p], dtype=torch.long)
        mask[:, :p] = 1
        for i, s in enumerate(suffixes):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- log-likelihood of continuations

    def _continuation_request(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context:
            whole = self._encode(context + continuation)
            n_ctx = len(self._encode(context))
            ctx_enc, cont_enc = whole[:n_ctx], whole[n_ctx:]
        else:
            # Nothing to condition on: condition on a start token, like lm-evaluation-harness.
            prefix = self.tokenizer.bos_token_id
            if prefix is None:
                prefix = self.eos_ids[0]
            ctx_enc, cont_enc = [int(prefix)], self._encode(continuation)
        return ctx_enc, cont_enc

    def loglikelihood(
        self,
        contexts: list[str],
        continuations: list[str],
        *,
        batch_size: int = 16,
        progress: Callable[[int], None] | None = None,
    ) -> list[tuple[float, int]]:
        """Log-likelihood of each continuation given its context.

        The continuation's tokens are the tail of ``encode(context + continuation)`` after
        ``len(encode(context))`` tokens (lm-evaluation-harness's boundary rule, without its move
        of trailing context whitespace into the continuation, since chat-rendered contexts end in
        a newline). No special tokens are added; an empty context conditions on the BOS (else
        eos) token. Over-long inputs lose tokens from the left. Batches are left-padded with
        position ids taken from the attention mask, and only the continuation's logits are kept.
        With ``reuse_kv`` (the default), pairs that share a context (the options of one
        multiple-choice item) run that context once and score their continuations from its KV cache:
        the same log-likelihoods to float rounding, in far fewer token positions.

        Args:
            contexts: Fully rendered contexts.
            continuations: The texts to score, one per context.
            batch_size: Pairs per forward pass.
            progress: Called after each batch with the number of pairs finished so far.

        Returns:
            For each pair, (sum of the continuation tokens' log-probabilities in nats, number of
            continuation tokens); (0.0, 0) for an empty continuation.
        """
        if len(contexts) != len(continuations):
            raise ValueError("contexts and continuations differ in length")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        requests = [self._continuation_request(ctx, cont) for ctx, cont in zip(contexts, continuations)]
        results: list[tuple[float, int]] = [(0.0, 0)] * len(requests)
        todo = [i for i, (_, cont) in enumerate(requests) if cont]
        finished = len(requests) - len(todo)

        def done(n: int) -> None:
            nonlocal finished
            finished += n
            if progress is not None:
                progress(finished)

        # Pairs that need left truncation keep the full path (a shared context cache would be cut differently).
        rest = todo
        if self.reuse_kv and not _prompt_learning(self.model):
            fits = [i for i in todo if not self.max_length or len(requests[i][0]) + len(requests[i][1]) - 1 <= self.max_length]
            long = [i for i in todo if i not in set(fits)]
            rest = self._loglikelihood_from_context_cache(requests, fits, results, batch_size, done) + long
        self._loglikelihood_full(requests, rest, results, batch_size, done)
        return results

    def _loglikelihood_full(self, requests, todo: list[int], results: list, batch_size: int, done) -> None:
        """Score the pairs `todo` one full forward per pair (left-padded batches), into `results`."""
        import torch

        rows: dict[int, list[int]] = {}
        for i in todo:
            ctx_enc, cont_enc = requests[i]
            full = (ctx_enc + cont_enc)[:-1]
            if self.max_length and len(full) > self.max_length:
                full = full[-self.max_length :]
            rows[i] = full
        order = sorted(todo, key=lambda i: -len(rows[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = self._left_pad([rows[i] for i in idx])
            keep = max(len(requests[i][1]) for i in idx)
            with torch.inference_mode():
                if self.soft_prompt_tokens:  # the soft prompt sits before the tokens: the last `keep` are still theirs
                    embeds, mask, _ = self._with_soft_prompt(input_ids, mask)
                    logits = self.model.get_base_model()(
                        inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                        logits_to_keep=keep, use_cache=False).logits
                else:
                    logits = self.model(
                        input_ids=input_ids,
                        attention_mask=mask,
                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                        logits_to_keep=keep,
                        use_cache=False,
                    ).logits
            for b, i in enumerate(idx):
                target = requests[i][1]
                c = len(target)
                logp = torch.log_softmax(logits[b, keep - c :].float(), dim=-1)
                tgt = torch.tensor(target, dtype=torch.long, device=logp.device)
                results[i] = (float(logp.gather(-1, tgt[:, None]).sum()), c)
            done(len(idx))

    def _loglikelihood_from_context_cache(self, requests, todo: list[int], results: list, batch_size: int,
                                          done) -> list[int]:
        """Score the pairs `todo` running each distinct context once, into `results`; returns the pairs left over.

        Pairs are grouped by their context *token ids* (``_continuation_request`` already fixed the
        boundary, so a pair whose context tokenizes differently is simply its own group). Per chunk of
        groups (at most `batch_size` pairs, a larger group alone): one left-padded forward over the
        contexts with position ids from the mask, keeping the cache and the last logits (they score
        each continuation's first token); the cache rows repeated once per continuation; one
        right-padded forward over all the continuations from that cache. A token prefix all contexts share
        runs once for the whole call (``_shared_prefix_cache``; the contexts laid out as in ``generate``). Log-likelihoods equal the
        full path's to float rounding (about 1e-5 in float32). If the model's cache is not a plain
        DynamicCache, nothing is scored and every pair is returned.
        """
        import torch

        groups: dict[tuple[int, ...], list[int]] = {}
        for i in todo:
            groups.setdefault(tuple(requests[i][0]), []).append(i)
        chunks: list[list[tuple[int, ...]]] = []
        size = 0
        for key in sorted(groups, key=len, reverse=True):  # longest first: similar lengths pad less
            if not chunks or size + len(groups[key]) > batch_size:
                chunks.append([])
                size = 0
            chunks[-1].append(key)
            size += len(groups[key])
        # A token prefix every context shares (a system prompt) runs once, as in `generate`.
        shared, prefix_cache = self._shared_prefix_cache([list(k) for k in groups], [])
        for c, keys in enumerate(chunks):
            if prefix_cache is not None:
                ctx_ids, ctx_mask = self._prefix_pad([list(k) for k in keys], shared)
                ctx_pos = (ctx_mask.cumsum(-1) - 1).clamp(min=0)
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(keys))
                with torch.inference_mode():
                    out = self.model(input_ids=ctx_ids[:, shared:], attention_mask=ctx_mask,
                                     position_ids=ctx_pos[:, shared:], past_key_values=cache, use_cache=True,
                                     logits_to_keep=1)
            else:
                ctx_ids, ctx_mask = self._left_pad([list(k) for k in keys])
                ctx_pos = (ctx_mask.cumsum(-1) - 1).clamp(min=0)
                with torch.inference_mode():
                    out = self.model(input_ids=ctx_ids, attention_mask=ctx_mask, position_ids=ctx_pos, use_cache=True,
                                     logits_to_keep=1)
            cache = out.past_key_values
            if not _plain_kv_cache(cache):
                return [i for k in (key for ks in chunks[c:] for key in ks) for i in groups[k]]
            pairs = [i for k in keys for i in groups[k]]
            conts = [requests[i][1] for i in pairs]
            rep = torch.tensor([g for g, k in enumerate(keys) for _ in groups[k]], device=ctx_ids.device)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[rep]
            lls = [float(first[r, t[0]]) for r, t in enumerate(conts)]
            # Every continuation token but the last is an input; single-token continuations need no second forward.
            m = max(len(t) for t in conts) - 1
            if m > 0:
                cache.batch_select_indices(rep)
                ids, mask = self._right_pad([t[:-1] for t in conts])
                pos = ctx_pos[rep][:, -1:] + 1 + torch.arange(m, device=ids.device)[None, :]
                with torch.inference_mode():
                    logits = self.model(input_ids=ids, attention_mask=torch.cat([ctx_mask[rep], mask], dim=1),
                                        position_ids=pos, past_key_values=cache, use_cache=False).logits
                for r, t in enumerate(conts):
                    if len(t) > 1:
                        logp = torch.log_softmax(logits[r, : len(t) - 1].float(), dim=-1)
                        tgt = torch.tensor(t[1:], dtype=torch.long, device=logp.device)
                        lls[r] += float(logp.gather(-1, tgt[:, None]).sum())
            for r, i in enumerate(pairs):
                results[i] = (lls[r], len(conts[r]))
            done(len(pairs))
        return []

    # -- perplexity on raw text

    def text_nll(
        self,
        texts: list[str],
        *,
        max_length: int = 512,
        batch_size: int = 8,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[float, int]:
        """Total negative log-likelihood of raw texts, for perplexity = exp(nll / n).

        Each text is tokenized with the tokenizer's default special tokens (a BOS where the model
        uses one) and truncated to ``max_length`` tokens; every token after the first is
        predicted. Texts shorter than two tokens contribute nothing.

        Args:
            texts: Raw texts (no chat template).
            max_length: Tokens kept per text, from its start.
            batch_size: Texts per forward pass.
            progress: Called after each batch with the number of texts finished so far.

        Returns:
            (total negative log-likelihood in nats, number of predicted tokens).
        """
        import torch
        import torch.nn.functional as F

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_length < 2:
            raise ValueError("max_length must be >= 2")
        encoded = [list(self.tokenizer(t)["input_ids"])[:max_length] for t in texts]
        scored = [i for i in range(len(texts)) if len(encoded[i]) >= 2]
        order = sorted(scored, key=lambda i: -len(encoded[i]))
        total, count = 0.0, 0
        finished = len(texts) - len(order)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = self._right_pad([encoded[i] for i in idx])
            with torch.inference_mode():
                if self.soft_prompt_tokens:
                    embeds, soft_mask, dest = self._with_soft_prompt(input_ids, mask)
                    logits = self.model.get_base_model()(inputs_embeds=embeds, attention_mask=soft_mask, use_cache=False).logits
                    logits = logits.gather(1, dest[..., None].expand(-1, -1, logits.shape[-1]))
                else:
                    logits = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
            for b, i in enumerate(idx):
                n = len(encoded[i])
                nll = F.cross_entropy(logits[b, : n - 1].float(), input_ids[b, 1:n], reduction="sum")
                total += float(nll)
                count += n - 1
            del logits
            finished += len(idx)
            if progress is not None:
                progress(finished)
        return total, count

    # -- a classification head on the last hidden state

    def last_hidden(self, prompts: list[str], *, max_length: int, batch_size: int = 16,
                    progress: Callable[[int], None] | None = None):
        """The final hidden state at each prompt's last token, as a trained classification head reads it.

        Tokenized exactly as Ludwig's `hf_tokenizer` preprocessing does (`tokenizer.encode`, the
        tokenizer's own special tokens, then its first `max_length` tokens), left-padded with
        position ids from the mask, so padding changes nothing.

        Returns:
            A float32 CPU tensor [len(prompts), hidden size].
        """
        import torch

        encoded = [list(self.tokenizer.encode(p))[:max_length] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        out: list = [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = self._left_pad([encoded[i] for i in idx])
            with torch.inference_mode():
                hidden = self.model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                    output_hidden_states=True, logits_to_keep=1, use_cache=False).hidden_states[-1][:, -1]
            for row, i in zip(hidden.float().cpu(), idx):
                out[i] = row
            if progress is not None:
                progress(min(start + batch_size, len(order)))
        return torch.stack(out)

    def classify(self, head: "ClassificationHead", prompts: list[str], *, batch_size: int = 16,
                 progress: Callable[[int], None] | None = None) -> list[list[float]]:
        """Class probabilities of a trained head over this (base or base + adapter) model, per prompt."""
        import torch

        hidden = self.last_hidden(prompts, max_length=head.sequence_length, batch_size=batch_size, progress=progress)
        return torch.softmax(hidden @ head.weight.T + head.bias, dim=-1).tolist()

    # -- identity

    def fingerprint(self) -> str:
        """Short stable hash of what was loaded (see ``spec_fingerprint``).

        Returns:
            16 hex characters.
        """
        if self._fingerprint is None:
            self._fingerprint = spec_fingerprint(self.spec)
        return self._fingerprint


# ----------------------------------------------------------------------------- classification heads


@dataclass(frozen=True)
class ClassificationHead:
    """A category head trained on an LLM body (method classification_head), as the train stage exports it.

    Attributes:
        weight, bias: The head's Linear layer (torch tensors, [classes, hidden] and [classes]).
        labels: Class names in the head's index order (Ludwig's, by training frequency).
        sequence_length: Tokens the head read per prompt in training.
        body: "lora" (an adapter folder sits next to the head) or "frozen".
        fingerprint: sha256 of the head's files (16 hex characters).
    """

    weight: Any
    bias: Any
    labels: list[str]
    sequence_length: int
    body: str
    fingerprint: str


def load_head(folder: str | Path) -> ClassificationHead:
    """Load `head.safetensors` and `head.json` from a run's `head/` folder.

    Raises:
        ModelNotFoundError: The folder or one of its files is missing.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    weights, config = folder / "head.safetensors", folder / "head.json"
    for path in (weights, config):
        if not path.is_file():
            raise ModelNotFoundError(f"classification head file not found: {path}")
    meta = json.loads(config.read_text())
    state = load_file(str(weights))
    digest = _sha256_bytes((sha256_file(weights) + sha256_file(config)).encode())[:16]
    return ClassificationHead(weight=state["weight"].float(), bias=state["bias"].float(), labels=list(meta["labels"]),
                              sequence_length=int(meta["sequence_length"]), body=meta["body"], fingerprint=digest)


# ----------------------------------------------------------------------------- merging


def _dequantize_fresh(model, dtype) -> None:
    """Dequantize a just-loaded bitsandbytes model in place (before any forward pass)."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            raise RuntimeError("4-bit weights were repacked by a forward pass; dequantize a fresh load")
    model.dequantize(dtype=dtype)


def merge_and_save(
    spec: ModelSpec, out_dir: Path, *, dtype: str = "auto", overwrite: bool = False
) -> Path:
    """Write a standalone HF folder: base + adapter merged (PEFT ``merge_and_unload``) + tokenizer.

    The merge runs in float32 on the CPU. For a quantized spec the base is loaded quantized as for
    training and dequantized to float32 before merging (exactly the weights the adapter was
    trained against), never merged into 4-bit weights. The folder is built next to ``out_dir``
    and renamed into place at the end.

    Args:
        spec: Base (and quantization) plus the adapter to merge.
        out_dir: The folder to create.
        dtype: Dtype of the saved weights: "auto" keeps the base checkpoint's 16-bit dtype if it
            has one, else float32.
        overwrite: Replace an existing ``out_dir``.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: The spec has no adapter.
        BadInputError: ``out_dir`` exists and ``overwrite`` is False.
        ModelNotFoundError: A folder of the spec does not exist.
    """
    import torch

    out_dir = Path(out_dir)
    if not spec.adapter_path:
        raise ValueError("merge_and_save needs a spec with an adapter_path")
    if out_dir.exists() and not overwrite:
        raise BadInputError(
            f"{out_dir} already exists", hint="choose another folder or pass overwrite=True"
        )
    tokenizer = _load_tokenizer(spec, for_inference=False)  # saved as it is, unchanged
    q = normalize_quantization(spec.quantization)
    if q is not None:
        base = _load_hf_model(spec, "cpu", q["bnb_4bit_compute_dtype"])
        _dequantize_fresh(base, torch.float32)
        base.to(torch.float32)
    else:
        base = _load_hf_model(spec, "cpu", "float32", quantize=False)
    stored = getattr(base.config, "dtype", None) or getattr(base.config, "torch_dtype", None)
    if dtype == "auto":
        name = str(stored).replace("torch.", "") if stored is not None else "float32"
        save_dtype = name if name in ("bfloat16", "float16") else "float32"
    else:
        save_dtype = _DTYPE_NAMES[dtype]
    peft_model = _attach_adapter(base, spec.adapter_path)
    merged = peft_model.merge_and_unload()
    merged = merged.to(_torch_dtype(save_dtype))
    if getattr(merged.config, "quantization_config", None) is not None:
        del merged.config.quantization_config
    for attr in ("hf_quantizer", "is_quantized", "quantization_method"):
        if attr in merged.__dict__:
            try:
                delattr(merged, attr)
            except AttributeError:  # pragma: no cover
                pass
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
