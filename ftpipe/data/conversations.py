"""Multi-turn conversations (issue 17): OpenAI `messages` and ShareGPT `conversations` rows.

A conversation is checked turn by turn (roles, content, where the system message sits, that an
assistant turn exists, that the base model's chat template accepts it) and then rendered with that
template. Ludwig trains one target per row, so a conversation becomes one training row per
assistant turn: the prompt is the conversation before that turn rendered with the generation
prompt, the target is the turn's text (Ludwig appends the tokenizer's EOS, which for ChatML models
is the `<|im_end|>` that closes the turn). Loss therefore falls on assistant turns only. The cost
is that a conversation's early turns are fed again as the prompt of each later turn; `ftpipe data`
reports it (`expansion_report`). Evaluation generates the final assistant turn from its history.

Standard library only, apart from the tokenizer object handed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")
# ShareGPT's `from` values as the common converters (FastChat, axolotl) read them.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
_KEYS = {"messages": ("role", "content"), "sharegpt": ("from", "value")}


@dataclass(frozen=True)
class Turn:
    """One message of a conversation, its role mapped to system, user or assistant."""

    role: str
    content: str
    trained: bool = True  # OpenAI's per-message `weight: 0` keeps an assistant turn out of training


def parse_conversation(value: Any, fmt: str, field: str) -> tuple[list[Turn] | None, str | None]:
    """A row's turns, or (None, what is wrong with them) with the turn's number (1-based).

    Args:
        value: The row's `messages` (or `conversations`) value; JSON text is parsed (CSV cells).
        fmt: "messages" (OpenAI role/content) or "sharegpt" (from/value).
        field: The field's name, for messages.
    """
    role_key, content_key = _KEYS[fmt]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, f"field '{field}' holds text, not a list of turns"
    if not isinstance(value, list):
        kind = {dict: "an object", type(None): "nothing"}.get(type(value), f"a {type(value).__name__}")
        return None, f"field '{field}' holds {kind}, not a list of turns ({{{role_key}, {content_key}}} objects)"
    if not value:
        return None, f"field '{field}' is an empty list of turns"
    turns: list[Turn] = []
    for number, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            return None, f"turn {number} is a {type(message).__name__}, not an object with {role_key} and {content_key}"
        raw_role = message.get(role_key)
        role = SHAREGPT_ROLES.get(str(raw_role).lower()) if fmt == "sharegpt" else raw_role
        if role not in ROLES:
            allowed = "system, human, gpt" if fmt == "sharegpt" else ", ".join(ROLES)
            shown = "no " + role_key if raw_role is None else f"{role_key} {raw_role!r}"
            return None, f"turn {number} has {shown}; roles are {allowed}"
        content, problem = _text_of(message.get(content_key))
        if problem:
            return None, f"turn {number} ({role}) {problem}"
        if role == "system" and number != 1:
            return None, f"turn {number} is a system message; a system message may only come first"
        weight = message.get("weight", 1)
        if weight not in (0, 1) or isinstance(weight, bool):
            return None, f"turn {number} has weight {weight!r}; weight is 0 (not trained on) or 1"
        if weight == 0 and role != "assistant":
            return None, f"turn {number} ({role}) has a weight; only assistant turns carry one"
        turns.append(Turn(role=role, content=content, trained=weight == 1))
    if not any(t.role == "assistant" for t in turns):
        return None, "no assistant turn (nothing to train on or evaluate)"
    return turns, None


def _text_of(content: Any) -> tuple[str, str | None]:
    """(text, None) or ("", problem): a string, or OpenAI's list of {type: text, text} parts."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                return "", f"holds a {kind} part; only text parts are supported"
            parts.append(part["text"])
        content = "".join(parts)
    if content is None:
        return "", "has no content"
    if not isinstance(content, str):
        return "", f"has content of type {type(content).__name__}, not text"
    if not content.strip():
        return "", "has empty content"
    return content, None


def as_messages(turns: list[Turn], system_prompt: str | None = None) -> list[dict[str, str]]:
    """The turns as chat-template messages; `system_prompt` is added when the conversation has none."""
    messages = [{"role": t.role, "content": t.content} for t in turns]
    if system_prompt and (not turns or turns[0].role != "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def template_problem(tokenizer: Any, turns: list[Turn], system_prompt: str | None = None) -> str | None:
    """Why the tokenizer's chat template refuses the conversation (e.g. roles that must alternate), or None."""
    import jinja2

    try:
        tokenizer.apply_chat_template(as_messages(turns, system_prompt), tokenize=False)
    except jinja2.TemplateError as e:
        return f"the base model's chat template refuses this conversation: {e}"
    return None


def trained_turns(turns: list[Turn], which: str = "all") -> list[int]:
    """Indices of the assistant turns to train on: all of them (weight 1), or only the last one."""
    chosen = [i for i, t in enumerate(turns) if t.role == "assistant" and t.trained]
    return chosen[-1:] if which == "last" else chosen


def final_turn(turns: list[Turn]) -> int:
    """Index of the last assistant turn: what evaluation generates from the turns before it."""
    return max(i for i, t in enumerate(turns) if t.role == "assistant")


def history_prompt(tokenizer: Any, turns: list[Turn], index: int, system_prompt: str | None = None) -> str:
    """The conversation before turn `index`, rendered with the chat template up to the assistant header."""
    return tokenizer.apply_chat_template(as_messages(turns[:index], system_prompt), tokenize=False,
                                         add_generation_prompt=True)


def full_text(tokenizer: Any, turns: list[Turn], system_prompt: str | None = None) -> str:
    """The whole conversation rendered once with the chat template (the unexpanded token cost)."""
    return tokenizer.apply_chat_template(as_messages(turns, system_prompt), tokenize=False)


def transcript(turns: list[Turn]) -> str:
    """A short plain view of the turns for reports: `user: ...` / `assistant: ...` lines, no system message."""
    return "\n".join(f"{t.role}: {t.content}" for t in turns if t.role != "system")


def user_text(turns: list[Turn]) -> str:
    """The user turns joined: what the leakage check compares between conversations."""
    return "\n".join(t.content for t in turns if t.role == "user")


def identity_view(turns: list[Turn]) -> dict:
    """What a conversation's row id hashes: every turn's role and text, so all rows expanded from one
    conversation share its split, and the same conversation in either format has the same id."""
    return {"conversation": [[t.role, t.content, t.trained] for t in turns]}


def expansion_report(conversations: int, rows: int, row_tokens: int, conversation_tokens: int) -> dict:
    """The token cost of one row per assistant turn, against each conversation's tokens once."""
    return {"conversations": conversations, "rows": rows, "row_tokens": row_tokens,
            "conversation_tokens": conversation_tokens,
            "token_ratio": round(row_tokens / conversation_tokens, 3) if conversation_tokens else None}
