"""`ftpipe chat RUN` (issue 17): talk to a tuned model in a terminal, optionally beside its base model.

Each message is wrapped in the base model's chat template with the conversation so far, and the
answer streams token by token as greedy decoding produces it (the same decoding the evaluator
uses). With `compare`, the base and the tuned model each answer every message, each keeping its
own history (its own earlier answers), so the two conversations are what each model would have
had. `/reset` forgets the history, `/exit` (or Ctrl-D) ends the session.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

PROMPT = "you> "
HELP = "/reset forgets the conversation, /exit (or Ctrl-D) quits"


@dataclass
class ChatModel:
    """One loaded model in a chat session, with its own conversation history."""

    label: str
    model: Any  # a LoadedModel (ftpipe.evaluation.generation)
    history: list[dict[str, str]] = field(default_factory=list)


def answer_stream(loaded: Any, messages: list[dict[str, str]], max_new_tokens: int, write: Callable[[str], None]) -> str:
    """Greedy answer to a conversation, written piece by piece as it is generated; returns the whole answer.

    Args:
        loaded: A LoadedModel.
        messages: The conversation, ending with the user's message.
        max_new_tokens: Most tokens to generate.
        write: Called with each new piece of text (whole words where the tokenizer allows).
    """
    import torch
    from transformers import TextStreamer

    tokenizer = loaded.tokenizer
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")

    class _Stream(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                write(text)

    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids["input_ids"].to(loaded.device),
                                    attention_mask=ids["attention_mask"].to(loaded.device),
                                    max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                    streamer=_Stream(tokenizer, skip_prompt=True, skip_special_tokens=True))
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    eos = set(loaded.eos_ids)
    cut = next((j for j, t in enumerate(new) if t in eos), len(new))
    return tokenizer.decode(new[:cut], skip_special_tokens=True).strip()


class _Display:
    """Writes a streamed answer as it comes, without its leading and trailing blank space."""

    def __init__(self, out: TextIO):
        self.out, self.started, self.pending = out, False, ""

    def write(self, text: str) -> None:
        text = self.pending + text
        if not self.started:
            text = text.lstrip()
        body = text.rstrip()
        self.pending = text[len(body):]  # held back until more words follow it
        if body:
            self.out.write(body)
            self.out.flush()
            self.started = True


def chat_loop(models: list[ChatModel], *, system_prompt: str | None, max_new_tokens: int,
              read: Callable[[str], str] = input, out: TextIO | None = None) -> int:
    """Read messages until /exit or end of input; every model answers each one. Returns the number of turns.

    Args:
        models: One model, or base and tuned (`--compare`).
        system_prompt: A system message opening every conversation (None: the template's default).
        max_new_tokens: Most tokens per answer.
        read: Reads one line after showing the prompt (raises EOFError at the end of input).
        out: Where answers go (default stdout).
    """
    out = out or sys.stdout
    labelled = len(models) > 1
    opening = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for m in models:
        m.history = list(opening)
    turns = 0
    while True:
        try:
            message = read(PROMPT).strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return turns
        if not message:
            continue
        if message in ("/exit", "/quit"):
            return turns
        if message == "/reset":
            for m in models:
                m.history = list(opening)
            out.write("(conversation forgotten)\n")
            continue
        if message.startswith("/"):
            out.write(f"unknown command {message.split()[0]} ({HELP})\n")
            continue
        for m in models:
            m.history.append({"role": "user", "content": message})
            out.write(f"{m.label}> " if labelled else "")
            out.flush()

            answer = answer_stream(m.model, m.history, max_new_tokens, _Display(out).write)
            m.history.append({"role": "assistant", "content": answer})
            out.write("\n" if answer else "(empty answer)\n")
            out.flush()
        turns += 1


def chat_with_run(run_dir, spec, base_path: str, *, compare: bool, system_prompt: str | None, max_new_tokens: int,
                  device: str = "cpu", read: Callable[[str], str] | None = None, out: TextIO | None = None) -> int:
    """Load a run's tuned model (and its base with `compare`) and chat in the terminal.

    Args:
        run_dir: The run folder (its adapter/ or weights/).
        spec: The run's resolved PipelineSpec.
        base_path: The base model folder the run trained on.
        compare: Answer each message with the base model too.
        system_prompt: System message (None: the first task's system_prompt, else the template's default).
        max_new_tokens: Most tokens per answer.
        device: Where the models run.
        read: Line reader (default: `input`, with line editing where readline exists).
        out: Where answers go (default stdout).

    Returns:
        The number of messages answered.
    """
    from ftpipe.evaluation.evaluate import tuned_model_spec
    from ftpipe.evaluation.generation import ModelSpec, load_model

    out = out or sys.stdout
    if read is None:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:  # pragma: no cover - not on every platform
            pass
        read = input
    models = []
    if compare:
        models.append(ChatModel("base", load_model(ModelSpec(base_path=base_path, device=device))))
    models.append(ChatModel("tuned", load_model(tuned_model_spec(run_dir, spec, base_path, device))))
    system = system_prompt if system_prompt is not None else next((t.system_prompt for t in spec.tasks if t.system_prompt), None)
    shown = " and ".join(m.label for m in models)
    out.write(f"chatting with run {run_dir.name} of {spec.name} ({shown}; base {spec.base_model}). {HELP}\n")
    out.flush()
    return chat_loop(models, system_prompt=system, max_new_tokens=max_new_tokens, read=read, out=out)
