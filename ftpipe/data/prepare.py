"""Data: a spec's tasks become the exact rows Ludwig trains on and the exact items the evaluator scores.

Stages, in order: read each source; map and check fields; assign splits by a stable row hash;
render prompts (chat template included) and targets; measure token lengths and refuse (or skip)
bad rows; mix tasks; add replay data; check leakage between everything that trains and everything
that is evaluated; fingerprint all inputs.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ftpipe.data.items import SPLIT_CODES, EvalItem, PreparedData, TaskData
from ftpipe.data.conversations import expansion_report
from ftpipe.data.leakage import check_leakage, find_leaks, normalize_for_leakage
from ftpipe.data.mixing import mixture_counts, mixture_report, take_rows
from ftpipe.data.rendering import Renderer, count_tokens
from ftpipe.data.sources import Row, detect_format, hub_revision, read_records, read_source, records_of
from ftpipe.data.splits import row_identity, split_of
from ftpipe.data.templates import render, task_fields
from ftpipe.errors import DataError
from ftpipe.files import sha256_file
from ftpipe.spec import LoadedSpec, PipelineSpec, SourceSpec, TaskSpec


def _read_task(loaded: LoadedSpec, task: TaskSpec) -> dict[str, list[Row]]:
    """Rows of a task by origin: {'all': [...]} or explicit {'train', 'validation', 'test'}; each (line, row)."""
    src = task.source
    if src.hub is not None:
        rows = list(enumerate(records_of(read_source(None, hub=src.hub, split=src.split)), start=1))
        if not rows:
            raise DataError(f"hub dataset {src.hub}: empty (no rows)", hint="check source.hub and source.split")
        return {"all": rows}
    origins = {"all": src.path} if src.path else {"train": src.train, "validation": src.validation, "test": src.test}
    return {origin: read_records(loaded.resolve(rel), src.format, split=src.split, options=src.read_options)
            for origin, rel in origins.items() if rel is not None}


def identity_columns(task: TaskSpec) -> list[str]:
    """The source columns a row's identity hashes: its `id_field`, else every column the task reads."""
    if task.id_field:
        return [task.id_field]
    if task.is_conversation():
        return ["conversation"]  # the whole conversation (Renderer.identity_row): its turns share one split
    if task.kind == "perplexity":
        return ["text"]
    return sorted(task.fields.get(name, name) for name in task_fields(task))


def _source_name(task: TaskSpec, origin: str) -> str:
    src = task.source
    rel = src.hub or (src.path if origin == "all" else getattr(src, origin))
    return str(rel)


def _map_fields(row: dict, task: TaskSpec) -> dict:
    mapped = dict(row)
    for name, column in task.fields.items():
        mapped[name] = row.get(column)
    return mapped


# --------------------------------------------------------------------------------------------
# Per-task preparation
# --------------------------------------------------------------------------------------------


def _prepare_task(loaded: LoadedSpec, task: TaskSpec, role: str, tokenizer: Any, max_total: int) -> TaskData:
    spec = loaded.spec
    if task.kind == "lm_eval":  # lm-eval reads and renders its items itself, at scoring time (issue 17)
        return TaskData(task=task, role=role, lm_eval_task=str(loaded.resolve(task.lm_eval.task))
                        if task.lm_eval.is_file() else task.lm_eval.task)
    renderer = Renderer(tokenizer, task)
    data = TaskData(task=task, role=role)
    salt = f"{spec.data.split_seed}:{task.name}"
    columns = identity_columns(task)
    first_origin: dict[str, str] = {}
    assigned: dict[str, list[tuple[str, dict]]] = {"train": [], "validation": [], "test": []}
    for origin, rows in _read_task(loaded, task).items():
        source_name = _source_name(task, origin)
        unit = "row" if task.source.hub or detect_format(loaded.resolve(source_name), task.source.format) \
            not in ("jsonl", "csv", "tsv") else "line"
        for line, raw in rows:
            row = _map_fields(raw, task)
            problem = renderer.problem(row)
            if problem:
                reason, message = problem
                if spec.data.bad_rows == "skip":
                    data.skipped_rows += 1
                    data.skipped_reasons[reason] = data.skipped_reasons.get(reason, 0) + 1
                    continue
                raise DataError(f"{source_name} {unit} {line}: {message} (task {task.name})",
                                hint="fix the row, or set data.bad_rows: skip to skip and count such rows")
            identity = renderer.identity_row(row) if task.is_conversation() and not task.id_field else raw
            rid = row_identity(identity, columns, salt)
            if rid in first_origin:
                if first_origin[rid] == origin:  # the same row twice in one file: keep it once
                    data.duplicate_rows += 1
                    continue
                # the same row in two explicit split files: kept in both, so the leakage check counts it
            first_origin.setdefault(rid, origin)
            if role != "target":
                split = "test" if role == "held_out" else "train"
            elif origin != "all":
                split = origin
            else:
                split = split_of(rid, spec.data.validation_fraction, spec.data.test_fraction)
            assigned[split].append((rid, row | {"__line": line, "__source": source_name}))

    for split in ("train", "validation"):
        if role == "held_out":
            break
        pool = sorted(assigned[split], key=lambda x: x[0])  # id order: a deterministic random sample
        if task.max_train_rows and split == "train":
            pool = pool[: task.max_train_rows]
        rendered = []
        for rid, row in pool:
            content = renderer.content(row)
            for prompt, target, user in renderer.training_pairs(row):  # a conversation: one per assistant turn
                rendered.append({"prompt": prompt, "target": target, "user_message": user, "row_id": rid, "content": content,
                                 "__line": row["__line"], "__source": row["__source"]})
        rendered = _drop_overlong(rendered, tokenizer, max_total, spec.data.bad_rows, task, data)
        setattr(data, split, rendered)
        if split == "train" and task.is_conversation():
            once = count_tokens(tokenizer, [renderer.conversation_text(row) for _, row in pool])
            data.expansion = expansion_report(len(pool), len(rendered), sum(r["tokens"] for r in rendered), sum(once))

    if role in ("target", "held_out"):
        pool = sorted(assigned["test"], key=lambda x: x[0])  # id order = a deterministic random sample
        cap = task.max_items or spec.evaluation.max_items
        data.eval_items = [renderer.eval_item(row, rid[:12]) for rid, row in pool[:cap]]
        if role == "held_out":  # examples for the forgetting diagnosis's recovery probe, never scored themselves
            k = spec.evaluation.diagnosis.k
            data.spare_items = [renderer.eval_item(row, rid[:12]) for rid, row in pool[cap:cap + k]]
        if not data.eval_items:
            raise DataError(f"task {task.name}: no evaluation items", hint="add rows or raise data.test_fraction")
    if role in ("target", "replay") and not data.train:
        raise DataError(f"task {task.name}: no training rows after splitting", hint="add rows or lower data.test_fraction")
    return data


def _drop_overlong(rows: list[dict], tokenizer: Any, max_total: int, policy: str, task: TaskSpec, data: TaskData) -> list[dict]:
    """Refuse rows whose prompt + target + EOS exceed the limit: Ludwig would silently cut their target.

    Prompt and target are counted apart, as Ludwig tokenizes them (one batched call each).
    """
    prompts, targets = count_tokens(tokenizer, [r["prompt"] for r in rows]), count_tokens(tokenizer, [r["target"] for r in rows])
    kept = []
    for row, p, t in zip(rows, prompts, targets):
        n = p + t
        row["tokens"], row["prompt_tokens"], row["target_tokens"] = n + 1, p, t
        if n + 1 > max_total:
            if policy == "skip":
                data.skipped_rows += 1
                data.skipped_reasons["too_long"] = data.skipped_reasons.get("too_long", 0) + 1
                continue
            raise DataError(f"{row['__source']} row {row['__line']}: {n + 1} tokens, over the limit of {max_total} (task {task.name})",
                            hint="shorten the row, raise training.max_sequence_length, or set data.bad_rows: skip")
        kept.append(row)
    return kept


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def prepare_for_base_model(loaded: LoadedSpec, base_path: str) -> PreparedData:
    """`prepare_data` with the tokenizer and context length of a local base model folder."""
    from ftpipe.models import context_length

    tokenizer = load_tokenizer(base_path)
    replay_file = None
    if loaded.spec.data.replay and loaded.spec.data.replay.self_generated:
        replay_file = self_replay_path(base_path, self_replay_prompts(loaded, tokenizer, context_length(base_path)),
                                       loaded.spec.data.replay.self_generated)
    return prepare_data(loaded, tokenizer, context_length(base_path), self_replay_file=replay_file)


# --------------------------------------------------------------------------------------------
# Self-generated replay: the base model's own answers to a prompt pool (issue 14)
# --------------------------------------------------------------------------------------------

SELF_REPLAY_VERSION = 1  # bump when the meaning of a generated replay file changes


def self_replay_prompts(loaded: LoadedSpec, tokenizer: Any, context_length: int) -> list[dict]:
    """The pool's prompts, rendered as the model sees them: [{prompt_id, prompt, user}], in pool order.

    The pool is refused (DataError, whatever data.leakage.action says) when any of its prompts is
    also an evaluated item of a target or held-out task, exactly or as a near duplicate: replaying
    the base model's answers to the probes would hide the very forgetting they measure.
    """
    spec = loaded.spec
    sg = spec.data.replay.self_generated
    task = sg.pool_task()
    renderer = Renderer(tokenizer, task)
    rows, seen = [], set()
    for origin, records in _read_task(loaded, task).items():
        for line, raw in records:
            row = _map_fields(raw, task)
            problem = renderer.problem(row)
            if problem:
                raise DataError(f"{_source_name(task, origin)} line {line}: {problem[1]} (data.replay.self_generated pool)",
                                hint="fix the row, or point self_generated.source at another prompt pool")
            user = render(task.prompt, row)
            if normalize_for_leakage(user) in seen:
                continue
            seen.add(normalize_for_leakage(user))
            rows.append({"prompt_id": hashlib.sha256(user.encode()).hexdigest()[:16], "prompt": renderer.wrap(user),
                         "user": user, "content": renderer.content(row)})
            if len(rows) >= sg.max_prompts:
                break
        if len(rows) >= sg.max_prompts:
            break
    if not rows:
        raise DataError(f"data.replay.self_generated: the prompt pool {_source_name(task, 'all')} has no rows",
                        hint="point source at a file of general prompts")
    max_total = min(spec.training.max_sequence_length or context_length, context_length)
    evaluated = [t for t in spec.tasks] + list(spec.evaluation.held_out)
    items: list[tuple[str, str]] = []
    for t in evaluated:
        data = _prepare_task(loaded, t, "target" if t in spec.tasks else "held_out", tokenizer, max_total)
        items += [(t.name, i.content) for i in data.eval_items if i.content]
    _refuse_pool_leaks([r["content"] for r in rows], items, spec)
    return rows


def _refuse_pool_leaks(pool: list[str], items: list[tuple[str, str]], spec: PipelineSpec) -> None:
    cfg = spec.data.leakage
    leaks = find_leaks(pool, [text for _, text in items], cfg.ngram, cfg.near_duplicate_threshold)
    if leaks:
        by_task: dict[str, int] = {}
        for leak in leaks:
            by_task[items[leak["index"]][0]] = by_task.get(items[leak["index"]][0], 0) + 1
        first = items[leaks[0]["index"]]
        raise DataError(f"data.replay.self_generated: the prompt pool overlaps evaluated items "
                        f"({', '.join(f'{t}: {n}' for t, n in sorted(by_task.items()))}); e.g. [{first[0]}] {first[1][:80]!r}",
                        hint="self-generated replay needs a pool of general prompts that are never evaluated; "
                             "remove those prompts or name another source")


def self_replay_key(base_path: str, prompts: list[dict], sg: Any) -> str:
    """Cache identity of a generated replay file: the model's fingerprint, the exact prompts, the generation length."""
    from ftpipe.models import model_fingerprint

    blob = json.dumps({"v": SELF_REPLAY_VERSION, "model": model_fingerprint(base_path),
                       "prompts": hashlib.sha256("\x00".join(p["prompt"] for p in prompts).encode()).hexdigest(),
                       "max_new_tokens": sg.max_new_tokens}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def self_replay_path(base_path: str, prompts: list[dict], sg: Any) -> Path:
    """Where the generated replay rows of this model and prompt set are cached ($FTPIPE_HOME/cache/replay)."""
    from ftpipe.paths import cache_dir

    return cache_dir() / "replay" / f"{self_replay_key(base_path, prompts, sg)}.jsonl"


def load_tokenizer(model_path: str) -> Any:
    """The base model's tokenizer (prompts are rendered and counted with it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def prepare_data(loaded: LoadedSpec, tokenizer: Any, context_length: int, self_replay_file: Path | None = None) -> PreparedData:
    """Turn a validated spec into training rows and evaluation items, or raise DataError.

    Args:
        loaded: The validated spec and its location.
        tokenizer: The base model's tokenizer.
        context_length: The base model's context; rows longer than this (or the spec's cap) are bad rows.
        self_replay_file: The generated replay rows of `data.replay.self_generated` (`self_replay_path`).
    """
    spec = loaded.spec
    max_total = min(spec.training.max_sequence_length or context_length, context_length)
    tasks: dict[str, TaskData] = {}
    for task in spec.tasks:
        tasks[task.name] = _prepare_task(loaded, task, "target", tokenizer, max_total)
    for task in spec.evaluation.held_out:
        tasks[task.name] = _prepare_task(loaded, task, "held_out", tokenizer, max_total)
    if spec.data.replay and spec.data.replay.task:
        tasks[spec.data.replay.task.name] = _prepare_task(loaded, spec.data.replay.task, "replay", tokenizer, max_total)
    elif spec.data.replay:
        tasks[spec.data.replay.self_generated.name] = _self_replay_task(loaded, tokenizer, max_total, self_replay_file, tasks)

    rng = random.Random(spec.training.seed)
    targets = [t for t in tasks.values() if t.role == "target"]
    counts = mixture_counts({t.task.name: len(t.train) for t in targets}, {t.task.name: t.task.weight for t in targets},
                            spec.data.mixing.strategy, spec.data.mixing.temperature, spec.data.mixing.cap)
    train_rows: list[dict] = []
    for t in targets:
        train_rows += [r | {"task": t.task.name, "split": "train"} for r in take_rows(t.train, counts[t.task.name], rng)]
        train_rows += [r | {"task": t.task.name, "split": "validation"} for r in t.validation]
    if spec.data.replay:
        replay = tasks[spec.data.replay.replay_task().name]
        n_target = sum(counts.values())
        n_replay = max(1, round(n_target * spec.data.replay.share / (1 - spec.data.replay.share)))
        if replay.task.max_train_rows:  # the cap counts rows taken, repeats included
            n_replay = min(n_replay, replay.task.max_train_rows)
        train_rows += [r | {"task": replay.task.name, "split": "train"} for r in take_rows(replay.train, n_replay, rng)]
    rng.shuffle(train_rows)

    leakage = check_leakage(spec, tasks, train_rows)
    _check_enough_items(spec, tasks)
    mixture = mixture_report(train_rows)
    lengths = _lengths(tokenizer, train_rows, tasks, spec)
    few_shot = {t.task.name: [{"user": r["user_message"], "target": r["target"]} for r in t.train[: spec.evaluation.few_shot]]
                for t in targets if not t.task.is_conversation()} if spec.evaluation.few_shot else {}
    input_hashes, fingerprint = data_fingerprint(loaded)
    return PreparedData(tasks=tasks, train_rows=train_rows, mixture=mixture, leakage=leakage, lengths=lengths,
                        fingerprint=fingerprint, input_hashes=input_hashes, few_shot=few_shot)


def _self_replay_task(loaded: LoadedSpec, tokenizer: Any, max_total: int, path: Path | None,
                      tasks: dict[str, TaskData]) -> TaskData:
    """The generated replay rows as a replay task; refused when the pool overlaps anything evaluated."""
    replay = loaded.spec.data.replay
    if path is None or not path.is_file():
        raise DataError("data.replay.self_generated: the base model's answers have not been generated yet"
                        + (f" ({path} is missing)" if path else ""),
                        hint="`ftpipe run` generates them before preparing data; from Python call "
                             "ftpipe.lifecycle.replay.ensure_self_generated_replay first")
    task = replay.replay_task().model_copy(update={"source": SourceSpec(path=str(path), format="jsonl")})
    data = _prepare_task(loaded, task, "replay", tokenizer, max_total)
    items = [(name, i.content) for name, t in tasks.items() for i in t.eval_items if i.content]
    _refuse_pool_leaks([row["content"] for row in data.train], items, loaded.spec)  # content: the pool prompt
    return data


def _check_enough_items(spec: PipelineSpec, tasks: dict[str, TaskData]) -> None:
    """Stop before training when leakage drops left a task with too little to evaluate."""
    floor = spec.evaluation.min_items
    for name, data in tasks.items():
        if data.role in ("target", "held_out") and len(data.eval_items) < floor and data.lm_eval_task is None:
            raise DataError(f"task {name}: {len(data.eval_items)} items left to evaluate after dropping leaked items "
                            f"(evaluation.min_items is {floor})",
                            hint="remove the duplicated rows from training or evaluation data, or lower evaluation.min_items")


def _lengths(tokenizer: Any, train_rows: list[dict], tasks: dict[str, TaskData], spec: PipelineSpec) -> dict[str, int]:
    """Measured token lengths, from which the compiler sets Ludwig's sequence limits.

    The prompt limit also covers evaluation prompts: Ludwig would otherwise cut a longer prompt's end
    (its assistant header) at predict time.
    """
    eval_prompts = sorted({i.prompt for t in tasks.values() for i in t.eval_items if i.prompt})
    longest_eval = max(count_tokens(tokenizer, eval_prompts), default=0)
    return {
        "max_prompt_tokens": max(longest_eval, max(r["prompt_tokens"] for r in train_rows)),
        "max_target_tokens": max(r["target_tokens"] for r in train_rows) + 1,  # + the EOS Ludwig appends
        "max_total_tokens": max(r["tokens"] for r in train_rows),
        "max_new_tokens": spec.generation.max_new_tokens,
    }


def data_fingerprint(loaded: LoadedSpec) -> tuple[dict[str, str], str]:
    """(sha256 of every input file, one fingerprint of spec + inputs): what `--if-changed` compares."""
    hashes = _input_hashes(loaded)
    blob = json.dumps({"spec": loaded.spec_hash(), "inputs": hashes}, sort_keys=True).encode()
    return hashes, hashlib.sha256(blob).hexdigest()


def _input_hashes(loaded: LoadedSpec) -> dict[str, str]:
    hashes: dict[str, str] = {}
    replay = loaded.spec.data.replay
    pool = [replay.self_generated.pool_task()] if replay and replay.self_generated else []
    for task in [*loaded.spec.all_tasks(), *pool]:
        src = task.source
        if src is None:  # an lm_eval probe: its task YAML is an input (a registered task is lm-eval's version)
            if task.lm_eval.is_file():
                hashes[f"{task.name}:{task.lm_eval.task}"] = sha256_file(loaded.resolve(task.lm_eval.task))
            continue
        if src.hub:
            hashes[f"{task.name}:hub:{src.hub}"] = hub_revision(src.hub, src.split)
        for key in ("path", "train", "validation", "test"):
            rel = getattr(src, key)
            if rel:
                hashes[f"{task.name}:{rel}"] = sha256_file(loaded.resolve(rel))
    return hashes


def training_frame(prepared: PreparedData):
    """The DataFrame handed to Ludwig: prompt, target, split (0 train, 1 validation)."""
    import pandas as pd

    return pd.DataFrame({
        "prompt": [r["prompt"] for r in prepared.train_rows],
        "target": [r["target"] for r in prepared.train_rows],
        "split": [SPLIT_CODES[r["split"]] for r in prepared.train_rows],
    })


def eval_items_as_dicts(prepared: PreparedData) -> dict[str, list[dict]]:
    """Evaluation items as plain dicts (written to the run folder)."""
    return {name: [asdict(i) for i in t.eval_items] for name, t in prepared.tasks.items() if t.eval_items}
