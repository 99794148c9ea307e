"""What the data layer hands on: evaluation items, per-task rows, and the prepared whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftpipe.data.splits import ROW_ID_VERSION
from ftpipe.spec import TaskSpec

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}  # Ludwig's fixed split column values


@dataclass
class EvalItem:
    """One scored item, identical for the base and the tuned model."""

    task: str
    item_id: str
    prompt: str  # fully rendered model input (chat template applied where the task asks)
    user_message: str  # the rendered user message, shown in reports
    content: str = ""  # the values the prompt template reads: what the leakage check compares
    reference: str | None = None
    answers: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    answer_index: int | None = None
    tests: str | None = None
    text: str | None = None  # raw passage (perplexity)
    messages: list[dict] | None = None  # conversation tasks: the turns before the final assistant turn


@dataclass
class TaskData:
    """One task after splitting and rendering."""

    task: TaskSpec
    role: str  # target | held_out | replay
    train: list[dict] = field(default_factory=list)  # {prompt, target, user_message, row_id}
    validation: list[dict] = field(default_factory=list)
    eval_items: list[EvalItem] = field(default_factory=list)
    spare_items: list[EvalItem] = field(default_factory=list)  # held-out rows not evaluated: recovery-probe examples
    skipped_rows: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped under bad_rows: skip
    duplicate_rows: int = 0  # rows identical to an earlier row of the same file, kept once
    expansion: dict | None = None  # conversation tasks: conversations -> rows and their token cost (issue 17)
    lm_eval_task: str | None = None  # kind lm_eval: the task name or resolved task YAML; items come from lm-eval


@dataclass
class PreparedData:
    """Everything downstream stages need from the data layer."""

    tasks: dict[str, TaskData]
    train_rows: list[dict]  # mixed rows: prompt, target, split, task
    mixture: dict[str, dict]  # task -> rows, tokens, share
    leakage: dict[str, Any]
    lengths: dict[str, int]  # max_prompt_tokens, max_target_tokens, max_total_tokens
    fingerprint: str
    input_hashes: dict[str, str]
    few_shot: dict[str, list[dict]] = field(default_factory=dict)

    def eval_tasks(self) -> list[TaskData]:
        """Target and held-out tasks, in spec order."""
        return [t for t in self.tasks.values() if t.role in ("target", "held_out")]

    def trained_ids(self) -> dict[str, list[str]]:
        """Per task, the ids (12 hex characters, like item ids) of every row that trained or validated."""
        out: dict[str, set[str]] = {}
        for row in self.train_rows:
            out.setdefault(row["task"], set()).add(row["row_id"][:12])
        return {task: sorted(ids) for task, ids in out.items()}

    def summary(self) -> dict:
        """A JSON-able summary for the manifest and `ftpipe data`."""
        return {
            "fingerprint": self.fingerprint,
            "lengths": self.lengths,
            "mixture": self.mixture,
            "leakage": self.leakage,
            "eval_items": {name: len(t.eval_items) for name, t in self.tasks.items() if t.eval_items},
            "skipped_rows": {name: t.skipped_rows for name, t in self.tasks.items() if t.skipped_rows},
            "skipped_reasons": {name: t.skipped_reasons for name, t in self.tasks.items() if t.skipped_reasons},
            "duplicate_rows": {name: t.duplicate_rows for name, t in self.tasks.items() if t.duplicate_rows},
            "conversations": {name: t.expansion for name, t in self.tasks.items() if t.expansion},
            "row_id_version": ROW_ID_VERSION,
            "inputs": self.input_hashes,
        }
