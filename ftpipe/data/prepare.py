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
from typing import Any

from ftpipe.data.items import SPLIT_CODES, EvalItem, PreparedData, TaskData
from ftpipe.data.leakage import check_leakage
from ftpipe.data.mixing import mixture_counts, mixture_report, take_rows
from ftpipe.data.rendering import Renderer, count_tokens
from ftpipe.data.sources import detect_format, read_source
from ftpipe.data.splits import row_hash, split_of
from ftpipe.errors import DataError
from ftpipe.files import sha256_file
from ftpipe.spec import LoadedSpec, PipelineSpec, TaskSpec


def _records(df) -> list[dict]:
    """DataFrame rows as plain dicts (numpy scalars and arrays become Python values)."""
    return json.loads(df.to_json(orient="records", force_ascii=False))


def _read_task(loaded: LoadedSpec, task: TaskSpec) -> dict[str, list[tuple[int, dict]]]:
    """Rows of a task by origin: {'all': [...]} or explicit {'train', 'validation', 'test'}; each (line, row)."""
    src = task.source
    out: dict[str, list[tuple[int, dict]]] = {}
    if src.hub is not None:
        out["all"] = list(enumerate(_records(read_source(None, hub=src.hub, split=src.split)), start=1))
        return out
    origins = {"all": src.path} if src.path else {"train": src.train, "validation": src.validation, "test": src.test}
    for origin, rel in origins.items():
        if rel is None:
            continue
        path = loaded.resolve(rel)
        fmt = detect_format(path, src.format)
        has_header = src.read_options.get("header", "infer") is not None
        first_line = 2 if fmt in ("csv", "tsv") and has_header else 1  # a CSV's header is line 1
        df = read_source(path, fmt, split=src.split, options=src.read_options)
        out[origin] = [(i + first_line, r) for i, r in enumerate(_records(df))]
    return out


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
    renderer = Renderer(tokenizer, task)
    data = TaskData(task=task, role=role)
    origins = _read_task(loaded, task)
    salt = f"{spec.data.split_seed}:{task.name}"
    seen: set[str] = set()
    assigned: dict[str, list[tuple[str, dict]]] = {"train": [], "validation": [], "test": []}
    for origin, rows in origins.items():
        source_name = _source_name(task, origin)
        for line, raw in rows:
            row = _map_fields(raw, task)
            missing = renderer.check_fields(row) if task.kind != "perplexity" else None
            if missing:
                if spec.data.bad_rows == "skip":
                    data.skipped_rows += 1
                    continue
                raise DataError(f"{source_name} row {line}: field '{missing}' is missing or empty (task {task.name})",
                                hint="fix the row, or set data.bad_rows: skip")
            rid = row_hash(raw, salt)
            if rid in seen:  # an exact duplicate row would sit in one split twice: keep it once
                continue
            seen.add(rid)
            if role != "target":
                split = "test"
            elif origin != "all":
                split = origin
            else:
                split = split_of(rid, spec.data.validation_fraction, spec.data.test_fraction)
            assigned[split].append((rid, row | {"__line": line, "__source": source_name}))

    for split in ("train", "validation"):
        if role == "held_out":
            break
        pool = sorted(assigned[split], key=lambda x: x[0])
        if role in ("target", "replay") and task.max_train_rows and split == "train":
            pool = pool[: task.max_train_rows]
        if role == "replay":
            pool = sorted(assigned["train"] + assigned["validation"] + assigned["test"], key=lambda x: x[0])
        rendered = []
        for rid, row in pool:
            prompt, target, user = renderer.training_pair(row)
            rendered.append({"prompt": prompt, "target": target, "user_message": user, "row_id": rid, "content": renderer.content(row),
                             "__line": row["__line"], "__source": row["__source"]})
        rendered = _drop_overlong(rendered, tokenizer, max_total, spec.data.bad_rows, task, data)
        setattr(data, split, rendered)
        if role == "replay":
            break

    if role in ("target", "held_out"):
        pool = sorted(assigned["test"], key=lambda x: x[0])  # hash order = a deterministic random sample
        cap = task.max_items or spec.evaluation.max_items
        data.eval_items = [renderer.eval_item(row, rid[:12]) for rid, row in pool[:cap]]
        if not data.eval_items:
            raise DataError(f"task {task.name}: no evaluation items", hint="add rows or raise data.test_fraction")
    if role == "target" and not data.train:
        raise DataError(f"task {task.name}: no training rows after splitting", hint="add rows or lower data.test_fraction")
    return data


def _drop_overlong(rows: list[dict], tokenizer: Any, max_total: int, policy: str, task: TaskSpec, data: TaskData) -> list[dict]:
    """Refuse rows whose prompt + target + EOS exceed the limit: Ludwig would silently cut their target."""
    totals = count_tokens(tokenizer, [r["prompt"] + r["target"] for r in rows])
    kept = []
    for row, n in zip(rows, totals):
        row["tokens"] = n + 1
        if n + 1 > max_total:
            if policy == "skip":
                data.skipped_rows += 1
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

    return prepare_data(loaded, load_tokenizer(base_path), context_length(base_path))


def load_tokenizer(model_path: str) -> Any:
    """The base model's tokenizer (prompts are rendered and counted with it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def prepare_data(loaded: LoadedSpec, tokenizer: Any, context_length: int) -> PreparedData:
    """Turn a validated spec into training rows and evaluation items, or raise DataError.

    Args:
        loaded: The validated spec and its location.
        tokenizer: The base model's tokenizer.
        context_length: The base model's context; rows longer than this (or the spec's cap) are bad rows.
    """
    spec = loaded.spec
    max_total = min(spec.training.max_sequence_length or context_length, context_length)
    tasks: dict[str, TaskData] = {}
    for task in spec.tasks:
        tasks[task.name] = _prepare_task(loaded, task, "target", tokenizer, max_total)
    for task in spec.evaluation.held_out:
        tasks[task.name] = _prepare_task(loaded, task, "held_out", tokenizer, max_total)
    if spec.data.replay:
        tasks[spec.data.replay.task.name] = _prepare_task(loaded, spec.data.replay.task, "replay", tokenizer, max_total)

    rng = random.Random(spec.training.seed)
    targets = [t for t in tasks.values() if t.role == "target"]
    counts = mixture_counts({t.task.name: len(t.train) for t in targets}, {t.task.name: t.task.weight for t in targets},
                            spec.data.mixing.strategy, spec.data.mixing.temperature, spec.data.mixing.cap)
    train_rows: list[dict] = []
    for t in targets:
        train_rows += [r | {"task": t.task.name, "split": "train"} for r in take_rows(t.train, counts[t.task.name], rng)]
        train_rows += [r | {"task": t.task.name, "split": "validation"} for r in t.validation]
    if spec.data.replay:
        replay = tasks[spec.data.replay.task.name]
        n_target = sum(counts.values())
        n_replay = max(1, round(n_target * spec.data.replay.share / (1 - spec.data.replay.share)))
        train_rows += [r | {"task": replay.task.name, "split": "train"} for r in take_rows(replay.train, n_replay, rng)]
    rng.shuffle(train_rows)

    leakage = check_leakage(spec, tasks, train_rows)
    mixture = mixture_report(train_rows)
    lengths = _lengths(tokenizer, train_rows, tasks, spec)
    few_shot = {t.task.name: [{"user": r["user_message"], "target": r["target"]} for r in t.train[: spec.evaluation.few_shot]]
                for t in targets} if spec.evaluation.few_shot else {}
    input_hashes, fingerprint = data_fingerprint(loaded)
    return PreparedData(tasks=tasks, train_rows=train_rows, mixture=mixture, leakage=leakage, lengths=lengths,
                        fingerprint=fingerprint, input_hashes=input_hashes, few_shot=few_shot)


def mixture_report(train_rows: list[dict]) -> dict[str, dict]:
    train = [r for r in train_rows if r["split"] == "train"]
    total_rows, total_tokens = len(train), sum(r["tokens"] for r in train)
    report: dict[str, dict] = {}
    for r in train:
        entry = report.setdefault(r["task"], {"rows": 0, "tokens": 0})
        entry["rows"] += 1
        entry["tokens"] += r["tokens"]
    for entry in report.values():
        entry["row_share"] = round(entry["rows"] / total_rows, 4)
        entry["token_share"] = round(entry["tokens"] / total_tokens, 4)
    return report


def _lengths(tokenizer: Any, train_rows: list[dict], tasks: dict[str, TaskData], spec: PipelineSpec) -> dict[str, int]:
    """Measured token lengths, from which the compiler sets Ludwig's sequence limits.

    The prompt limit also covers evaluation prompts: Ludwig would otherwise cut a longer prompt's end
    (its assistant header) at predict time.
    """
    prompts = [r["prompt"] for r in train_rows] + [i.prompt for t in tasks.values() for i in t.eval_items if i.prompt]
    targets = [r["target"] for r in train_rows]
    p, tgt = count_tokens(tokenizer, prompts), count_tokens(tokenizer, targets)
    return {
        "max_prompt_tokens": max(p),
        "max_target_tokens": max(tgt) + 1,  # + the EOS Ludwig appends
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
    for task in loaded.spec.all_tasks():
        src = task.source
        if src.hub:
            hashes[f"{task.name}:hub:{src.hub}"] = "unversioned"
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
