"""The data layer: a spec's tasks become the exact rows Ludwig trains on and the items the evaluator scores.

Public entry point: `prepare_data(loaded, tokenizer, context_length)` (or `prepare_for_base_model`)
returns `PreparedData`. Modules, in the order data flows: `sources` (read files), `templates`
(Jinja and chat templates), `splits` (row identity, split assignment), `rendering` (training pairs
and evaluation items), `mixing`, `leakage`, `prepare` (the whole stage), `preview` (`ftpipe data`)
and `references` (what `ftpipe validate` checks in the files a spec names).
"""

from ftpipe.data.items import SPLIT_CODES, EvalItem, PreparedData, TaskData
from ftpipe.data.leakage import find_leaks, normalize_for_leakage
from ftpipe.data.mixing import mixture_counts, take_rows
from ftpipe.data.prepare import (
    data_fingerprint,
    eval_items_as_dicts,
    load_tokenizer,
    prepare_data,
    prepare_for_base_model,
    training_frame,
)
from ftpipe.data.preview import preview_data
from ftpipe.data.references import check_references, validate_spec
from ftpipe.data.prepare import identity_columns
from ftpipe.data.splits import ROW_ID_VERSION, canonical, row_identity, split_of

__all__ = [
    "prepare_data", "prepare_for_base_model", "PreparedData", "TaskData", "EvalItem", "SPLIT_CODES",
    "training_frame", "eval_items_as_dicts", "data_fingerprint", "load_tokenizer", "preview_data",
    "check_references", "validate_spec", "find_leaks", "normalize_for_leakage", "mixture_counts",
    "take_rows", "row_identity", "canonical", "identity_columns", "ROW_ID_VERSION", "split_of",
]
