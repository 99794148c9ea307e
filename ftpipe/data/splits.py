"""Row identity and split assignment: a row's split depends on nothing but the values its task reads.

A row's id hashes the canonical form of the values the task reads (the columns its prompt, target,
label, answer, choices and tests name, or one `id_field`), salted with the split seed and the task
name. So appending rows, adding or reordering columns, writing `1` as `1.0`, or rewording a prompt
template never moves an existing row between splits, and run A's test items are still test items
in run B. Reading a different column (a template that starts to name a new field) is a different
identity: that is a different task definition.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from typing import Any, Iterable

ROW_ID_VERSION = 2  # recorded in each run: ids of different versions are not comparable


def canonical(value: Any) -> Any:
    """One form per value: strings NFC-normalised and stripped, integral floats as ints, NaN as None."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float):
            if math.isnan(value):
                return None
            if value.is_integer():
                return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return str(value)


def row_identity(row: dict, columns: Iterable[str], salt: str) -> str:
    """sha256 of the canonical values of `columns` (missing columns count as null), salted."""
    values = {name: canonical(row.get(name)) for name in sorted(set(columns))}
    blob = json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{salt}\x00{blob}".encode()).hexdigest()


def split_of(row_id: str, validation_fraction: float, test_fraction: float) -> str:
    """Assign a split from the id alone, so a row's split depends on nothing but its identity."""
    u = int(row_id[:15], 16) / 16**15
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"
