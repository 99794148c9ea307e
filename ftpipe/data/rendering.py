"""Turning a task's rows into training pairs and evaluation items (chat template included)."""

from __future__ import annotations

import json
import math
from typing import Any

from ftpipe.data import conversations as conv
from ftpipe.data.items import EvalItem
from ftpipe.data.templates import ChatWrapper, bare_placeholders, chat_prompt, render, task_fields, template_variables
from ftpipe.errors import DataError
from ftpipe.spec import TaskSpec


def bad_value(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return False


# --------------------------------------------------------------------------------------------
# Rendering rows and items
# --------------------------------------------------------------------------------------------


class Renderer:
    """Renders a task's rows; knows the tokenizer for chat templates and token counts."""

    def __init__(self, tokenizer: Any, task: TaskSpec):
        self.tokenizer = tokenizer
        self.task = task
        self._chat = ChatWrapper(tokenizer, task.system_prompt) if task.chat_template and task.kind != "perplexity" else None
        self._separator: str | None = None

    @property
    def separator(self) -> str:
        """The special token that packs a preference pair into one training target (see `preference_separator`)."""
        if self._separator is None:
            self._separator = preference_separator(self.tokenizer)
        return self._separator

    def wrap(self, user_message: str) -> str:
        return self._chat(user_message) if self._chat is not None else user_message

    def check_fields(self, row: dict) -> str | None:
        """The first missing or empty field a template needs, or None."""
        for name in sorted(task_fields(self.task)):
            if name not in row or row[name] is None:
                return name
            if name not in self.task.optional_fields and bad_value(row[name]):
                return name
        return None

    def problem(self, row: dict) -> tuple[str, str] | None:
        """What is wrong with a row, as (reason, message), or None; checked before any model time is spent."""
        t = self.task
        if t.is_conversation():
            return self._conversation_problem(row)
        if t.kind == "perplexity":
            return None if not bad_value(row.get("text")) else ("empty", "field 'text' is missing or empty")
        missing = self.check_fields(row)
        if missing:
            return "empty", f"field '{missing}' is missing or empty"
        list_fields = ({t.choices} if isinstance(t.choices, str) else set()) | ({t.answer} if t.kind == "contains" and t.answer else set())
        # Only a value printed bare is "text expected"; `{{ tests | join }}` or `{{ tests[0] }}` use lists on purpose.
        texts = set().union(*(bare_placeholders(x) for x in (t.prompt, t.target, t.tests, t.chosen, t.rejected) if x))
        for name in sorted(texts - list_fields):
            if isinstance(row.get(name), (dict, list)):
                kind = "an object" if isinstance(row[name], dict) else "a list"
                return "not_text", f"field '{name}' holds {kind}; templates need text or a number"
        if t.kind == "classification":
            label = render(t.target, row)
            if self.canonical_label(label) is None:
                return "label", f"label {label!r} is not one of the task's labels ({', '.join(t.labels)})"
        if t.kind == "multiple_choice":
            return self._choice_problem(row)
        if t.kind == "preference":
            return self._preference_problem(row)
        if t.kind == "contains" and t.answer and not [a for a in as_list(row[t.answer]) if str(a).strip()]:
            return "empty", f"field '{t.answer}' has no accepted answer"
        return None

    def _choice_problem(self, row: dict) -> tuple[str, str] | None:
        t = self.task
        try:
            options = t.choices_of(row)
        except (json.JSONDecodeError, TypeError, KeyError):
            return "choices", f"field '{t.choices}' is not a list of options"
        if len(options) < 2:
            return "choices", f"a multiple-choice row needs at least 2 options, has {len(options)}"
        if any(not o.strip() for o in options):
            return "choices", "an option is empty"
        seen = [" ".join(o.lower().split()) for o in options]
        if len(set(seen)) != len(seen):
            repeated = next(o for i, (o, n) in enumerate(zip(options, seen)) if n in seen[:i])
            return "choices", f"option {repeated!r} repeats an earlier option"
        answer = row.get(t.answer)
        index = answer if isinstance(answer, int) and not isinstance(answer, bool) else None
        if isinstance(answer, float) and answer.is_integer():
            index = int(answer)
        if isinstance(answer, str) and answer.strip().isdigit():
            index = int(answer.strip())
        if index is None or not 0 <= index < len(options):
            return "answer", f"answer {answer!r} is not an option index 0..{len(options) - 1}"
        return None

    # -- conversations (issue 17)

    def turns(self, row: dict) -> list[conv.Turn]:
        """A checked conversation row's turns (call `problem` first)."""
        turns, problem = conv.parse_conversation(row.get(self._conversation_field), self.task.source.format,
                                                 self._conversation_field)
        if turns is None:
            raise ValueError(problem)
        return turns

    @property
    def _conversation_field(self) -> str:
        return self.task.source.conversation_field() or ""

    def _conversation_problem(self, row: dict) -> tuple[str, str] | None:
        turns, problem = conv.parse_conversation(row.get(self._conversation_field), self.task.source.format,
                                                 self._conversation_field)
        if turns is None:
            return "conversation", problem
        refused = conv.template_problem(self.tokenizer, turns, self.task.system_prompt)
        if refused:
            return "conversation", refused
        if not conv.trained_turns(turns, self.task.assistant_turns):
            return "conversation", "every assistant turn has weight 0 (nothing to train on)"
        return None

    def identity_row(self, row: dict) -> dict:
        """The values a conversation's row id hashes (see `conversations.identity_view`)."""
        return conv.identity_view(self.turns(row))

    def conversation_text(self, row: dict) -> str:
        """The whole conversation rendered once with the chat template (for the token cost of expansion)."""
        return conv.full_text(self.tokenizer, self.turns(row), self.task.system_prompt)

    def training_pairs(self, row: dict) -> list[tuple[str, str, str]]:
        """(prompt, target, user_message) for each training row a source row becomes.

        One for ordinary rows; for a conversation, one per trained assistant turn, whose prompt is
        the conversation before it rendered with the chat template (loss on assistant turns only).
        """
        if not self.task.is_conversation():
            return [self.training_pair(row)]
        turns = self.turns(row)
        return [(conv.history_prompt(self.tokenizer, turns, i, self.task.system_prompt), turns[i].content,
                 conv.transcript(turns[:i])) for i in conv.trained_turns(turns, self.task.assistant_turns)]

    def _conversation_item(self, row: dict, item_id: str) -> EvalItem:
        turns = self.turns(row)
        last = conv.final_turn(turns)
        reference = turns[last].content
        return EvalItem(task=self.task.name, item_id=item_id,
                        prompt=conv.history_prompt(self.tokenizer, turns, last, self.task.system_prompt),
                        user_message=conv.transcript(turns[:last]), content=conv.user_text(turns),
                        reference=reference, answers=[reference],
                        messages=conv.as_messages(turns[:last], self.task.system_prompt))

    def _preference_problem(self, row: dict) -> tuple[str, str] | None:
        t = self.task
        replies = {"chosen": render(t.chosen, row), "rejected": render(t.rejected, row)}
        for name, text in replies.items():
            if not text.strip():
                return "empty", f"the {name} reply renders empty"
        if " ".join(replies["chosen"].split()) == " ".join(replies["rejected"].split()):
            return "preference", "the chosen and rejected replies are the same text"
        for name, text in {"prompt": render(t.prompt, row), **replies}.items():
            if self.separator in text:
                return "separator", (f"the {name} text contains {self.separator!r}, the special token ftpipe packs "
                                     "preference pairs with for this tokenizer")
        return None

    def canonical_label(self, label: str) -> str | None:
        """The label as the task's `labels` spell it (case and surrounding spaces ignored), or None."""
        if not hasattr(self, "_labels"):
            self._labels = {" ".join(spelled.lower().split()): spelled for spelled in self.task.labels or []}
        return self._labels.get(" ".join(str(label).lower().split()))

    def content(self, row: dict) -> str:
        """The row's own text that the prompt shows (template boilerplate excluded): what leaks."""
        if self.task.kind == "perplexity":
            return str(row["text"])
        if self.task.is_conversation():
            return conv.user_text(self.turns(row))
        names = sorted(template_variables(self.task.prompt)) or sorted(task_fields(self.task))
        return "\n".join(str(row[n]) for n in names if n in row)

    def training_pair(self, row: dict) -> tuple[str, str, str]:
        """(prompt, target, user_message) for training on this row."""
        t = self.task
        if t.kind == "perplexity":
            words = str(row["text"]).split()
            head = " ".join(words[: t.prompt_words])
            return head, " ".join(words[t.prompt_words:]), head
        user = render(t.prompt, row)
        if t.kind == "multiple_choice":
            target = t.choices_of(row)[int(float(row[t.answer]))]
        elif t.kind == "classification":
            target = self.canonical_label(render(t.target, row))
        elif t.kind == "preference":  # Ludwig has one target column: the step splits it back (ludwig_compat)
            target = render(t.chosen, row) + self.separator + render(t.rejected, row)
        elif t.target is not None:
            target = render(t.target, row)
        else:
            target = str(as_list(row[t.answer])[0])
        return self.wrap(user), target, user

    def eval_item(self, row: dict, item_id: str) -> EvalItem:
        t = self.task
        if t.is_conversation():
            return self._conversation_item(row, item_id)
        if t.kind == "perplexity":
            text = str(row["text"])
            return EvalItem(task=t.name, item_id=item_id, prompt="", user_message=text, text=text, content=text)
        user = render(t.prompt, row)
        item = EvalItem(task=t.name, item_id=item_id, prompt=self.wrap(user), user_message=user, content=self.content(row))
        if t.kind == "multiple_choice":
            item.choices = t.choices_of(row)
            item.answer_index = int(float(row[t.answer]))
            item.reference = item.choices[item.answer_index]
        elif t.kind == "classification":
            item.reference = self.canonical_label(render(t.target, row))
            item.answers = [item.reference]
        elif t.kind == "preference":
            item.choices = [render(t.chosen, row), render(t.rejected, row)]
            item.answer_index = 0
            item.reference = item.choices[0]
        else:
            item.reference = render(t.target, row) if t.target else None
            item.answers = [str(a) for a in as_list(row[t.answer])] if t.answer else ([item.reference] if item.reference else [])
            item.reference = item.reference or (item.answers[0] if item.answers else None)
        if t.tests:
            item.tests = render(t.tests, row)
        return item


def preference_separator(tokenizer: Any) -> str:
    """The special token packing a preference pair into Ludwig's single target column: `chosen SEP rejected`.

    Ludwig's LLM model has one text output, so both replies travel in it and the preference step
    (ftpipe.training.ludwig_compat) splits the tokenized target at this token. It is the tokenizer's first
    special token (by id) that is not its pad, BOS, EOS or UNK token and does not occur in its chat template
    (SmolLM2: `<repo_name>`, id 3); rows whose text contains it are bad rows.

    Raises:
        DataError: The tokenizer has no such token.
    """
    reserved = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    try:
        template = chat_prompt(tokenizer, "x", "y") + chat_prompt(tokenizer, "x")
    except ValueError:  # no chat template: nothing to avoid
        template = ""
    for token_id, token in sorted(getattr(tokenizer, "added_tokens_decoder", {}).items()):
        if not token.special or token_id in reserved or token.content in template:
            continue
        if tokenizer.encode(token.content, add_special_tokens=False) == [token_id]:
            return token.content
    raise DataError("the base model's tokenizer has no spare special token to pack preference pairs with",
                    hint="preference tuning needs a tokenizer with an unused special token (SmolLM2's tokenizer has several)")


def as_list(value: Any) -> list:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)  # CSV cells hold lists as JSON text
            if isinstance(parsed, list):
                return parsed
        except json.JSONDecodeError:
            pass
        return [value]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of texts, without special tokens (the same counts as `tokenizer(texts)`).

    A fast tokenizer's Rust backend counts a whole batch without building Python lists of ids,
    which is most of the cost of tokenizing 100,000 rows through the transformers wrapper.
    """
    if not texts:
        return []
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return [len(e) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
