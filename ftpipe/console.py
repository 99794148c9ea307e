"""Terminal output: rich progress on a terminal, plain log lines under cron and CI."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and advisory warnings: ftpipe reports progress itself.

    Sets environment variables and logger levels only, so it imports nothing heavy.
    """
    import logging
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def is_interactive() -> bool:
    """A person is watching: stderr is a terminal."""
    return sys.stderr.isatty()


def log(message: str) -> None:
    """One plain line on stderr with a UTC time stamp (cron and CI logs keep these)."""
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


class StepReporter:
    """Progress of a stage with a known number of steps: a rich bar, or a log line every ~10%."""

    def __init__(self, label: str, total: int | None):
        self.label, self.total = label, total
        self.start = time.monotonic()
        self._last_logged = -1
        self._bar = None
        if is_interactive():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[extra]}"),
                                 transient=False)
            self._task = self._bar.add_task(label, total=total, extra="")
            self._bar.start()

    def update(self, done: int, total: int | None = None, extra: str = "") -> None:
        """Report `done` of `total` steps; `extra` is shown after the bar (loss, lr)."""
        total = total or self.total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, extra=extra)
            return
        if not total:
            return
        decile = int(10 * done / total)
        if decile > self._last_logged or done == total:
            self._last_logged = decile
            elapsed = time.monotonic() - self.start
            eta = elapsed / max(done, 1) * (total - done)
            log(f"{self.label}: {done}/{total} {extra} elapsed {elapsed:.0f}s eta {eta:.0f}s".replace("  ", " "))

    def close(self) -> None:
        """Stop the bar."""
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a stage and announce it."""
    log(f"{name} ...")
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - start, 2)
        log(f"{name} done in {timings[name]:.1f}s")


def step_callback(reporter: StepReporter) -> Callable[[dict], None]:
    """Adapter from Ludwig's per-batch progress dicts to a StepReporter."""

    def on_step(info: dict) -> None:
        loss = info.get("loss")
        extra = f"loss {loss:.4f}" if loss is not None else ""
        reporter.update(info["step"], info.get("total_steps"), extra)

    return on_step
