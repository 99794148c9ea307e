"""`ftpipe chat` (issue 17): driven in a real terminal (a pty) against the tiny chat run, and its loop checked on
SmolLM2 for what the tiny random model cannot show (it only ever emits newlines): real multi-turn history and
answers streamed in pieces."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """A command in a pseudo-terminal: what a person at a terminal would see and type."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
                                     start_new_session=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 240) -> str:
        """Read until `text` has appeared after what was already consumed; return what came before it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {text!r}; the terminal shows:\n{self.seen[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    assert text in self.seen, f"the program ended before {text!r}:\n{self.seen[-2000:]}"
                self.seen += ANSI.sub("", chunk.decode("utf-8", "replace")).replace("\r\n", "\n")
        before, _, self.seen = self.seen.partition(text)
        return before

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.master)


def test_chat_in_a_terminal_two_turns_with_compare(tiny_chat_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FTPIPE_HISTORY_DB": str(tmp_path / "history.sqlite"), "TERM": "xterm"}
    env.pop("MLFLOW_TRACKING_URI", None)
    root = tiny_chat_run.parent.parent
    term = Terminal([sys.executable, "-m", "ftpipe", "chat", "tiny-chat", "--compare", "--max-new-tokens", "6",
                     "--runs-dir", str(root)], env)
    try:
        header = term.expect("you> ")
        assert f"chatting with run {tiny_chat_run.name} of tiny-chat (base and tuned" in header  # the promoted run
        for message in ("My order 2409632 has not arrived.", "Can you check again?"):
            term.type(message)
            shown = term.expect("you> ")
            echoed, base_at, tuned_at = shown.find(message), shown.find("base> "), shown.find("tuned> ")
            assert 0 <= echoed < base_at < tuned_at, shown  # both models answer, base first
            assert shown[base_at:].count("\n") >= 2  # each answer ends its line
        term.type("/reset")
        assert "(conversation forgotten)" in term.expect("you> ")
        os.write(term.master, b"\x04")  # Ctrl-D ends the session
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_chat_loop_keeps_the_history_and_streams_answers(smollm2_dir):
    from ftpipe.evaluation.chat import ChatModel, answer_stream, chat_loop
    from ftpipe.evaluation.generation import ModelSpec, load_model

    model = load_model(ModelSpec(base_path=str(smollm2_dir), device="cpu"))
    lines = iter(["My name is Ada and I like green tea.", "What is my name?"])

    def read(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    chat = ChatModel("tuned", model)
    assert chat_loop([chat], system_prompt="Answer briefly.", max_new_tokens=12, read=read, out=out) == 2
    assert [m["role"] for m in chat.history] == ["system", "user", "assistant", "user", "assistant"]
    first, second = chat.history[2]["content"], chat.history[4]["content"]
    assert first and second and out.getvalue() == f"{first}\n{second}\n\n"  # the last line ends the session (Ctrl-D)
    pieces: list[str] = []
    assert answer_stream(model, chat.history[:4], 12, pieces.append) == second  # the answer given the whole history
    assert len(pieces) > 1 and "".join(pieces).strip() == second  # it came out word by word
    alone = answer_stream(model, [chat.history[0], chat.history[3]], 12, lambda _: None)
    assert alone != second  # without the first turn the model answers differently: the history was used
