"""The model store: base models as local Hugging Face folders under $FTPIPE_HOME/models.

Public entry points: `pull` (build a store model once) and `resolve_base_model` (what a spec's
`base_model` names, as a folder transformers loads offline).
"""

from ftpipe.models.registry import KNOWN_MODELS, SMOLLM2, TINY_LLAMA
from ftpipe.models.store import (
    DownloadError,
    StoredModel,
    base_model_path,
    check_model_folder,
    context_length,
    list_models,
    model_fingerprint,
    model_path,
    pull,
    remove,
    resolve_base_model,
)

__all__ = [
    "KNOWN_MODELS", "SMOLLM2", "TINY_LLAMA", "DownloadError", "StoredModel", "base_model_path",
    "check_model_folder", "context_length", "list_models", "model_fingerprint", "model_path", "pull",
    "remove", "resolve_base_model",
]
