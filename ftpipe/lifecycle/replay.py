"""Self-generated replay (issue 14): the base model answers a pool of general prompts once, and those
answers become replay rows, so a run needs no extra data to remind the model of its own habits.

Generation is greedy, with the evaluator's model loading, and its file is cached under
`$FTPIPE_HOME/cache/replay/<key>.jsonl`, keyed by the base model's fingerprint, the exact rendered
prompts and the generation length (`ftpipe.data.prepare.self_replay_key`): every run, sweep trial
and re-evaluation of the same model and pool reads the same file. The data layer refuses a pool
that overlaps any evaluated item before a single token is generated.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftpipe import console
from ftpipe.data.prepare import load_tokenizer, self_replay_path, self_replay_prompts
from ftpipe.files import write_text_atomic
from ftpipe.spec import LoadedSpec


def ensure_self_generated_replay(loaded: LoadedSpec, base_path: str, device: str = "cpu") -> Path | None:
    """Generate (once) the base model's answers to the spec's self-generated replay pool; return the cached file.

    Returns:
        The file's path, or None when the spec has no `data.replay.self_generated`.

    Raises:
        DataError: the pool overlaps an evaluated item, or has no usable rows.
    """
    from ftpipe.models import context_length

    replay = loaded.spec.data.replay
    if replay is None or replay.self_generated is None:
        return None
    sg = replay.self_generated
    prompts = self_replay_prompts(loaded, load_tokenizer(base_path), context_length(base_path))
    path = self_replay_path(base_path, prompts, sg)
    if path.is_file():
        console.log(f"self-generated replay: {path.name} cached ({len(prompts)} prompts)")
        return path
    from ftpipe.evaluation.generation import ModelSpec, load_model

    console.log(f"self-generated replay: the base model answers {len(prompts)} prompts of {sg.source.path or sg.source.hub}")
    model = load_model(ModelSpec(base_path=base_path, device=device))
    answers = model.generate([p["prompt"] for p in prompts], max_new_tokens=sg.max_new_tokens, batch_size=sg.batch_size)
    rows = [{"prompt_id": p["prompt_id"], "prompt": p["user"], "response": a} for p, a in zip(prompts, answers) if a.strip()]
    meta = {"model": model.fingerprint(), "prompts": len(prompts), "answered": len(rows), "max_new_tokens": sg.max_new_tokens}
    del model
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    write_text_atomic(path.with_suffix(".meta.json"), json.dumps(meta, indent=2))
    console.log(f"self-generated replay: {len(rows)} answers cached in {path}")
    return path
