"""Data: a spec's tasks become the exact rows Ludwig trains on and the exact items the evaluator scores.

Stages, in order: read each source; map and check fields; assign splits by a stable row hash;
render prompts (chat template included) and targets; measure token lengths and refuse (or skip)
bad rows; mix tasks; add replay data; check leakage between everything that trains and everything
that is evaluated; fingerprint all inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.errors import DataError
from ftpipe.sources import detect_format, read_source
from ftpipe.spec import LoadedSpec, PipelineSpec, TaskSpec
from ftpipe.templates import chat_prompt, render, template_variables

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}  # Ludwig's fixed split column values


@dataclass
class EvalItem:
    """One scored item, identical for the base and the tuned model."""

    task: str
    item_id: str
    prompt: str  # fully rendered model input (chat template applied where the task asks)
    user_message: str  # the rendered user message, shown in reports
    content: str = ""  # the values the prompt template reads: what the leakage check compares
    reference: str | None = None
    answers: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    answer_index: int | None = None
    tests: str | None = None
    text: str | None = None  # raw passage (perplexity)


@dataclass
class TaskData:
    """One task after splitting and rendering."""

    task: TaskSpec
    role: str  # target | held_out | replay
    train: list[dict] = field(default_factory=list)  # {prompt, target, user_message, row_id}
    validation: list[dict] = field(default_factory=list)
    eval_items: list[EvalItem] = field(default_factory=list)
    skipped_rows: int = 0


@dataclass
class PreparedData:
    """Everything downstream stages need from the data layer."""

    tasks: dict[str, TaskData]
    train_rows: list[dict]  # mixed rows: prompt, target, split, task
    mixture: dict[str, dict]  # task -> rows, tokens, share
    leakage: dict[str, Any]
    lengths: dict[str, int]  # max_prompt_tokens, max_target_tokens, max_total_tokens
    fingerprint: str
    input_hashes: dict[str, str]
    few_shot: dict[str, list[dict]] = field(default_factory=dict)

    def eval_tasks(self) -> list[TaskData]:
        """Target and held-out tasks, in spec order."""
        return [t for t in self.tasks.values() if t.role in ("target", "held_out")]

    def summary(self) -> dict:
        """A JSON-able summary for the manifest and `ftpipe data`."""
        return {
            "fingerprint": self.fingerprint,
            "lengths": self.lengths,
            "mixture": self.mixture,
            "leakage": self.leakage,
            "eval_items": {name: len(t.eval_items) for name, t in self.tasks.items() if t.eval_items},
            "skipped_rows": {name: t.skipped_rows for name, t in self.tasks.items() if t.skipped_rows},
            "inputs": self.input_hashes,
        }


# --------------------------------------------------------------------------------------------
# Reading, hashing, splitting
# --------------------------------------------------------------------------------------------


def row_hash(row: dict, salt: str) -> str:
    """A stable id of a row's content: appending rows to a source never changes old rows' ids."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(f"{salt}\x00{blob}".encode()).hexdigest()


def split_of(row_id: str, validation_fraction: float, test_fraction: float) -> str:
    """Assign a split from the hash alone, so a row's split depends on nothing but its content."""
    u = int(row_id[:15], 16) / 16**15
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def file_sha256(path: Path) -> str:
    """sha256 of a file or of every file in a folder (for saved `datasets` folders)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


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


def _bad_value(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return False


# --------------------------------------------------------------------------------------------
# Rendering rows and items
# --------------------------------------------------------------------------------------------


class _Renderer:
    """Renders a task's rows; knows the tokenizer for chat templates and token counts."""

    def __init__(self, tokenizer: Any, task: TaskSpec):
        self.tokenizer = tokenizer
        self.task = task

    def wrap(self, user_message: str) -> str:
        if self.task.kind == "perplexity" or not self.task.chat_template:
            return user_message
        return chat_prompt(self.tokenizer, user_message, self.task.system_prompt)

    def check_fields(self, row: dict) -> str | None:
        """The first missing or empty field a template needs, or None."""
        for name in sorted(self.task.template_names()):
            if name not in row or row[name] is None:
                return name
            if name not in self.task.optional_fields and _bad_value(row[name]):
                return name
        return None

    def content(self, row: dict) -> str:
        """The row's own text that the prompt shows (template boilerplate excluded): what leaks."""
        if self.task.kind == "perplexity":
            return str(row["text"])
        names = sorted(template_variables(self.task.prompt)) or sorted(self.task.template_names())
        return "\n".join(str(row[n]) for n in names if n in row)

    def training_pair(self, row: dict) -> tuple[str, str, str]:
        """(prompt, target, user_message) for training on this row."""
        t = self.task
        if t.kind == "perplexity":
            words = str(row["text"]).split()
            head = " ".join(words[: t.prompt_words])
            return head, " ".join(words[t.prompt_words:]), head
        user = render(t.prompt, row)
        if t.kind == "multiple_choice":
            target = t.choices_of(row)[int(row[t.answer])]
        elif t.target is not None:
            target = render(t.target, row)
        else:
            target = str(_as_list(row[t.answer])[0])
        return self.wrap(user), target, user

    def eval_item(self, row: dict, item_id: str) -> EvalItem:
        t = self.task
        if t.kind == "perplexity":
            text = str(row["text"])
            return EvalItem(task=t.name, item_id=item_id, prompt="", user_message=text, text=text, content=text)
        user = render(t.prompt, row)
        item = EvalItem(task=t.name, item_id=item_id, prompt=self.wrap(user), user_message=user, content=self.content(row))
        if t.kind == "multiple_choice":
            item.choices = t.choices_of(row)
            item.answer_index = int(row[t.answer])
            item.reference = item.choices[item.answer_index]
        else:
            item.reference = render(t.target, row) if t.target else None
            item.answers = [str(a) for a in _as_list(row[t.answer])] if t.answer else ([item.reference] if item.reference else [])
            item.reference = item.reference or (item.answers[0] if item.answers else None)
        if t.tests:
            item.tests = render(t.tests, row)
        return item


def _as_list(value: Any) -> list:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)  # CSV cells hold lists as JSON text
            if isinstance(parsed, list):
                return parsed
        except json.JSONDecodeError:
            pass
        return [value]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


# --------------------------------------------------------------------------------------------
# Per-task preparation
# --------------------------------------------------------------------------------------------


def _prepare_task(loaded: LoadedSpec, task: TaskSpec, role: str, tokenizer: Any, max_total: int) -> TaskData:
    spec = loaded.spec
    renderer = _Renderer(tokenizer, task)
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
    totals = _count_tokens(tokenizer, [r["prompt"] + r["target"] for r in rows])
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
# Mixing, replay, leakage
# --------------------------------------------------------------------------------------------


def mixture_counts(sizes: dict[str, int], weights: dict[str, float], strategy: str, temperature: float = 2.0,
                   cap: int | None = None) -> dict[str, int]:
    """Training rows to take from each task.

    proportional: each task's rows times its weight; temperature: the total is kept and shared in
    proportion to (weight * rows) ** (1 / T), which lifts small tasks; capped: at most `cap` rows
    (times weight) per task.
    """
    if strategy == "proportional":
        return {t: max(1, round(n * weights[t])) for t, n in sizes.items()}
    if strategy == "temperature":
        total = sum(sizes.values())
        mass = {t: (weights[t] * n) ** (1.0 / temperature) for t, n in sizes.items()}
        norm = sum(mass.values())
        return {t: max(1, round(total * m / norm)) for t, m in mass.items()}
    if strategy == "capped":
        assert cap is not None
        return {t: max(1, round(min(n, cap) * weights[t])) for t, n in sizes.items()}
    raise ValueError(f"unknown mixing strategy {strategy}")


def take_rows(rows: list[dict], count: int, rng: random.Random) -> list[dict]:
    """`count` rows: a sample without replacement, or every row repeated and topped up by sampling."""
    if count <= len(rows):
        return rng.sample(rows, count)
    whole, rest = divmod(count, len(rows))
    return rows * whole + rng.sample(rows, rest)


def normalize_for_leakage(text: str) -> str:
    """Case, punctuation and whitespace do not make two texts different."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(text.split())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def find_leaks(train_texts: list[str], eval_texts: list[str], ngram: int = 8, threshold: float = 0.5) -> list[dict]:
    """Evaluated texts that also sit in training: exact (after normalisation) or near-duplicate.

    A near-duplicate shares at least `threshold` of its word n-grams with one single training text
    (texts shorter than n words are compared exactly only).

    Returns:
        One dict per leaked evaluated text: index, kind ('exact' or 'near'), overlap, and the training index.
    """
    norm_train = [normalize_for_leakage(t) for t in train_texts]
    exact = {t: i for i, t in enumerate(norm_train)}
    index: dict[tuple[str, ...], list[int]] = {}
    for i, t in enumerate(norm_train):
        for g in _ngrams(t.split(), ngram):
            index.setdefault(g, []).append(i)
    leaks = []
    for j, text in enumerate(eval_texts):
        norm = normalize_for_leakage(text)
        if norm in exact:
            leaks.append({"index": j, "kind": "exact", "overlap": 1.0, "train_index": exact[norm]})
            continue
        grams = _ngrams(norm.split(), ngram)
        if not grams:
            continue
        hits: dict[int, int] = {}
        for g in grams:
            for i in set(index.get(g, ())):
                hits[i] = hits.get(i, 0) + 1
        if hits:
            best, count = max(hits.items(), key=lambda kv: (kv[1], -kv[0]))
            if count / len(grams) >= threshold:
                leaks.append({"index": j, "kind": "near", "overlap": round(count / len(grams), 3), "train_index": best})
    return leaks


def _check_leakage(spec: PipelineSpec, tasks: dict[str, TaskData], train_rows: list[dict]) -> dict[str, Any]:
    cfg = spec.data.leakage
    train_texts = [r["content"] for r in train_rows]
    report: dict[str, Any] = {"action": cfg.action, "ngram": cfg.ngram, "threshold": cfg.near_duplicate_threshold,
                              "tasks": {}, "examples": []}
    for name, data in tasks.items():
        if not data.eval_items:
            continue
        texts = [i.content for i in data.eval_items]
        leaks = find_leaks(train_texts, texts, cfg.ngram, cfg.near_duplicate_threshold)
        report["tasks"][name] = {"checked": len(texts), "exact": sum(l["kind"] == "exact" for l in leaks),
                                 "near": sum(l["kind"] == "near" for l in leaks), "dropped": 0}
        for leak in leaks[:3]:
            report["examples"].append({"task": name, "kind": leak["kind"], "overlap": leak["overlap"],
                                       "evaluated": texts[leak["index"]][:160],
                                       "trained": train_texts[leak["train_index"]][:160]})
        if leaks and cfg.action == "drop":
            bad = {l["index"] for l in leaks}
            data.eval_items = [item for k, item in enumerate(data.eval_items) if k not in bad]
            report["tasks"][name]["dropped"] = len(bad)
    total = sum(t["exact"] + t["near"] for t in report["tasks"].values())
    report["leaked"] = total
    if total and cfg.action == "fail":
        parts = [f"{n}: {t['exact']} exact, {t['near']} near" for n, t in report["tasks"].items() if t["exact"] + t["near"]]
        example = report["examples"][0]
        raise DataError(f"leakage: evaluated items also in training ({'; '.join(parts)}); e.g. [{example['task']}] "
                        f"{example['evaluated'][:80]!r}", hint="remove them from the sources, or set data.leakage.action: drop")
    return report


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


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

    leakage = _check_leakage(spec, tasks, train_rows)
    mixture = _mixture_report(train_rows)
    lengths = _lengths(tokenizer, train_rows, tasks, spec)
    few_shot = {t.task.name: [{"user": r["user_message"], "target": r["target"]} for r in t.train[: spec.evaluation.few_shot]]
                for t in targets} if spec.evaluation.few_shot else {}
    input_hashes, fingerprint = data_fingerprint(loaded)
    return PreparedData(tasks=tasks, train_rows=train_rows, mixture=mixture, leakage=leakage, lengths=lengths,
                        fingerprint=fingerprint, input_hashes=input_hashes, few_shot=few_shot)


def _mixture_report(train_rows: list[dict]) -> dict[str, dict]:
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
    p, tgt = _count_tokens(tokenizer, prompts), _count_tokens(tokenizer, targets)
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
                hashes[f"{task.name}:{rel}"] = file_sha256(loaded.resolve(rel))
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
