"""Pipeline specs: Pydantic models, YAML loading with line numbers, `extends:` and `--set`.

A spec is the user's whole interface, so every field is typed, every section forbids unknown keys,
and every error names the file, line and field. Nothing here imports torch or Ludwig:
`ftpipe validate` must stay instant.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ftpipe.errors import SpecError

TaskKind = Literal[
    "exact_match", "contains", "classification", "rouge_l", "numeric", "code", "multiple_choice", "perplexity"
]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# Tasks and data
# --------------------------------------------------------------------------------------------


class SourceSpec(Section):
    """Where a task's rows come from."""

    path: str | None = Field(None, description="File or folder, relative to the spec file.")
    hub: str | None = Field(None, description="Hugging Face hub dataset name (needs network or a hub cache).")
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "text", "hf_disk"] = Field(
        "auto", description="Reader to use; auto picks by file extension (a folder is a saved `datasets` dataset)."
    )
    split: str | None = Field(None, description="Split to read from a hub or saved `datasets` dataset.")
    train: str | None = Field(None, description="Explicit training split file (instead of hashing rows into splits).")
    validation: str | None = Field(None, description="Explicit validation split file.")
    test: str | None = Field(None, description="Explicit test split file.")
    read_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments for the pandas reader (e.g. sep, names, header).")

    @model_validator(mode="after")
    def _one_origin(self) -> SourceSpec:
        origins = [self.path is not None, self.hub is not None, self.train is not None]
        if sum(origins) != 1:
            raise ValueError("give exactly one of path, hub, or explicit split files (train/validation/test)")
        if self.train is None and (self.validation or self.test):
            raise ValueError("validation/test files need a train file too")
        return self


class TaskSpec(Section):
    """One task: a data source, how rows become prompts and targets, and how outputs are scored."""

    name: str = Field(..., pattern=NAME_PATTERN, description="Task name, used in reports and file names.")
    source: SourceSpec = Field(..., description="Where the rows come from (a string is a file path).")
    kind: TaskKind = Field("exact_match", description="How outputs are scored; also picks the metric.")
    fields: dict[str, str] = Field(
        default_factory=dict, description="Template name -> source column, for columns named differently."
    )
    prompt: str = Field(
        "{{ text }}", description="Jinja template of the user message; names must be columns or mapped fields."
    )
    target: str | None = Field(
        None, description="Jinja template of the expected answer (not used by multiple_choice and perplexity)."
    )
    chat_template: bool = Field(True, description="Wrap the prompt in the base model's own chat template.")
    system_prompt: str | None = Field(None, description="System message for the chat template (model default if unset).")
    labels: list[str] | None = Field(None, description="Label set of a classification task.")
    choices: str | list[str] | None = Field(
        None, description="Multiple choice: the field holding the list of options, or a list of fields, one option each.")
    answer: str | None = Field(
        None, description="Multiple choice: field with the correct option index; contains: field with accepted answers."
    )
    tests: str | None = Field(None, description="Code: Jinja template of the test code run against the generation.")
    optional_fields: list[str] = Field(default_factory=list, description="Fields allowed to be empty (others must hold text).")
    weight: float = Field(1.0, gt=0, description="Mixing weight among training tasks.")
    max_items: int | None = Field(None, ge=1, description="Cap on evaluated items (deterministic sample).")
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="Generation length for this task (default: generation.max_new_tokens).")
    max_train_rows: int | None = Field(None, ge=1, description="Cap on training rows taken from this task.")
    prompt_words: int = Field(8, ge=1, description="Domain adaptation: words of each passage given as the prompt.")

    @model_validator(mode="before")
    @classmethod
    def _source_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("source"), str):
            data = {**data, "source": {"path": data["source"]}}
        return data

    @model_validator(mode="after")
    def _kind_needs(self) -> TaskSpec:
        needs = {
            "classification": ["labels", "target"],
            "multiple_choice": ["choices", "answer"],
            "code": ["tests"],
            "exact_match": ["target"],
            "rouge_l": ["target"],
            "numeric": ["target"],
        }
        missing = [k for k in needs.get(self.kind, []) if getattr(self, k) is None]
        if self.kind == "contains" and self.target is None and self.answer is None:
            missing.append("target or answer")
        if missing:
            raise ValueError(f"a {self.kind} task needs: {', '.join(missing)}")
        return self

    def template_names(self) -> set[str]:
        """Names the templates refer to (checked against the source's columns)."""
        from ftpipe.templates import template_variables  # jinja2 is light; keeps this module's import small

        names: set[str] = set()
        for text in (self.prompt, self.target, self.tests):
            if text:
                names |= template_variables(text)
        names |= {n for n in (self.answer,) if n}
        names |= set([self.choices] if isinstance(self.choices, str) else self.choices or [])
        return names

    def choices_of(self, row: dict) -> list[str]:
        """The options of a multiple-choice row."""
        if isinstance(self.choices, list):
            return [str(row[name]) for name in self.choices]
        value = row[self.choices]
        if isinstance(value, str):
            value = json.loads(value)  # CSV cells hold lists as JSON text
        return [str(c) for c in value]


class MixingSpec(Section):
    """How several training tasks are mixed into one training set."""

    strategy: Literal["proportional", "temperature", "capped"] = Field(
        "proportional", description="proportional: all rows x weight; temperature: sizes^(1/T); capped: at most `cap` rows per task."
    )
    temperature: float = Field(2.0, ge=1.0, description="Temperature for the temperature strategy (1 = proportional).")
    cap: int | None = Field(None, ge=1, description="Rows per task for the capped strategy.")

    @model_validator(mode="after")
    def _cap_given(self) -> MixingSpec:
        if self.strategy == "capped" and self.cap is None:
            raise ValueError("the capped strategy needs cap")
        return self


class ReplaySpec(Section):
    """General instruction data mixed into training, the standard remedy for forgetting."""

    task: TaskSpec = Field(..., description="A task whose rows are replayed (trained on, not evaluated).")
    share: float = Field(0.1, gt=0, lt=1, description="Share of the final training rows taken from replay data.")


class LeakageSpec(Section):
    """The check that nothing evaluated was also trained on."""

    action: Literal["fail", "drop"] = Field("fail", description="fail: stop and show leaks; drop: remove leaked items from evaluation.")
    ngram: int = Field(8, ge=3, description="Word n-gram size for near-duplicate detection.")
    near_duplicate_threshold: float = Field(
        0.5, gt=0, le=1, description="Share of an evaluated item's n-grams found in one training row that makes it a near-duplicate."
    )


class DataSpec(Section):
    """Splitting, mixing and checking of the training data."""

    validation_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share of each target task's rows for validation.")
    test_fraction: float = Field(0.2, gt=0, lt=0.9, description="Share of each target task's rows held out for testing.")
    split_seed: int = Field(0, description="Salt of the row hash that assigns splits (stable when rows are appended).")
    mixing: MixingSpec = Field(default_factory=MixingSpec)
    replay: ReplaySpec | None = None
    leakage: LeakageSpec = Field(default_factory=LeakageSpec)
    bad_rows: Literal["fail", "skip"] = Field("fail", description="Rows with missing, empty or over-long fields: fail or skip and count.")


# --------------------------------------------------------------------------------------------
# Adapters and training
# --------------------------------------------------------------------------------------------


class FullAdapter(Section):
    """Full fine-tuning: every weight trains."""

    type: Literal["full"]


class LoraAdapter(Section):
    """LoRA (optionally DoRA or rsLoRA) on full-precision weights."""

    type: Literal["lora"]
    r: int = Field(8, ge=1, le=1024, description="Rank of the update matrices.")
    alpha: float = Field(16, gt=0, description="Scaling numerator (update scaled by alpha/r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | None = Field(None, description="Module names to adapt (PEFT default for the architecture if unset).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r).")


class QloraAdapter(LoraAdapter):
    """LoRA on bitsandbytes-quantized base weights (QLoRA)."""

    type: Literal["qlora"]  # type: ignore[assignment]
    bits: Literal[4, 8] = Field(4, description="Bits of the quantized base weights.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too.")
    compute_dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="Dtype of matmuls on dequantized weights.")


class Ia3Adapter(Section):
    """IA3: learned rescaling vectors, far fewer parameters than LoRA."""

    type: Literal["ia3"]
    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None


class LohaAdapter(Section):
    """LoHa / LoKr: Hadamard / Kronecker-product low-rank updates."""

    type: Literal["loha", "lokr"]
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(8, gt=0)
    target_modules: list[str] | None = None


class AdaloraAdapter(Section):
    """AdaLoRA: LoRA whose rank budget is reallocated during training."""

    type: Literal["adalora"]
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = None


AdapterSpec = Annotated[
    Union[FullAdapter, LoraAdapter, QloraAdapter, Ia3Adapter, LohaAdapter, AdaloraAdapter], Field(discriminator="type")
]


class TrainingSpec(Section):
    """Trainer settings; every value is passed to Ludwig explicitly (its defaults are ECD's, not an LLM's)."""

    epochs: int = Field(3, ge=1, le=1000, description="Passes over the training rows.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Peak learning rate.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("linear", description="Decay after warmup.")
    warmup_fraction: float = Field(0.0, ge=0, lt=1, description="Share of steps spent warming up.")
    batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    weight_decay: float = Field(0.0, ge=0, lt=1)
    max_sequence_length: int | None = Field(
        None, ge=16, description="Cap on prompt+target tokens; rows over it are bad rows. Unset: the model's context."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after this many checkpoints without validation improvement.")
    checkpoints_per_epoch: int = Field(1, ge=1, le=100, description="Checkpoints (and validation passes) per epoch.")
    evaluate_during_training: bool = Field(True, description="Validation loss at each checkpoint (off: faster, no best-checkpoint choice).")
    seed: int = Field(42)
    precision: Literal["auto", "fp32", "fp16"] = Field(
        "auto", description="auto: fp16 mixed precision on CUDA, fp32 on CPU. Ludwig 0.17 has no bf16 training option."
    )


class GenerationSpec(Section):
    """Decoding used for evaluation: identical for the base and the tuned model."""

    max_new_tokens: int = Field(32, ge=1, le=4096)
    do_sample: Literal[False] = Field(False, description="Greedy decoding only: evaluation must be reproducible.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a generation early.")


class EvaluationSpec(Section):
    """What the evaluator scores besides the target tasks' test splits."""

    held_out: list[TaskSpec] = Field(default_factory=list, description="Tasks not trained on: where forgetting shows.")
    max_items: int = Field(200, ge=1, description="Default cap on evaluated items per task.")
    few_shot: int = Field(0, ge=0, le=16, description="k for the few-shot baseline of the base model on target tasks (0 = off).")
    batch_size: int = Field(16, ge=1, le=1024, description="Generation batch size.")
    bootstrap_resamples: int = Field(10_000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class GatesSpec(Section):
    """Quality gates a tuned model must pass to be promoted."""

    min_gain: float | None = Field(None, description="Minimum absolute gain on every target task's metric.")
    max_forgetting: float | None = Field(None, ge=0, description="Maximum forgetting per held-out task.")
    forgetting_mode: Literal["relative", "absolute"] = Field("relative", description="relative: (base-tuned)/base; absolute: base-tuned.")
    require_ci: bool = Field(False, description="Judge gates on the confidence bound, so noise neither passes nor blocks a model.")
    no_regression_vs_promoted: bool = Field(False, description="Fail if significantly worse than the promoted model on any task.")
    on_failure_command: str | None = Field(
        None, description="Shell command run when a gate fails (env: FTPIPE_PIPELINE, FTPIPE_RUN_DIR, FTPIPE_FAILED_GATES).")


class DistributedSpec(Section):
    """Multi-process training: PyTorch distributed through Accelerate, launched by torchrun (docs/distributed.md).

    Issue 9. Checks here need no environment; "fsdp/deepspeed need CUDA" and the like are in
    train.preflight(), and the combinations that depend on the adapter in PipelineSpec below.
    """

    strategy: Literal["none", "ddp", "fsdp", "deepspeed"] = Field(
        "none", description="none: one process; ddp: data parallel, CPU (gloo) or CUDA; fsdp / deepspeed: sharded, CUDA only.")
    processes_per_node: int = Field(1, ge=1, le=256, description="Processes on each machine: one per GPU on CUDA.")
    nodes: int = Field(1, ge=1, le=1024, description="Machines; node 0 runs `ftpipe run`, the others `python -m ftpipe.distributed join`.")
    master_addr: str | None = Field(None, description="Address of node 0 that every node can reach (needed when nodes > 1).")
    master_port: int = Field(29500, ge=1, le=65535, description="Port on node 0 for the rendezvous (nodes > 1; one node picks a free port).")
    zero_stage: Literal[1, 2, 3] | None = Field(None, description="DeepSpeed ZeRO stage (deepspeed only; default 2).")
    offload: bool = Field(False, description="Offload to CPU memory: optimizer state (deepspeed; parameters too at ZeRO-3), parameters (fsdp).")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto: as training.precision; no / fp16 / bf16: Accelerate's autocast (bf16 only here; fp16 needs CUDA).")
    learning_rate_scaling: Literal["constant", "linear", "sqrt"] = Field(
        "constant", description="Learning rate x 1, x processes or x sqrt(processes). Ludwig's own default is linear; "
                                "the global batch is batch_size x processes x nodes x gradient_accumulation_steps.")

    @model_validator(mode="after")
    def _consistent(self) -> DistributedSpec:
        problems = []
        if self.strategy == "none":
            if self.processes_per_node > 1 or self.nodes > 1:
                problems.append("processes_per_node or nodes > 1 need a strategy (ddp, fsdp or deepspeed)")
            if self.mixed_precision != "auto":
                problems.append("mixed_precision applies to distributed training only; one process uses training.precision")
        if self.zero_stage is not None and self.strategy != "deepspeed":
            problems.append(f"zero_stage is a DeepSpeed setting; strategy is {self.strategy}")
        if self.offload and self.strategy not in ("fsdp", "deepspeed"):
            problems.append("offload needs strategy fsdp or deepspeed")
        if self.nodes > 1 and not self.master_addr:
            problems.append("nodes > 1 needs master_addr (node 0's address, reachable from every node)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def world_size(self) -> int:
        """Number of training processes in all."""
        return self.processes_per_node * self.nodes if self.strategy != "none" else 1


class ComputeSpec(Section):
    """Where training and evaluation run."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)


class PipelineSpec(Section):
    """A whole fine-tuning job: what to tune, on what, how, and how to judge the result."""

    name: str = Field(..., pattern=NAME_PATTERN, description="Pipeline name; runs go to runs/<name>/.")
    description: str | None = Field(None, description="Free text shown in reports.")
    base_model: str = Field(..., description="Store name (ftpipe models list), a local HF folder, or a hub id.")
    method: Literal["instruction", "multitask", "domain_adaptation"] = Field(
        "instruction", description="instruction: one task; multitask: several, mixed; domain_adaptation: raw text.")
    tasks: list[TaskSpec] = Field(..., min_length=1, description="Tasks to tune on (their test splits are evaluated).")
    adapter: AdapterSpec = Field(default_factory=lambda: LoraAdapter(type="lora"))
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)

    @model_validator(mode="after")
    def _method_fits_tasks(self) -> PipelineSpec:
        names = [t.name for t in self.all_tasks()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique: {', '.join(dupes)}")
        if self.method == "instruction" and len(self.tasks) != 1:
            raise ValueError("method instruction tunes one task; use method multitask for several")
        if self.method == "multitask" and len(self.tasks) < 2:
            raise ValueError("method multitask needs at least two tasks")
        is_text = [t.kind == "perplexity" for t in self.tasks]
        if self.method == "domain_adaptation" and not all(is_text):
            raise ValueError("domain_adaptation tasks must have kind perplexity (raw text)")
        if self.method != "domain_adaptation" and any(is_text):
            raise ValueError("perplexity tasks train only with method domain_adaptation")
        return self

    @model_validator(mode="after")
    def _distributed_fits_adapter(self) -> PipelineSpec:
        """Distributed settings that cannot work with this adapter or precision (issue 9; no environment needed)."""
        d, problems = self.compute.distributed, []
        if isinstance(self.adapter, QloraAdapter) and d.strategy == "fsdp":
            problems.append("adapter qlora cannot be sharded with fsdp: Ludwig 0.17 loads bitsandbytes weights with "
                            "device_map auto and no quant storage dtype; use strategy ddp")
        if isinstance(self.adapter, QloraAdapter) and d.strategy == "deepspeed" and (d.zero_stage or 2) == 3:
            problems.append("adapter qlora cannot be sharded with DeepSpeed ZeRO-3 (4-bit weights are not partitionable); "
                            "use zero_stage 1 or 2, or strategy ddp")
        wanted = {"fp32": "no", "fp16": "fp16"}.get(self.training.precision)
        if d.mixed_precision not in ("auto", wanted) and wanted is not None:
            problems.append(f"mixed_precision {d.mixed_precision} contradicts training.precision "
                            f"{self.training.precision}; set one of them to auto")
        if problems:
            raise ValueError("compute.distributed: " + "; ".join(problems))
        return self

    def all_tasks(self) -> list[TaskSpec]:
        """Target tasks, held-out tasks and the replay task."""
        replay = [self.data.replay.task] if self.data.replay else []
        return [*self.tasks, *self.evaluation.held_out, *replay]


# --------------------------------------------------------------------------------------------
# Loading: YAML with locations, extends, overrides, errors with file:line:col
# --------------------------------------------------------------------------------------------

Location = tuple[str, int, int]  # file, line, column (1-based)


@dataclass
class LoadedSpec:
    """A validated spec with where it came from."""

    spec: PipelineSpec
    path: Path
    raw: dict[str, Any]
    base_dir: Path
    files: list[Path] = field(default_factory=list)

    def resolve(self, relative: str) -> Path:
        """A path from the spec, relative to the spec file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def spec_hash(self) -> str:
        """sha256 of the resolved spec (after extends and overrides), stable across key order."""
        blob = json.dumps(self.spec.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _yaml():
    from ruamel.yaml import YAML

    return YAML(typ="rt")


def _read_yaml(path: Path) -> Any:
    from ruamel.yaml.error import MarkedYAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file", hint="check the path") from None
    try:
        return _yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SpecError(f"{where} invalid YAML: {e.problem}", hint="fix the YAML syntax") from None


def _collect_locations(node: Any, path: Path, prefix: tuple, out: dict[tuple, Location]) -> None:
    """Map each key path of a ruamel document to the file, line and column where it is written."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        for key in node:
            line, col = node.lc.key(key)
            out[prefix + (key,)] = (str(path), line + 1, col + 1)
            _collect_locations(node[key], path, prefix + (key,), out)
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            out[prefix + (i,)] = (str(path), line + 1, col + 1)
            _collect_locations(item, path, prefix + (i,), out)


def _plain(node: Any) -> Any:
    """ruamel containers to plain dicts and lists."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _deep_merge(base: dict, child: dict) -> dict:
    """Child keys override base keys; nested mappings merge, lists are replaced whole."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _rebase_paths(doc: dict, from_dir: Path, to_dir: Path) -> dict:
    """Paths in an extended spec are relative to *its* folder: rewrite them for the child's folder."""
    import os

    def fix(p: Any) -> Any:
        if not isinstance(p, str) or Path(p).is_absolute():
            return p
        return os.path.relpath(from_dir / p, to_dir)

    def walk(node: Any, key: str | None = None) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "source" and isinstance(v, str):
                    out[k] = fix(v)
                elif key == "source" and k in ("path", "train", "validation", "test"):
                    out[k] = fix(v)
                else:
                    out[k] = walk(v, k)
            return out
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        return node

    doc = walk(doc)
    if isinstance(doc.get("base_model"), str) and (from_dir / doc["base_model"]).exists():
        doc["base_model"] = fix(doc["base_model"])
    return doc


def _load_with_extends(path: Path, seen: tuple[Path, ...], locations: dict[tuple, Location]) -> dict:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise SpecError(f"{path}: extends loops back on itself ({chain})", hint="remove the cycle")
    doc = _read_yaml(path)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SpecError(f"{path}:1:1 a spec must be a YAML mapping of fields", hint="see pipelines/ for examples")
    own: dict[tuple, Location] = {}
    _collect_locations(doc, path, (), own)
    plain = _plain(doc)
    parent_ref = plain.pop("extends", None)
    if parent_ref is None:
        locations.update(own)
        return plain
    parent_path = (path.parent / str(parent_ref)).resolve()
    if not parent_path.exists():
        f, line, col = own[("extends",)]
        raise SpecError(f"{f}:{line}:{col} extends: no such file {parent_ref}", hint="give a path relative to this spec")
    parent = _load_with_extends(parent_path, (*seen, path), locations)
    parent = _rebase_paths(parent, parent_path.parent, path.parent)
    locations.update(own)  # the child's lines win where it overrides
    return _deep_merge(parent, plain)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one `--set path.to.key=value`; the value is read as a YAML scalar or flow collection."""
    from ruamel.yaml import YAML

    if "=" not in text:
        raise SpecError(f"--set {text}: expected path.to.key=value", hint="for example --set training.epochs=2")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError(f"--set {text}: empty key part", hint="for example --set training.epochs=2")
    return parts, _plain(YAML(typ="safe").load(value)) if value.strip() else ""


def _apply_override(doc: dict, parts: list[str], value: Any) -> None:
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) and part.isdigit() else part
        if isinstance(node, list):
            if not isinstance(key, int) or key >= len(node):
                raise SpecError(f"--set {'.'.join(parts)}: no item {part} in {'.'.join(parts[:i]) or 'spec'}")
            node = node[key]
        else:
            node = node.setdefault(key, {})
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError(f"--set {'.'.join(parts)}: cannot set a field inside a non-mapping value")


def _fields_of(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at the parent of `loc`, for did-you-mean suggestions."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return []
        current = _model_in(info.annotation)
    return list(getattr(current, "model_fields", {}).keys())


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside an annotation like `list[TaskSpec] | None`."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _locate(loc: tuple, locations: dict[tuple, Location], spec_path: Path, overrides: dict[tuple, str]) -> str:
    for n in range(len(loc), -1, -1):
        key = tuple(loc[:n])
        if key in overrides:
            return f"--set {overrides[key]}"
        if key in locations:
            f, line, col = locations[key]
            return f"{_display(Path(f))}:{line}:{col}"
    return f"{_display(spec_path)}:1:1"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-branch tags (e.g. 'lora', 'function-after[...]') from an error location."""
    known_tags = {"full", "lora", "qlora", "ia3", "loha", "lokr", "adalora", "str"}
    return tuple(p for p in loc if not (isinstance(p, str) and (p in known_tags or "[" in p)))


def _format_error(err: dict, locations: dict, spec_path: Path, overrides: dict, raw: dict) -> str:
    loc = _clean_loc(tuple(err["loc"]))
    dotted = ".".join(str(p) for p in loc) or "spec"
    where = _locate(loc, locations, spec_path, overrides)
    kind = err["type"]
    if kind == "extra_forbidden":
        options = _fields_of(PipelineSpec, loc)
        close = difflib.get_close_matches(str(loc[-1]), options, n=1)
        hint = f"did you mean {close[0]}?" if close else f"valid fields: {', '.join(options)}"
        return f"{where} {dotted}: unknown field ({hint})"
    if kind == "missing":
        return f"{where} {dotted}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        msg = "unknown adapter type; choose one of full, lora, qlora, ia3, loha, lokr, adalora"
    return f"{where} {dotted}: {msg}"


def load_spec(path: str | Path, overrides: list[str] | None = None, check_files: bool = True) -> LoadedSpec:
    """Load, merge and validate a spec file; raise SpecError listing every problem, one line each.

    Args:
        path: The spec YAML.
        overrides: `path.to.key=value` strings applied after `extends`.
        check_files: Also check that data files exist, templates name real columns and the base model resolves.
    """
    spec_path = Path(path)
    locations: dict[tuple, Location] = {}
    raw = _load_with_extends(spec_path, (), locations)
    override_locs: dict[tuple, str] = {}
    for text in overrides or []:
        parts, value = parse_override(text)
        _apply_override(raw, parts, value)
        override_locs[tuple(int(p) if p.isdigit() else p for p in parts)] = text
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as e:
        lines = [_format_error(err, locations, spec_path, override_locs, raw) for err in e.errors()]
        raise SpecError("\n".join(dict.fromkeys(lines)), hint=None) from None
    loaded = LoadedSpec(spec=spec, path=spec_path, raw=raw, base_dir=spec_path.resolve().parent)
    if check_files:
        problems = check_references(loaded, locations, override_locs)
        if problems:
            raise SpecError("\n".join(problems))
    return loaded


def check_references(loaded: LoadedSpec, locations: dict, overrides: dict) -> list[str]:
    """Checks that need the file system but not torch: files exist, templates name real columns, model resolves."""
    from ftpipe.sources import peek_columns
    from ftpipe.store import KNOWN_MODELS

    spec, problems = loaded.spec, []

    def where(loc: tuple) -> str:
        return _locate(loc, locations, loaded.path, overrides)

    problems += _check_base_model(spec.base_model, loaded, where(("base_model",)), KNOWN_MODELS)
    task_locs = [("tasks", i) for i in range(len(spec.tasks))]
    task_locs += [("evaluation", "held_out", i) for i in range(len(spec.evaluation.held_out))]
    task_locs += [("data", "replay", "task")] if spec.data.replay else []
    for task, tloc in zip(spec.all_tasks(), task_locs):
        src = task.source
        for key in ("path", "train", "validation", "test"):
            value = getattr(src, key)
            if value is not None and not loaded.resolve(value).exists():
                problems.append(f"{where(tloc + ('source', key))} {_dotted(tloc)}.source.{key}: no such file {value} "
                                f"(paths are relative to {_display(loaded.base_dir)})")
        first = src.path or src.train
        if first is None or not loaded.resolve(first).exists():
            continue
        columns = None if src.read_options else peek_columns(loaded.resolve(first), src.format)
        if columns is None:  # format whose columns are only known after a full read
            continue
        available = set(columns) | set(task.fields)
        for name in sorted(task.template_names() - available):
            close = difflib.get_close_matches(name, sorted(available), n=1)
            hint = f"did you mean {close[0]}?" if close else f"columns: {', '.join(sorted(columns))}"
            problems.append(f"{where(tloc + ('prompt',))} {_dotted(tloc)}: template names missing field "
                            f"'{name}' ({hint}; or map it under fields:)")
        for name, column in task.fields.items():
            if column not in columns:
                problems.append(f"{where(tloc + ('fields', name))} {_dotted(tloc)}.fields.{name}: no column "
                                f"'{column}' in {first} (columns: {', '.join(sorted(columns))})")
    return problems


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _check_base_model(ref: str, loaded: LoadedSpec, where: str, known: dict) -> list[str]:
    if ref in known:
        return []
    candidate = loaded.resolve(ref)
    if candidate.is_dir():
        if (candidate / "config.json").exists():
            return []
        return [f"{where} base_model: {ref} has no config.json (not a Hugging Face model folder)"]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", ref) and not ref.startswith("."):
        return []  # a hub id: resolved from the hub cache at run time
    close = difflib.get_close_matches(ref, list(known), n=1)
    hint = f"did you mean {close[0]}?" if close else f"store models: {', '.join(known)}"
    return [f"{where} base_model: unknown model '{ref}' ({hint}; or give a local folder or a hub id org/name)"]


def spec_json_schema() -> dict:
    """JSON Schema of the spec, for editors' YAML autocompletion."""
    schema = PipelineSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ftpipe pipeline spec"
    return schema


def spec_reference_markdown() -> str:
    """Every spec field with its type, default and description, one line each (docs/SPEC.md)."""
    import typing

    lines = ["# Pipeline spec reference", "", "Generated by `ftpipe schema --markdown`. Paths are relative to the spec file.", ""]

    def type_name(annotation: Any) -> str:
        text = str(annotation).replace("typing.", "").replace("ftpipe.spec.", "")
        return re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).split(".")[-1], text).replace(" | ", " or ")

    def walk(model: type[BaseModel], prefix: str, seen: set) -> None:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            default = "required" if info.is_required() else repr(info.get_default(call_default_factory=False)) \
                if info.default_factory is None else "(section defaults)"
            lines.append(f"| `{path}` | {type_name(info.annotation)} | {default} | {info.description or ''} |")
            nested = [a for a in (typing.get_args(info.annotation) or (info.annotation,))]
            for arg in nested:
                for inner in (typing.get_args(arg) or (arg,)):
                    if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in seen:
                        walk(inner, f"{path}{'[]' if typing.get_origin(arg) is list else ''}.", seen | {inner})

    for title, model in [("Pipeline", PipelineSpec), ("Adapter: lora", LoraAdapter), ("Adapter: qlora", QloraAdapter),
                         ("Adapter: ia3", Ia3Adapter), ("Adapter: loha / lokr", LohaAdapter), ("Adapter: adalora", AdaloraAdapter)]:
        lines += [f"## {title}", "", "| field | type | default | description |", "|---|---|---|---|"]
        walk(model, "adapter." if title.startswith("Adapter") else "", {model})
        lines.append("")
    return "\n".join(lines)
