"""Row identity and split assignment: a row's split depends on nothing but its own content."""

from __future__ import annotations

import hashlib
import json


def row_hash(row: dict, salt: str) -> str:
    """A stable id of a row's content: appending rows to a source never changes old rows' ids."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(f"{salt}\x00{blob}".encode()).hexdigest()


def split_of(row_id: str, validation_fraction: float, test_fraction: float) -> str:
    """Assign a split from the hash alone, so a row's split depends on nothing but its content."""
    u = int(row_id[:15], 16) / 16**15
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"
