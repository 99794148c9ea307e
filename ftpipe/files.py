"""File helpers every layer uses: content hashes and atomic writes.

An atomic write goes to a temporary file in the same folder, is flushed to disk, and is renamed
over the target, so a reader (or a process killed mid-write) sees the old file or the new one,
never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """sha256 of a file, or of every file in a folder (names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(path)).encode())
            _update(digest, f)
    else:
        _update(digest, path)
    return digest.hexdigest()


def _update(digest, path: Path) -> None:
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes via a temp file, fsync, then rename."""
    tmp = _temp_name(path)
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON (indented, sorted keys) atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def replace_folder(tmp: Path, target: Path) -> None:
    """Move a finished folder into place, replacing an old one; the old one is removed only after."""
    if target.exists():
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def read_jsonl(path: Path) -> list[dict]:
    """The complete lines of an append-only JSON Lines log; a last line cut short by a kill is skipped."""
    path = Path(path)
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
