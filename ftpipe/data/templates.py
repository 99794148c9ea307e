"""Prompt templates: strict Jinja rendering and the base model's chat template.

We render every prompt ourselves and hand Ludwig finished text, because Ludwig's own template is
plain `str.format` and never applies a chat template (shared/LUDWIG.md).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # StrictUndefined: a template naming a missing field raises instead of rendering "".
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


def template_variables(template: str) -> set[str]:
    """Top-level names a template reads (checked against the data's columns before training)."""
    return set(_variables(template))


@lru_cache(maxsize=256)
def _variables(template: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_environment().parse(template)))


@lru_cache(maxsize=256)
def _compiled(template: str) -> jinja2.Template:
    return _environment().from_string(template)


def render(template: str, row: dict[str, Any]) -> str:
    """Render a template over one row; a missing field raises jinja2.UndefinedError."""
    fast = _substitution(template)
    if fast is not None:
        return fast(row)
    return _compiled(template).render(**row)


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@lru_cache(maxsize=256)
def bare_placeholders(template: str) -> frozenset[str]:
    """Names a template prints as they are (`{{ name }}`, no filter or index): these must hold text or a number."""
    return frozenset(_PLACEHOLDER.findall(template))


@lru_cache(maxsize=256)
def _substitution(template: str):
    """For templates that are text and bare `{{ name }}` placeholders only: a renderer that skips Jinja.

    It gives exactly what Jinja gives (str() of each value, one trailing newline dropped, a missing
    name an UndefinedError), at a fraction of the cost per row. Anything else (filters, blocks,
    expressions, raw `{%`, comments) goes through Jinja.
    """
    rest = _PLACEHOLDER.sub("", template)
    if "{{" in rest or "{%" in rest or "{#" in rest or "}}" in rest:
        return None
    parts = _PLACEHOLDER.split(template.removesuffix("\n"))  # text, name, text, name, ..., text

    def fill(row: dict[str, Any]) -> str:
        out = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                out.append(part)
            elif part in row:
                out.append(str(row[part]))
            else:
                raise jinja2.UndefinedError(f"'{part}' is undefined")
        return "".join(out)

    return fill


class ChatWrapper:
    """Wraps user messages in a tokenizer's chat template, fast.

    Rendering the Jinja chat template once per row costs more than everything else in preparing
    100,000 rows, and for templates that insert the message verbatim (ChatML and most others) the
    result is always prefix + message + suffix. The wrapper renders the template around a sentinel
    once, and uses the split only after checking that it reproduces the real template exactly on
    the first rows it wraps (and on any message that could be special to a template); otherwise it
    renders every row through the template.
    """

    _SENTINEL = "\x00ftpipe-message\x00"
    _CHECKS = 32

    def __init__(self, tokenizer: Any, system_prompt: str | None = None):
        self.tokenizer, self.system_prompt = tokenizer, system_prompt
        around = self._render(self._SENTINEL)
        self.parts = around.split(self._SENTINEL) if around.count(self._SENTINEL) == 1 else None
        self.checked = 0

    def _render(self, message: str) -> str:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": message})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __call__(self, user_message: str) -> str:
        if self.parts is None or user_message != user_message.strip() or "{" in user_message or "<|" in user_message:
            return self._render(user_message)
        fast = self.parts[0] + user_message + self.parts[1]
        if self.checked < self._CHECKS:
            self.checked += 1
            if fast != self._render(user_message):
                self.parts = None  # the template transforms messages: render each row from now on
                return self._render(user_message)
        return fast


def chat_prompt(tokenizer: Any, user_message: str, system_prompt: str | None = None) -> str:
    """The user message wrapped in the tokenizer's chat template, ending with the assistant header."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_message})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def task_fields(task) -> set[str]:
    """Every field a task's templates and settings read (checked against the source's columns)."""
    if task.source is None:
        return set()  # an lm_eval probe: lm-eval reads its data
    if task.source.conversation_field():
        return {task.source.conversation_field()}  # a conversation's turns are its prompts and targets
    choices = (task.choices,) if isinstance(task.choices, str) else tuple(task.choices or ())
    return set(_task_fields((task.prompt, task.target, task.tests, task.chosen, task.rejected), task.answer, choices))


@lru_cache(maxsize=256)
def _task_fields(templates: tuple[str | None, ...], answer: str | None, choices: tuple[str, ...]) -> frozenset[str]:
    names: set[str] = set(choices)
    for text in templates:
        if text:
            names |= template_variables(text)
    if answer:
        names.add(answer)
    return frozenset(names)
