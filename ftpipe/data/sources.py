"""Reading task sources into pandas DataFrames with the established readers (pandas, pyarrow, datasets)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from ftpipe.data.formats import SUFFIX_FORMATS, detect_format, peek_columns  # noqa: F401 (re-exported)
from ftpipe.errors import DataError


def text_passages(text: str, min_words: int = 12) -> list[str]:
    """Blank-line-separated passages; a short one (a heading) is joined to the passage after it."""
    passages, pending = [], ""
    for block in (b.strip() for b in text.split("\n\n")):
        if not block:
            continue
        block = f"{pending}\n{block}" if pending else block
        if len(block.split()) < min_words:
            pending = block
            continue
        passages.append(block)
        pending = ""
    if pending:
        passages.append(pending)
    return passages


def read_source(path: Path | None, fmt: str = "auto", *, hub: str | None = None, split: str | None = None,
                options: dict | None = None):
    """Read a whole source into a DataFrame; plain text becomes one row per blank-line-separated passage."""
    import pandas as pd

    if hub is not None:
        return _read_hub(hub, split)
    assert path is not None
    if not path.exists():
        raise DataError(f"{path}: no such file", hint="check source.path (relative to the spec file)")
    fmt = detect_format(path, fmt)
    opts = dict(options or {})
    try:
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False, **opts)
        if fmt == "json":
            return pd.read_json(path, dtype=False, **opts)
        if fmt in ("csv", "tsv"):
            opts = {"sep": "\t" if fmt == "tsv" else ",", "dtype": str, "keep_default_na": False, **opts}
            if "sep" in (options or {}) and len(opts["sep"]) > 1:
                opts.setdefault("engine", "python")  # regex separators need pandas' python parser
            return pd.read_csv(path, **opts)
        if fmt == "parquet":
            return pd.read_parquet(path, **opts)
        if fmt == "text":
            return pd.DataFrame({"text": text_passages(path.read_text(encoding="utf-8"))})
        if fmt == "hf_disk":
            import datasets

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split is None:
                    raise DataError(f"{path}: a DatasetDict with splits {list(ds)}", hint="set source.split")
                ds = ds[split]
            return ds.to_pandas()
    except DataError:
        raise
    except (ValueError, OSError, TypeError) as e:
        raise DataError(f"{path}: cannot read as {fmt}: {str(e).splitlines()[0]}", hint="check the file or source.format") from None
    raise DataError(f"{path}: unknown format {fmt}")


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether huggingface.co answers at all (without this, the hub client retries for half a minute)."""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _read_hub(name: str, split: str | None):
    hint = "this needs network or a Hugging Face cache; save it with datasets.save_to_disk and use source.path"
    online = hub_reachable()
    import datasets

    try:
        if online:
            ds = datasets.load_dataset(name, split=split or "train")
        else:
            with _hub_offline():  # read from the local hub cache only, without the client's retries
                ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # the datasets library raises many types for "no network / not cached"
        reason = "no network and not in the hub cache" if not online else f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        raise DataError(f"hub dataset {name}: cannot load ({reason})", hint=hint) from None
    return ds.to_pandas()


@contextmanager
def _hub_offline():
    """Offline mode for the hub clients, restored afterwards (they read it at import time, and
    leaving it on would leak into everything else the process loads)."""
    import os

    import datasets
    import huggingface_hub.constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    saved = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
