"""lm-evaluation-harness tasks as held-out probes (issue 17; optional extra `pip install 'ftpipe[lm-eval]'`).

A `kind: lm_eval` task is scored by lm-eval itself: its `hf` model loads the base model (and the
tuned model's adapter through its `peft=` argument, or the full fine-tuned folder), renders and
scores the task's documents its own way, and keeps every document's result (`log_samples`). Those
per-item results, in document order, are what ftpipe's paired bootstrap, McNemar's test and the
forgetting measure compare, exactly as for its own tasks. lm-eval is imported only here, only when
such a task is scored.

A task YAML's relative `data_files` are read relative to the YAML's folder (lm-eval runs from
there), so a probe over local data works from any working directory.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ftpipe.data import EvalItem
from ftpipe.errors import EvalError
from ftpipe.evaluation.scoring import TaskScores
from ftpipe.spec import PipelineSpec, TaskSpec


def task_fingerprint(task_ref: str, task: TaskSpec) -> str:
    """What decides a probe's items and scores besides the model: the task YAML's text (or name), metric, shots, lm-eval's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lm_eval_version = version("lm-eval")
    except PackageNotFoundError:
        lm_eval_version = "absent"
    path = Path(task_ref)
    text = path.read_text(encoding="utf-8") if task.lm_eval.is_file() and path.is_file() else task_ref
    blob = f"{text}\x00{task.lm_eval.metric}\x00{task.lm_eval.num_fewshot}\x00{lm_eval_version}"
    return "lm_eval:" + hashlib.sha256(blob.encode()).hexdigest()


def model_args(model_spec: Any, dtype: str) -> dict[str, Any]:
    """lm-eval's `hf` model arguments for an ftpipe ModelSpec: the base (or full weights) and the adapter as `peft`."""
    if model_spec.quantization:
        raise EvalError("kind lm_eval cannot score a quantized (QLoRA) model yet",
                        hint="score the probe with ftpipe's own multiple_choice kind, or use adapter lora")
    args: dict[str, Any] = {"pretrained": model_spec.weights_path or model_spec.base_path, "dtype": dtype}
    if model_spec.weights_path and not (Path(model_spec.weights_path) / "tokenizer_config.json").exists():
        args["tokenizer"] = model_spec.base_path
    if model_spec.adapter_path:
        args["peft"] = model_spec.adapter_path
    return args


def score_lm_eval(model_spec: Any, dtype: str, device: str, task: TaskSpec, task_ref: str,
                  spec: PipelineSpec) -> TaskScores:
    """Score one model on an lm-eval task; per-item scores in document order, with the items themselves.

    Args:
        model_spec: What to load (an ftpipe ModelSpec: base, adapter or full weights).
        dtype: The dtype ftpipe scores this model in (float32 on CPU), given to lm-eval too.
        device: "cpu" or "cuda".
        task: The ftpipe task (its `lm_eval` section, `max_items`).
        task_ref: A registered task name, or the resolved path of a task YAML.
        spec: The pipeline (item cap, batch size, seed).

    Raises:
        EvalError: lm-eval is not installed, the task is unknown, or its samples lack the metric.
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise EvalError(f"task {task.name} has kind lm_eval, but lm-eval is not installed",
                        hint="pip install 'ftpipe[lm-eval]'") from None
    import yaml

    if task.lm_eval.is_file():
        folder = Path(task_ref).parent
        name = (yaml.safe_load(Path(task_ref).read_text(encoding="utf-8")) or {}).get("task")
        if not isinstance(name, str):
            raise EvalError(f"{task_ref}: not an lm-eval task YAML (no `task:` name)", hint="see lm-eval's task guide")
        manager = TaskManager(include_path=str(folder), include_defaults=False, verbosity="ERROR")
    else:
        folder, name = Path.cwd(), task_ref
        manager = TaskManager(verbosity="ERROR")
    limit = task.max_items or spec.evaluation.max_items
    with _working_folder(folder):
        try:
            result = lm_eval.simple_evaluate(
                model="hf", model_args=model_args(model_spec, dtype), tasks=[name], task_manager=manager,
                num_fewshot=task.lm_eval.num_fewshot, limit=limit, batch_size=spec.evaluation.batch_size,
                device=device, log_samples=True, bootstrap_iters=0, random_seed=spec.training.seed,
                numpy_random_seed=spec.training.seed, torch_random_seed=spec.training.seed,
                fewshot_random_seed=spec.training.seed, verbosity="ERROR")
        except (KeyError, ValueError) as e:
            raise EvalError(f"task {task.name}: lm-eval could not run {name!r} ({type(e).__name__}: {str(e)[:200]})",
                            hint="check lm_eval.task (a registered task name, or a task YAML whose data is local)") from None
    samples = sorted((result or {}).get("samples", {}).get(name, []), key=lambda s: s["doc_id"])
    if not samples:
        raise EvalError(f"task {task.name}: lm-eval returned no samples for {name!r}", hint="check the task's test split")
    metric = task.lm_eval.metric
    if metric not in samples[0]:
        have = sorted(k for k, v in samples[0].items() if isinstance(v, (int, float)) and k != "doc_id")
        raise EvalError(f"task {task.name}: lm-eval's samples of {name!r} have no per-item {metric!r} "
                        f"(they have: {', '.join(have) or 'none'})", hint="set lm_eval.metric to one of them")
    scores = [float(s[metric]) for s in samples]
    items = [_item(task.name, s) for s in samples]
    aggregate = {f"lm_eval_{metric}": _lm_eval_aggregate(result, name, metric)}
    return TaskScores(metric, scores, [_output(s) for s in samples], aggregate,
                      items=[asdict(i) for i in items])


def _item(task_name: str, sample: dict) -> EvalItem:
    arguments = sample.get("arguments") or []
    context = arguments[0][0] if arguments and isinstance(arguments[0], (list, tuple)) else ""
    choices = [a[1].strip() for a in arguments if isinstance(a, (list, tuple)) and len(a) > 1 and isinstance(a[1], str)]
    target = sample.get("target")
    reference = choices[target] if isinstance(target, int) and 0 <= target < len(choices) else str(target)
    return EvalItem(task=task_name, item_id=str(sample["doc_id"]), prompt=context, user_message=context[-600:],
                    reference=reference, choices=choices, answer_index=target if isinstance(target, int) else None)


def _output(sample: dict) -> str:
    """What the model chose: the most likely option (multiple choice) or its filtered generation."""
    resps = sample.get("filtered_resps") or []
    arguments = sample.get("arguments") or []
    if resps and all(isinstance(r, (list, tuple)) and r and isinstance(r[0], float) for r in resps) and len(arguments) == len(resps):
        best = max(range(len(resps)), key=lambda i: resps[i][0])
        return str(arguments[best][1]).strip()
    return str(resps[0]) if resps else ""


def _lm_eval_aggregate(result: dict, name: str, metric: str) -> float:
    value = (result.get("results", {}).get(name, {}) or {}).get(f"{metric},none")
    return float(value) if isinstance(value, (int, float)) else float("nan")


@contextmanager
def _working_folder(folder: Path):
    """Run lm-eval from the task YAML's folder, so its relative data_files resolve there."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
