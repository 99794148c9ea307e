"""ftpipe.evaluation.generation on tiny models: batching equals one-by-one, adapters, scoring, merging, 4-bit.

The store's tiny-llama (tied embeddings, init std 0.02) greedily repeats the prompt's last token
forever, which would make every generation test pass vacuously. ``varied_base`` re-draws its layer
weights with std 0.2 so that greedy outputs differ from prompt to prompt and token to token.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from ftpipe.errors import BadInputError, ModelNotFoundError  # noqa: E402
from ftpipe.spec.schema import EvaluationSpec  # noqa: E402
from ftpipe.evaluation.generation import (  # noqa: E402
    LoadedModel,
    ModelSpec,
    load_model,
    merge_and_save,
    normalize_quantization,
    spec_fingerprint,
)

QUESTIONS = [
    "hi",
    "What is the capital of France?",
    "Write a long story about a dragon who loves to bake bread in the mountains near a lake.",
    "2+2?",
    "Name three colors.",
    "Explain, in a few sentences and with one example, why the sky looks blue during the day.",
    "Translate 'good morning' into Spanish.",
]

CONTEXTS = [
    "The quick brown fox",
    "<|im_start|>user\nIs this review positive or negative? Great film!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "A",
    "Once upon a time, in a land far away, there lived a",
    "",
]
CONTINUATIONS = [" jumps over the lazy dog", "Positive", " cat", " king and a queen", "Hello there"]

TEXTS = [
    "Perplexity is the exponential of the average negative log-likelihood per token.",
    "Short text.",
    "x",
    "A considerably longer passage of raw domain text, written only so that it runs past the "
    "sixteen-token limit this test sets, which exercises truncation.",
]

BNB_4BIT = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from two threads, and on a busy 2-core machine two OpenMP threads
    made this file 7x slower (123 s against 17 s with one thread, measured under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def _chat(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


@pytest.fixture(scope="session")
def varied_base(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama with its layer weights redrawn at std 0.2 (seeded): varied greedy outputs."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("varied_base")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(str(out))
    for f in tiny_llama_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


def _make_adapter(base: Path, out: Path, seed: int, *, quantized: bool = False) -> Path:
    """A random LoRA adapter (init_lora_weights=False, so it changes outputs), saved as PEFT does,
    with adapter_config.json pointing at a base path that does not exist (as after Ludwig on
    another machine)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # make the adapter's effect clearly visible on this tiny model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)
    peft_model.save_pretrained(str(out))
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "/nonexistent/training-machine/models/tiny-llama"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return out


@pytest.fixture(scope="session")
def adapter_dir(varied_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_adapter(varied_base, tmp_path_factory.mktemp("adapter"), seed=0)


@pytest.fixture(scope="session")
def base_model(varied_base: Path) -> LoadedModel:
    return load_model(ModelSpec(base_path=str(varied_base), device="cpu"))


@pytest.fixture(scope="session")
def tuned_model(varied_base: Path, adapter_dir: Path) -> LoadedModel:
    return load_model(ModelSpec(base_path=str(varied_base), adapter_path=str(adapter_dir), device="cpu"))


@pytest.fixture(scope="session")
def prompts(base_model: LoadedModel) -> list[str]:
    return [_chat(base_model.tokenizer, q) for q in QUESTIONS]


def _reference_generate(lm: LoadedModel, prompt: str, max_new_tokens: int) -> str:
    """Plain HF generate on one unpadded prompt, bypassing ftpipe's batching."""
    ids = torch.tensor([lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = lm.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    new = out[0, ids.shape[1] :].tolist()
    eos = set(lm.eos_ids)
    new = new[: next((j for j, t in enumerate(new) if t in eos), len(new))]
    return lm.tokenizer.decode(new, skip_special_tokens=True).strip()


# --------------------------------------------------------------------------- import and spec


def test_import_is_light():
    code = (
        "import sys, ftpipe.evaluation.generation; "
        "print(sorted({'torch', 'transformers', 'peft', 'ludwig'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_normalize_quantization_accepts_ludwig_and_short_names():
    short = normalize_quantization(BNB_4BIT)
    ludwig = normalize_quantization(
        {
            "bits": 4,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": "float32",
        }
    )
    assert short == ludwig
    assert normalize_quantization({"bits": 4})["bnb_4bit_compute_dtype"] == "float16"  # Ludwig's default
    with pytest.raises(ValueError, match="unknown quantization setting"):
        normalize_quantization({"bits": 4, "quant_typ": "nf4"})
    with pytest.raises(ValueError, match="not both"):
        ModelSpec(base_path="b", adapter_path="a", weights_path="w")
    with pytest.raises(ModelNotFoundError, match="base model folder not found"):
        load_model(ModelSpec(base_path="/nonexistent/base"))


def test_missing_pad_token_falls_back_to_eos_with_a_warning(varied_base: Path, tmp_path: Path):
    folder = tmp_path / "nopad"
    shutil.copytree(varied_base, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    del cfg["pad_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="no pad token"):
        lm = load_model(ModelSpec(base_path=str(folder), device="cpu"))
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token == "<|im_end|>"
    assert lm.tokenizer.padding_side == "left"


# --------------------------------------------------------------------------- generation


def test_generate_batched_equals_unbatched(base_model: LoadedModel, prompts: list[str]):
    lengths = {len(base_model.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lengths) >= 4  # prompts of really different lengths, so padding is exercised
    batched = base_model.generate(prompts, max_new_tokens=24, batch_size=3)
    one_by_one = [base_model.generate([p], max_new_tokens=24, batch_size=1)[0] for p in prompts]
    reference = [_reference_generate(base_model, p, 24) for p in prompts]
    # the evaluator's default batch (64): every prompt in one batch, padded to the longest
    default = base_model.generate(prompts, max_new_tokens=24, batch_size=EvaluationSpec().batch_size)
    assert batched == one_by_one == reference == default
    assert all(batched) and len(set(batched)) == len(batched)  # the test is not vacuous


def test_generate_stop_strings_and_progress(base_model: LoadedModel, prompts: list[str]):
    full = base_model.generate(prompts, max_new_tokens=24)
    # A stop string taken from the middle of one output: that output is cut there, others are not
    # affected unless they contain it.
    target = full[2]
    stop = target.split()[2]
    calls: list[int] = []
    cut = base_model.generate(
        prompts, max_new_tokens=24, batch_size=4, stop=[stop, "\n\n"], progress=calls.append
    )
    expected = []
    for text in full:
        for s in (stop, "\n\n"):
            text = text.split(s)[0]
        expected.append(text.strip())
    assert cut == expected
    assert cut[2] != target
    assert calls == [4, 7]


def test_adapter_changes_outputs_and_base_comes_from_spec(
    base_model: LoadedModel, tuned_model: LoadedModel, adapter_dir: Path, prompts: list[str]
):
    recorded = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert not Path(recorded).exists()
    base_out = base_model.generate(prompts, max_new_tokens=12)
    tuned_out = tuned_model.generate(prompts, max_new_tokens=12, batch_size=3)
    assert sum(b != t for b, t in zip(base_out, tuned_out)) >= len(prompts) - 1
    assert tuned_out == [_reference_generate(tuned_model, p, 12) for p in prompts]


# --------------------------------------------------------------------------- log-likelihood


def _direct_loglikelihood(lm: LoadedModel, context: str, continuation: str) -> tuple[float, int]:
    tok = lm.tokenizer
    if context:
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
    else:
        whole = [tok.bos_token_id] + tok(continuation, add_special_tokens=False)["input_ids"]
        n_ctx = 1
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([whole])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    total = sum(float(logp[n_ctx - 1 + j, whole[n_ctx + j]]) for j in range(len(whole) - n_ctx))
    return total, len(whole) - n_ctx


@pytest.mark.parametrize("which", ["base", "tuned"])
def test_loglikelihood_batched_equals_direct(
    which: str, base_model: LoadedModel, tuned_model: LoadedModel
):
    lm = base_model if which == "base" else tuned_model
    got = lm.loglikelihood(CONTEXTS, CONTINUATIONS, batch_size=2)
    for (ll, n), ctx, cont in zip(got, CONTEXTS, CONTINUATIONS):
        want_ll, want_n = _direct_loglikelihood(lm, ctx, cont)
        assert n == want_n > 0
        assert ll == pytest.approx(want_ll, abs=1e-4)
    assert lm.loglikelihood(["abc"], [""]) == [(0.0, 0)]


def test_loglikelihood_prefers_a_nudged_continuation(varied_base: Path, tmp_path: Path):
    """A few optimizer steps on context + A make A outscore B (also exercises weights_path)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    context = "<|im_start|>user\nIs the sky blue?<|im_end|>\n<|im_start|>assistant\n"
    choices = ["Yes", "No"]
    base = load_model(ModelSpec(base_path=str(varied_base), device="cpu"))
    before = base.loglikelihood([context] * 2, choices)
    target = choices[0] if before[0][0] < before[1][0] else choices[1]  # nudge toward the loser
    tok = AutoTokenizer.from_pretrained(str(varied_base))
    model = AutoModelForCausalLM.from_pretrained(str(varied_base), dtype=torch.float32)
    ids = torch.tensor([tok(context + target, add_special_tokens=False)["input_ids"]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    model.save_pretrained(str(tmp_path / "full"))
    full = ModelSpec(base_path=str(varied_base), weights_path=str(tmp_path / "full"), device="cpu")
    tuned = load_model(full)
    after = dict(zip(choices, tuned.loglikelihood([context] * 2, choices)))
    other = choices[1] if target == choices[0] else choices[0]
    assert after[target][0] > after[other][0]


# --------------------------------------------------------------------------- KV-cache reuse (issue 16)

SYSTEM = "You are a support assistant for a small bakery. Answer in one short sentence, politely and exactly."

MC_ITEMS = [  # (context, options): the options of an item share its context, as scoring.py builds them
    ("<|im_start|>user\nIs this review positive or negative? Great film!<|im_end|>\n<|im_start|>assistant\n",
     ["Positive", "Negative", "Neutral, mostly", "It is hard to say"]),
    ("Question: which animal barks?\nAnswer:", [" a dog", " a cat", " a very small bird", " fish"]),
    ("A", [" cat", " b"]),
    ("", ["Hello there", "Hi"]),
    ("The quick brown fox", [" jumps over the lazy dog", "", " sleeps"]),
]


@contextlib.contextmanager
def _reuse_kv(lm: LoadedModel, on: bool):
    before = lm.reuse_kv
    lm.reuse_kv = on
    try:
        yield lm
    finally:
        lm.reuse_kv = before


def _fast_and_full(lm: LoadedModel, method: str, *args, **kwargs):
    with _reuse_kv(lm, True):
        fast = getattr(lm, method)(*args, **kwargs)
    with _reuse_kv(lm, False):
        full = getattr(lm, method)(*args, **kwargs)
    return fast, full


@pytest.fixture(scope="session")
def system_prompts(base_model: LoadedModel) -> list[str]:
    return [base_model.tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}], tokenize=False,
        add_generation_prompt=True) for q in QUESTIONS]


@pytest.mark.parametrize("which", ["base", "tuned"])
def test_generate_with_a_shared_prefix_cache_equals_the_plain_batched_path(
    which: str, base_model: LoadedModel, tuned_model: LoadedModel, system_prompts: list[str]
):
    lm = base_model if which == "base" else tuned_model
    encoded = [lm._encode(p) for p in system_prompts]
    shared, cache = lm._shared_prefix_cache(encoded, [])
    assert cache is not None and shared >= 20  # the fast path really runs: the system prompt is shared
    fast, full = _fast_and_full(lm, "generate", system_prompts, max_new_tokens=16, batch_size=3)
    assert fast == full
    assert all(fast) and len(set(fast)) == len(fast)
    # Stop strings (transformers matches them on trailing ids, prompt included): cut the same way.
    uncut = fast
    stop = [uncut[2].split()[1], "\n\n"]
    fast, full = _fast_and_full(lm, "generate", system_prompts, max_new_tokens=16, batch_size=4, stop=stop)
    assert fast == full
    assert fast[2] != uncut[2] and stop[0] not in fast[2]  # the stop string did cut


def test_shared_prefix_leaves_each_row_its_own_tail(base_model: LoadedModel, system_prompts: list[str]):
    encoded = [base_model._encode(p) for p in system_prompts]
    shortest = min(len(e) for e in encoded)
    plain, _ = base_model._shared_prefix_cache(encoded, [])
    with_stop, _ = base_model._shared_prefix_cache(encoded, ["a long stop string, 32 characters"])
    assert plain <= shortest - 1 and with_stop <= shortest - 33
    assert base_model._shared_prefix_cache(encoded[:1] + [base_model._encode("hi")], []) == (0, None)  # no shared prefix
    with _reuse_kv(base_model, False):
        assert base_model._shared_prefix_cache(encoded, []) == (0, None)


def test_kv_reuse_is_on_by_default_only_in_float32(varied_base: Path, base_model: LoadedModel):
    assert base_model.reuse_kv is True
    assert load_model(ModelSpec(base_path=str(varied_base), device="cpu", dtype="bfloat16")).reuse_kv is False


def _pairs(items):
    return [c for c, opts in items for _ in opts], [o for _, opts in items for o in opts]


def _choices(items, lls):
    picks, k = [], 0
    for _, opts in items:
        picks.append(max(range(len(opts)), key=lambda j: lls[k + j][0]))
        k += len(opts)
    return picks


@pytest.mark.parametrize("which", ["base", "tuned"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_loglikelihood_from_the_context_cache_equals_the_full_path(
    which: str, batch_size: int, base_model: LoadedModel, tuned_model: LoadedModel
):
    lm = base_model if which == "base" else tuned_model
    contexts, conts = _pairs(MC_ITEMS)
    calls: list[int] = []
    with _reuse_kv(lm, True):
        fast = lm.loglikelihood(contexts, conts, batch_size=batch_size, progress=calls.append)
    with _reuse_kv(lm, False):
        full = lm.loglikelihood(contexts, conts, batch_size=batch_size)
    assert [n for _, n in fast] == [n for _, n in full]
    assert max(abs(a - b) for (a, _), (b, _) in zip(fast, full)) < 1e-4
    assert _choices(MC_ITEMS, fast) == _choices(MC_ITEMS, full)
    assert calls[-1] == len(contexts) and calls == sorted(calls)
    assert fast[conts.index("")] == (0.0, 0)


@pytest.mark.parametrize("batch_size", [1, 5, 16])
def test_loglikelihood_with_a_shared_system_prompt_runs_it_once_and_equals_the_full_path(
    batch_size: int, tuned_model: LoadedModel, system_prompts: list[str], monkeypatch
):
    items = [(p, [" Paris", " a dog", " It is hard to say", "Yes"]) for p in system_prompts]
    contexts, conts = _pairs(items)
    laid_out: list[int] = []
    prefix_pad = tuned_model._prefix_pad
    monkeypatch.setattr(tuned_model, "_prefix_pad", lambda rows, p: (laid_out.append(p), prefix_pad(rows, p))[1])
    with _reuse_kv(tuned_model, True):
        fast = tuned_model.loglikelihood(contexts, conts, batch_size=batch_size)
    with _reuse_kv(tuned_model, False):
        full = tuned_model.loglikelihood(contexts, conts, batch_size=batch_size)
    assert laid_out and min(laid_out) >= 20  # every chunk of contexts ran on the shared system prompt's cache
    assert [n for _, n in fast] == [n for _, n in full]
    assert max(abs(a - b) for (a, _), (b, _) in zip(fast, full)) < 1e-4
    assert _choices(items, fast) == _choices(items, full)


def test_kv_reuse_falls_back_where_the_cache_cannot_serve(base_model: LoadedModel, system_prompts: list[str],
                                                         monkeypatch):
    from ftpipe.evaluation import generation

    contexts, conts = _pairs(MC_ITEMS)
    with _reuse_kv(base_model, False):
        full = base_model.loglikelihood(contexts, conts, batch_size=4)
    # Contexts that need left truncation go the full path (here all but the short ones)...
    monkeypatch.setattr(base_model, "max_length", 12)
    with _reuse_kv(base_model, False):
        truncated_full = base_model.loglikelihood(contexts, conts, batch_size=4)
    truncated_fast = base_model.loglikelihood(contexts, conts, batch_size=4)
    assert max(abs(a - b) for (a, _), (b, _) in zip(truncated_fast, truncated_full)) < 1e-4
    monkeypatch.undo()
    # ... and so does everything when the model's cache is not a plain DynamicCache.
    monkeypatch.setattr(generation, "_plain_kv_cache", lambda cache: False)
    assert base_model.loglikelihood(contexts, conts, batch_size=4) == full
    assert base_model._shared_prefix_cache([base_model._encode(p) for p in system_prompts], []) == (0, None)


# --------------------------------------------------------------------------- text NLL


def test_text_nll_matches_direct_computation(base_model: LoadedModel):
    tok = base_model.tokenizer
    total, count = 0.0, 0
    for text in TEXTS:
        ids = tok(text)["input_ids"][:16]
        if len(ids) < 2:
            continue
        t = torch.tensor([ids])
        with torch.inference_mode():
            logits = base_model.model(input_ids=t).logits[0]
        total += float(torch.nn.functional.cross_entropy(logits[:-1].float(), t[0, 1:], reduction="sum"))
        count += len(ids) - 1
    calls: list[int] = []
    got_total, got_count = base_model.text_nll(TEXTS, max_length=16, batch_size=2, progress=calls.append)
    assert got_count == count
    assert got_total == pytest.approx(total, rel=1e-5)
    assert calls[-1] == len(TEXTS)
    assert math.isfinite(got_total / got_count)


# --------------------------------------------------------------------------- merge and fingerprint


def test_merge_and_save_equals_base_plus_adapter(
    varied_base: Path, adapter_dir: Path, tuned_model: LoadedModel, prompts: list[str], tmp_path: Path
):
    spec = ModelSpec(base_path=str(varied_base), adapter_path=str(adapter_dir), device="cpu")
    out = merge_and_save(spec, tmp_path / "merged")
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert not list(tmp_path.glob(".merged.tmp-*"))
    with pytest.raises(BadInputError, match="already exists"):
        merge_and_save(spec, out)
    merged = load_model(ModelSpec(base_path=str(out), device="cpu"))
    assert not hasattr(merged.model, "peft_config")
    want = tuned_model.generate(prompts, max_new_tokens=16)
    assert merged.generate(prompts, max_new_tokens=16) == want
    a = merged.loglikelihood(CONTEXTS, CONTINUATIONS)
    b = tuned_model.loglikelihood(CONTEXTS, CONTINUATIONS)
    assert [x[0] for x in a] == pytest.approx([x[0] for x in b], abs=1e-3)


def test_fingerprint_tracks_the_adapter(
    varied_base: Path, adapter_dir: Path, tmp_path: Path, tuned_model: LoadedModel
):
    base_spec = ModelSpec(base_path=str(varied_base), device="cpu")
    spec = ModelSpec(base_path=str(varied_base), adapter_path=str(adapter_dir), device="cpu")
    fp = spec_fingerprint(spec)
    assert fp == tuned_model.fingerprint() == spec_fingerprint(spec)
    assert len(fp) == 16 and fp != spec_fingerprint(base_spec)
    # Same adapter moved elsewhere, its recorded base path rewritten: same fingerprint.
    moved = tmp_path / "moved"
    shutil.copytree(adapter_dir, moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/somewhere/else"
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    assert spec_fingerprint(ModelSpec(base_path=str(varied_base), adapter_path=str(moved))) == fp
    # A different adapter: a different fingerprint. Quantization and dtype count too.
    other = _make_adapter(varied_base, tmp_path / "other", seed=1)
    assert spec_fingerprint(ModelSpec(base_path=str(varied_base), adapter_path=str(other))) != fp
    quantized = ModelSpec(
        base_path=str(varied_base), adapter_path=str(adapter_dir), quantization=BNB_4BIT
    )
    assert spec_fingerprint(quantized) != fp
    bf16 = ModelSpec(base_path=str(varied_base), dtype="bf16")
    assert spec_fingerprint(bf16) != spec_fingerprint(base_spec)


# --------------------------------------------------------------------------- 4-bit on CPU


@pytest.fixture(scope="session")
def bnb_available() -> None:
    pytest.importorskip("bitsandbytes")


def test_4bit_load_on_cpu_matches_dequantized_weights(
    bnb_available, varied_base: Path, adapter_dir: Path, prompts: list[str], tmp_path: Path
):
    """The 4-bit model computes exactly dequantize(W) @ x in float32 (as in training), with and
    without the adapter; merging a quantized spec gives the same generations."""
    import bitsandbytes as bnb

    q = load_model(ModelSpec(base_path=str(varied_base), quantization=BNB_4BIT, device="cpu"))
    layers = [m for m in q.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers, "nothing was quantized"
    # Reference: a plain float32 model holding the dequantized 4-bit weights.
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(varied_base), dtype=torch.float32)
    for name, module in q.model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            ref.get_submodule(name).weight.data.copy_(w)
    ids = torch.tensor([q.tokenizer(prompts[1], add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        assert torch.allclose(q.model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)
    out = q.generate(prompts, max_new_tokens=12, batch_size=3)
    assert out == [_reference_generate(q, p, 12) for p in prompts]

    spec = ModelSpec(
        base_path=str(varied_base),
        adapter_path=str(adapter_dir),
        quantization=BNB_4BIT,
        device="cpu",
    )
    q_tuned = load_model(spec)
    tuned_out = q_tuned.generate(prompts, max_new_tokens=12, batch_size=3)
    assert tuned_out != out
    merged_dir = merge_and_save(spec, tmp_path / "merged_q")
    merged = load_model(ModelSpec(base_path=str(merged_dir), device="cpu"))
    assert merged.generate(prompts, max_new_tokens=12) == tuned_out
