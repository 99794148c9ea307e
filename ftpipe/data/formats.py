"""Source formats by file extension, and a source's column names read from its first record or header.

Standard library only: `ftpipe validate` reads columns through here without importing pandas.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ftpipe.errors import DataError
from ftpipe.spec.schema import CONVERSATION_FORMATS

SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                  ".parquet": "parquet", ".txt": "text", ".md": "text"}


def detect_format(path: Path, declared: str = "auto") -> str:
    """The reader for a path: the declared one, else by extension (a folder is a saved `datasets` dataset).

    Conversation formats (messages, sharegpt) describe the rows, not the file: their files are
    JSON Lines or JSON, told apart by extension.
    """
    if declared in CONVERSATION_FORMATS:
        fmt = detect_format(path)
        if fmt not in ("jsonl", "json"):
            raise DataError(f"{path}: a {declared} source must be JSON Lines (.jsonl) or JSON (.json), not {fmt}",
                            hint="convert the conversations to JSON Lines, one conversation per line")
        return fmt
    if declared != "auto":
        return declared
    if path.is_dir():
        return "hf_disk"
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = SUFFIX_FORMATS.get(suffixes[-1].lower() if suffixes else "")
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the extension",
                        hint="set source.format to one of jsonl, json, csv, tsv, parquet, text, hf_disk")
    return fmt


def peek_columns(path: Path, declared: str = "auto") -> list[str] | None:
    """Column names from the first record or header, without pandas (used by the fast `validate`).

    Returns None for formats whose columns are only known after a full read, and for empty or
    malformed files (the full read at data preparation reports those with their line).
    """
    try:
        fmt = detect_format(path, declared)
    except DataError:
        return None
    if fmt == "text":
        return ["text"]
    if path.suffix == ".gz":
        return None
    try:
        if fmt == "jsonl":
            with path.open(encoding="utf-8-sig") as f:
                for line in f:
                    if line.strip():
                        return list(json.loads(line).keys())
            return None  # empty: the data layer says so with the file's name
        if fmt in ("csv", "tsv"):
            with path.open(encoding="utf-8-sig", newline="") as f:
                return next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","), None)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None  # malformed: the full read reports the line
    return None
