"""Where ftpipe keeps things: the model store and caches under $FTPIPE_HOME, runs under a runs root."""

from __future__ import annotations

import os
from pathlib import Path


def ftpipe_home() -> Path:
    """Root of models and caches: $FTPIPE_HOME, default ~/.cache/ftpipe."""
    return Path(os.environ.get("FTPIPE_HOME") or Path.home() / ".cache" / "ftpipe").expanduser()


def models_dir() -> Path:
    """Folder of the local model store."""
    return ftpipe_home() / "models"


def cache_dir() -> Path:
    """Folder of caches (downloaded wheels, base-model evaluation results)."""
    return ftpipe_home() / "cache"


def runs_root() -> Path:
    """Default root of run folders: $FTPIPE_RUNS, else ./runs."""
    return Path(os.environ.get("FTPIPE_RUNS") or "runs").expanduser()
