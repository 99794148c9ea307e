"""The cache of base-model scores: scheduled reruns do not score the same base model twice."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from ftpipe.data import EvalItem
from ftpipe.evaluation.scoring import TaskScores
from ftpipe.files import write_json_atomic
from ftpipe.paths import cache_dir
from ftpipe.spec import PipelineSpec, TaskSpec

SCORER_VERSION = 1  # bump when a score's meaning changes: older cached scores are then not reused


def cache_key(model_fingerprint: str, task: TaskSpec, prompts: list[str], items: list[EvalItem], spec: PipelineSpec) -> str:
    """Identity of a scoring job: model, task definition, exact prompts and references, decoding."""
    payload = {
        "model": model_fingerprint,
        "task": task.model_dump(mode="json", exclude={"weight", "max_train_rows"}),
        "prompts": hashlib.sha256("\x00".join(prompts).encode()).hexdigest(),
        "items": hashlib.sha256(json.dumps([asdict(i) for i in items], sort_keys=True).encode()).hexdigest(),
        "generation": spec.generation.model_dump(mode="json"),
        "scorer_version": SCORER_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_cached(key: str) -> TaskScores | None:
    path = cache_dir() / "eval" / f"{key}.json"
    if not path.exists():
        return None
    try:
        return TaskScores(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None


def store_cached(key: str, scores: TaskScores) -> None:
    folder = cache_dir() / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{key}.json", asdict(scores))
