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


Row = tuple[int, dict]  # (line or row number in the source, the record)


def read_records(path: Path, fmt: str = "auto", *, split: str | None = None, options: dict | None = None) -> list[Row]:
    """Every record of a file with its line number (JSON Lines, CSV) or row number (other formats).

    JSON and JSON Lines are read here rather than by pandas, so that a bad line is reported by its
    line number and a UTF-8 byte-order mark is accepted.

    Raises:
        DataError: one line naming the file, the line, and what to fix.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file", hint="check source.path (relative to the spec file)")
    fmt = detect_format(path, fmt)
    if fmt == "jsonl" and not options:
        rows = _read_jsonl(path)
    elif fmt == "json" and not options:
        rows = _read_json(path)
    else:
        has_header = (options or {}).get("header", "infer") is not None
        first = 2 if fmt in ("csv", "tsv") and has_header else 1  # a CSV's header is line 1
        rows = [(i + first, r) for i, r in enumerate(records_of(read_source(path, fmt, split=split, options=options)))]
    if not rows:
        raise DataError(f"{path}: empty (no rows)", hint="add rows, or point source.path at the right file")
    return rows


def records_of(df) -> list[dict]:
    """DataFrame rows as plain dicts (numpy scalars and arrays become Python values, NaN becomes None)."""
    import json

    return json.loads(df.to_json(orient="records", force_ascii=False))


def _open_text(path: Path):
    import gzip

    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def _read_jsonl(path: Path) -> list[Row]:
    import json

    rows: list[Row] = []
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                text = line.strip()
                if not text:
                    continue
                if not rows and text.startswith("["):
                    raise DataError(f"{path}: holds a JSON array, not JSON Lines (one object per line)",
                                    hint="rename it to .json, or set source.format: json")
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {number}: invalid JSON ({e.msg} at column {e.colno})",
                                    hint="fix that line; every line must be one JSON object") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path} line {number}: a JSON {type(record).__name__}, not an object",
                                    hint="every line must be one JSON object with the task's fields")
                rows.append((number, record))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", hint="save the file as UTF-8") from None
    return rows


def _read_json(path: Path) -> list[Row]:
    import json

    try:
        with _open_text(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})", hint="fix the JSON") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", hint="save the file as UTF-8") from None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and data:
        lengths = {len(v) for v in data.values()}  # columns: {"field": [values...]}
        if len(lengths) == 1:
            data = [dict(zip(data, values)) for values in zip(*data.values())]
    if not isinstance(data, list):
        raise DataError(f"{path}: a JSON {type(data).__name__}; expected a list of objects (one per row)",
                        hint="store rows as [{...}, {...}], or as JSON Lines")
    for number, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{path} row {number}: a JSON {type(record).__name__}, not an object",
                            hint="every row must be one JSON object with the task's fields")
    return list(enumerate(data, start=1))


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
            return pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig", **opts)
        if fmt == "json":
            return pd.read_json(path, dtype=False, encoding="utf-8-sig", **opts)
        if fmt in ("csv", "tsv"):
            opts = {"sep": "\t" if fmt == "tsv" else ",", "dtype": str, "keep_default_na": False,
                    "encoding": "utf-8-sig", **opts}
            if "sep" in (options or {}) and len(opts["sep"]) > 1:
                opts.setdefault("engine", "python")  # regex separators need pandas' python parser
            return pd.read_csv(path, **opts)
        if fmt == "parquet":
            return pd.read_parquet(path, **opts)
        if fmt == "text":
            return pd.DataFrame({"text": text_passages(path.read_text(encoding="utf-8-sig"))})
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
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
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


def hub_revision(name: str, split: str | None = None) -> str:
    """What a hub dataset's fingerprint hashes: the commit it resolves to, so a new revision is a change.

    Offline, the commit comes from the local hub cache's `refs/main`; when neither the hub nor the
    cache names one, the fingerprint is the sha256 of the rows themselves (read from the cache).
    """
    import hashlib
    import json
    import os

    from huggingface_hub import constants

    if hub_reachable():
        try:
            from huggingface_hub import HfApi

            return "revision:" + HfApi().dataset_info(name).sha
        except Exception:  # private, renamed or rate-limited: fall back to what is cached
            pass
    ref = Path(os.environ.get("HF_HUB_CACHE", constants.HF_HUB_CACHE)) / f"datasets--{name.replace('/', '--')}" / "refs" / "main"
    if ref.is_file():
        return "revision:" + ref.read_text().strip()
    rows = records_of(_read_hub(name, split))
    return "content:" + hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


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
