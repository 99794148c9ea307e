"""The promoted pointer: which run serves, how it got there, and how to walk it back.

`runs/<pipeline>/promotions.jsonl` is a journal, one line per promotion or rollback, each holding
the whole promotion stack after it. It is the truth; the `promoted` symlink mirrors the stack's
top, and the SQLite history copies each event. A move is: append the journal line (fsynced),
record it in the history, swap the symlink. A kill between those steps leaves the old pointer in
place (a complete, succeeded run) until the next writer of the pipeline, which replays the journal
first (`reconcile`), so the pointer and the history never disagree for longer than that.

Promotions stack: after promoting A, B, C, rollback goes to B, then to A, then says there is
nothing earlier. Every writer holds the pipeline's lock.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftpipe import console, faults
from ftpipe.errors import BadInputError
from ftpipe.lifecycle import history
from ftpipe.lifecycle.runs import (
    PROMOTED,
    PipelineLock,
    find_run,
    load_manifest,
    pipeline_dir,
    promoted_run,
    set_promoted,
)

JOURNAL = "promotions.jsonl"


def promotion_stack(pdir: Path) -> list[str]:
    """Run ids of the promotion stack, oldest first (the last one serves)."""
    events = journal_events(pdir)
    if events:
        return list(events[-1]["stack"])
    current = promoted_run(pdir.name, pdir.parent)  # a pipeline promoted before the journal existed
    return [current.name] if current is not None else []


def journal_events(pdir: Path) -> list[dict]:
    """Every complete journal line; a line cut short by a kill is ignored."""
    path = pdir / JOURNAL
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and isinstance(event.get("stack"), list):
            events.append(event)
    return events


def _append(pdir: Path, event: dict) -> None:
    with (pdir / JOURNAL).open("a", encoding="utf-8") as f:
        f.write(json.dumps(event, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _point(pdir: Path, run_id: str | None) -> None:
    if run_id is None:
        (pdir / PROMOTED).unlink(missing_ok=True)
    else:
        set_promoted(pdir / run_id)


def _servable(pdir: Path, run_id: str) -> bool:
    """A run the pointer may name: its folder exists, it succeeded, and its model is there."""
    run_dir = pdir / run_id
    try:
        manifest = load_manifest(run_dir)
    except (BadInputError, ValueError, OSError):
        return False
    return manifest.status == "succeeded" and any((run_dir / name).is_dir() for name in ("adapter", "weights", "head"))


def _move(pdir: Path, action: str, run_id: str | None, stack: list[str], detail: str) -> None:
    at = datetime.now(timezone.utc).isoformat(timespec="microseconds")  # events of one second stay distinct
    event = {"at": at, "action": action, "run": run_id, "stack": stack, "detail": detail}
    _append(pdir, event)
    faults.point("promote")
    history.record_promotion(pdir.name, run_id or "", f"{action}: {detail}" if detail else action, event["at"])
    _point(pdir, run_id)
    _sync_registry(pdir, action, run_id)


def _sync_registry(pdir: Path, action: str, run_id: str | None) -> None:
    """Move the MLflow Model Registry alias after the pointer (issue 17); best effort, the journal is the truth."""
    from ftpipe.lifecycle.mlflow_ import move_alias

    move_alias(pdir, action, run_id)


def reconcile(pdir: Path) -> list[str]:
    """Make the pointer agree with the journal, and name only a servable run; call holding the lock.

    Repairs what a kill between the journal line and the symlink swap left behind, and a pointer
    whose run folder was deleted or damaged since (it walks back to the newest servable promotion).

    Returns:
        One line per repair made (empty when everything agreed).
    """
    repairs = []
    stack = promotion_stack(pdir)
    gone = []
    while stack and not _servable(pdir, stack[-1]):
        gone.append(stack.pop())
    if gone:
        detail = f"passed over missing or incomplete {', '.join(gone)}"
        _move(pdir, "repair", stack[-1] if stack else None, stack, detail)
        repairs.append(f"{pdir.name}: promoted pointer {detail}; now {stack[-1] if stack else 'none'}")
    wanted = stack[-1] if stack else None
    link = pdir / PROMOTED
    current = os.readlink(link) if link.is_symlink() else None
    if current != wanted and (journal_events(pdir) or current is not None):
        console.log(f"repairing the promoted pointer of {pdir.name}: {current or 'none'} -> {wanted or 'none'}")
        _point(pdir, wanted)
        repairs.append(f"{pdir.name}: promoted pointer {current or 'none'} -> {wanted or 'none'}")
    from ftpipe.lifecycle.mlflow_ import catch_up

    catch_up(pdir, wanted)  # a registry alias move that missed MLflow earlier (issue 17)
    return repairs


def promote_locked(run_dir: Path, by: str) -> None:
    """Push a run onto the promotion stack and point at it (the caller holds the pipeline's lock)."""
    pdir = run_dir.parent
    if not _servable(pdir, run_dir.name):
        raise BadInputError(f"run {run_dir.name} cannot be promoted: it did not succeed or has no model",
                            hint="only succeeded, evaluated runs can be promoted")
    _move(pdir, "promote", run_dir.name, [*promotion_stack(pdir), run_dir.name], by)


def promote(run_ref: str, root: Path | None = None) -> Path:
    """`ftpipe promote RUN`: make a succeeded run the promoted one by hand (no gates are judged)."""
    run_dir = find_run(run_ref, root)
    manifest = load_manifest(run_dir)
    if manifest.status != "succeeded":
        raise BadInputError(f"run {manifest.run_id} has status {manifest.status}; only succeeded runs can be promoted",
                            hint="a --no-eval run (status trained) needs `ftpipe eval` first")
    with locked(run_dir.parent, f"promote {manifest.run_id}"):
        promote_locked(run_dir, "by hand")
    return run_dir


def rollback(pipeline: str, root: Path | None = None) -> Path:
    """`ftpipe rollback PIPELINE`: pop the promotion stack and point at the run promoted before.

    Runs on the stack whose folders are gone (or are no longer complete) are passed over and named.
    """
    pdir = pipeline_dir(pipeline, root)
    if not pdir.is_dir():
        raise BadInputError(f"no pipeline {pipeline} under {pdir.parent}", hint="see `ftpipe runs list`")
    with locked(pdir, f"rollback {pipeline}"):
        stack = promotion_stack(pdir)
        if not stack:
            raise BadInputError(f"pipeline {pipeline} has no promoted run", hint="see `ftpipe runs list`")
        current, rest, skipped = stack[-1], stack[:-1], []
        while rest and not _servable(pdir, rest[-1]):
            skipped.append(rest.pop())
        if not rest:
            raise BadInputError(f"pipeline {pipeline}: no earlier promoted run to roll back to "
                                f"(the promotion history holds only {current}"
                                + (f"; passed over missing or incomplete {', '.join(skipped)}" if skipped else "") + ")")
        detail = f"from {current}" + (f", passing over {', '.join(skipped)}" if skipped else "")
        _move(pdir, "rollback", rest[-1], rest, detail)
        return pdir / rest[-1]


@contextmanager
def locked(pdir: Path, what: str) -> Iterator[PipelineLock]:
    """Hold the pipeline's lock for a command (fails at once, exit 4, while a run holds it).

    The journal is replayed first, so a pointer left behind by a kill is repaired before anything else.
    """
    lock = PipelineLock(pdir)
    lock.acquire(what)
    try:
        lock.repairs = reconcile(pdir)
        yield lock
    finally:
        lock.release()
