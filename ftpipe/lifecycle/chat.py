"""`ftpipe chat RUN` (issue 17): which run to talk to, then the evaluation layer's chat session.

RUN is a run id, a unique id prefix or a run folder, or a pipeline name, which means the run its
`promoted` pointer names (the model in service).
"""

from __future__ import annotations

from pathlib import Path

from ftpipe.errors import RunNotFoundError
from ftpipe.lifecycle.rerun import load_run_spec
from ftpipe.lifecycle.runs import find_run, load_manifest, pipeline_dir, promoted_run


def chat_target(ref: str, root: Path | None = None) -> Path:
    """The run folder to chat with: a pipeline's promoted run, or the run `ref` names."""
    if not Path(ref).exists() and pipeline_dir(ref, root).is_dir():
        promoted = promoted_run(ref, root)
        if promoted is None:
            raise RunNotFoundError(f"pipeline {ref} has no promoted run",
                                   hint=f"give a run id (see `ftpipe runs list {ref}`) or `ftpipe promote RUN` first")
        return promoted
    return find_run(ref, root)


def chat_run(ref: str, root: Path | None = None, *, compare: bool = False, system_prompt: str | None = None,
             max_new_tokens: int = 256) -> int:
    """Chat with a run's tuned model (and its base with `compare`) in the terminal; returns the messages answered."""
    from ftpipe.evaluation.chat import chat_with_run
    from ftpipe.training import resolve_device

    run_dir = chat_target(ref, root)
    if not ((run_dir / "adapter").is_dir() or (run_dir / "weights").is_dir()):
        raise RunNotFoundError(f"{run_dir}: no trained model (status {load_manifest(run_dir).status})",
                               hint="chat with a run that finished training")
    loaded = load_run_spec(run_dir)
    base_path = load_manifest(run_dir).base_model or loaded.spec.base_model
    return chat_with_run(run_dir, loaded.spec, base_path, compare=compare, system_prompt=system_prompt,
                         max_new_tokens=max_new_tokens, device=resolve_device(loaded.spec.compute.device))
