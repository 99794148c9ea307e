"""Prompt templates: strict Jinja rendering and the base model's chat template.

We render every prompt ourselves and hand Ludwig finished text, because Ludwig's own template is
plain `str.format` and never applies a chat template (shared/LUDWIG.md).
"""

from __future__ import annotations

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
    return set(meta.find_undeclared_variables(_environment().parse(template)))


@lru_cache(maxsize=256)
def _compiled(template: str) -> jinja2.Template:
    return _environment().from_string(template)


def render(template: str, row: dict[str, Any]) -> str:
    """Render a template over one row; a missing field raises jinja2.UndefinedError."""
    return _compiled(template).render(**row)


def chat_prompt(tokenizer: Any, user_message: str, system_prompt: str | None = None) -> str:
    """The user message wrapped in the tokenizer's chat template, ending with the assistant header."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_message})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def task_fields(task) -> set[str]:
    """Every field a task's templates and settings read (checked against the source's columns)."""
    names: set[str] = set()
    for text in (task.prompt, task.target, task.tests, task.chosen, task.rejected):
        if text:
            names |= template_variables(text)
    names |= {n for n in (task.answer,) if n}
    names |= set([task.choices] if isinstance(task.choices, str) else task.choices or [])
    return names
