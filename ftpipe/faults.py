"""Fault injection for the reliability tests: `FTPIPE_FAULT=<point>` makes the process SIGKILL itself there.

Each point sits where a real kill (power loss, the OOM killer, a scheduler's timeout) does the most
damage: mid-stage, between the writes of one logical step. Unset, `point()` costs one dictionary
lookup. The test matrix in tests/test_faults.py kills a real `ftpipe run` at every point, runs it
again, and checks that nothing was lost or trusted half-written (docs/reliability.md).
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "prepare",           # data prepared, its summary written, before the stage ends
    "compile",           # the Ludwig config written, before the manifest records it
    "train:step",        # after the first optimizer step of the second epoch (mid-epoch, past a checkpoint)
    "train:checkpoint",  # Ludwig wrote a checkpoint, ftpipe has not recorded it complete yet
    "train:adapter",     # while the trained adapter is copied into the run folder
    "evaluate",          # the base model scored, the tuned one not yet
    "report",            # report.json written, report.md not yet
    "promote",           # the promotion journal written, the pointer not yet moved
)


def point(name: str) -> None:
    """SIGKILL this process if `FTPIPE_FAULT` names this point (`train:step` may carry `@N`: at step N)."""
    wanted = os.environ.get("FTPIPE_FAULT")
    if wanted and wanted.split("@", 1)[0] == name:
        os.kill(os.getpid(), signal.SIGKILL)


def step_point(step: int, steps_per_epoch: int) -> None:
    """The `train:step` point: at step `@N` if given, else the first step of the second epoch."""
    wanted = os.environ.get("FTPIPE_FAULT", "")
    if not wanted.startswith("train:step"):
        return
    at = int(wanted.split("@", 1)[1]) if "@" in wanted else steps_per_epoch + 1
    if step == at:
        os.kill(os.getpid(), signal.SIGKILL)
