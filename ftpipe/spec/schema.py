"""The Pydantic models of a pipeline spec: every field typed, described, and checked.

A spec is the user's whole interface, so every section forbids unknown keys and every field has a
description (docs/SPEC.md is generated from them). Nothing here touches the file system, torch or
Ludwig: `ftpipe validate` must stay instant.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskKind = Literal[
    "exact_match", "contains", "classification", "rouge_l", "numeric", "code", "multiple_choice", "perplexity", "lm_eval", "preference"
]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Conversation formats (issue 17) -> the field holding a row's list of turns.
CONVERSATION_FORMATS = {"messages": "messages", "sharegpt": "conversations"}
CONVERSATION_KINDS = ("exact_match", "contains", "rouge_l")


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
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "text", "hf_disk", "messages", "sharegpt"] = Field(
        "auto", description="Reader to use; auto picks by file extension (a folder is a saved `datasets` dataset). "
                            "messages (OpenAI: a `messages` list of {role, content}) and sharegpt (a `conversations` "
                            "list of {from, value}) are multi-turn conversations in JSON Lines or JSON files.")
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

    def conversation_field(self) -> str | None:
        """The field holding a row's turns when this is a conversation source, else None."""
        return CONVERSATION_FORMATS.get(self.format)


class LmEvalSpec(Section):
    """A held-out probe scored by lm-evaluation-harness itself (issue 17; optional extra: pip install 'ftpipe[lm-eval]')."""

    task: str = Field(..., description="An lm-evaluation-harness task name, or a task YAML file (relative to the spec) whose "
                                       "data is local; its relative data_files are relative to the YAML's folder.")
    metric: str = Field("acc", pattern=r"^[A-Za-z0-9_]+$",
                        description="The per-item metric of lm-eval's samples that is compared (acc, acc_norm, exact_match, ...).")
    num_fewshot: int = Field(0, ge=0, le=64, description="Few-shot examples lm-eval puts in each prompt (the same for base and tuned).")

    def is_file(self) -> bool:
        """Whether `task` names a task YAML file rather than a registered task."""
        return self.task.endswith((".yaml", ".yml"))


def source_shorthand(data: Any) -> Any:
    """`source: path/to/file` means `source: {path: path/to/file}` (tasks and the self-generated replay pool)."""
    if isinstance(data, dict) and isinstance(data.get("source"), str):
        data = {**data, "source": {"path": data["source"]}}
    return data


class TaskSpec(Section):
    """One task: a data source, how rows become prompts and targets, and how outputs are scored."""

    name: str = Field(..., pattern=NAME_PATTERN, description="Task name, used in reports and file names.")
    source: SourceSpec | None = Field(
        None, description="Where the rows come from (a string is a file path). Every kind needs one except lm_eval.")
    lm_eval: LmEvalSpec | None = Field(None, description="kind lm_eval: the lm-evaluation-harness task that scores this probe.")
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
    chosen: str | None = Field(None, description="Preference: Jinja template of the preferred reply.")
    rejected: str | None = Field(None, description="Preference: Jinja template of the dispreferred reply.")
    length_normalized: bool = Field(
        False, description="Preference: compare the replies' mean log-likelihood per token instead of their sums "
                           "(both are reported; this picks the headline).")
    optional_fields: list[str] = Field(default_factory=list, description="Fields allowed to be empty (others must hold text).")
    id_field: str | None = Field(
        None, description="Column holding a stable row id. Unset: a row's id hashes the values the task reads "
                          "(so appending rows or columns, or rewording a template, never moves a row between splits).")
    weight: float = Field(1.0, gt=0, description="Mixing weight among training tasks.")
    max_items: int | None = Field(None, ge=1, le=1_000_000, description="Cap on evaluated items (deterministic sample).")
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="Generation length for this task (default: generation.max_new_tokens).")
    max_train_rows: int | None = Field(None, ge=1, description="Cap on training rows taken from this task (conversations, for a conversation source).")
    prompt_words: int = Field(8, ge=1, le=10_000, description="Domain adaptation: words of each passage given as the prompt.")
    assistant_turns: Literal["all", "last"] = Field(
        "all", description="Conversation sources: train on every assistant turn (one training row each, the "
                           "conversation before it as the prompt) or on the last one only.")

    @model_validator(mode="before")
    @classmethod
    def _source_shorthand(cls, data: Any) -> Any:
        return source_shorthand(data)

    @model_validator(mode="after")
    def _conversation_fits(self) -> TaskSpec:
        """A conversation source brings its own prompts and targets (issue 17): templates do not apply."""
        if (self.source is None) != (self.kind == "lm_eval"):
            raise ValueError("an lm_eval task reads its data through lm-eval (its task names it): remove source"
                             if self.kind == "lm_eval" else "source is required (a file path, or path/hub/train)")
        if (self.lm_eval is None) != (self.kind != "lm_eval"):
            raise ValueError("kind lm_eval needs an lm_eval section (task: a task name or task YAML)"
                             if self.kind == "lm_eval" else "an lm_eval section needs kind lm_eval")
        if not self.is_conversation():
            if self.assistant_turns != "all":
                raise ValueError("assistant_turns applies to conversation sources (source.format messages or sharegpt)")
            return self
        problems = []
        if self.kind not in CONVERSATION_KINDS:
            problems.append(f"kind {self.kind} cannot score a conversation; use one of {', '.join(CONVERSATION_KINDS)} "
                            f"(the final assistant turn is the reference)")
        # Compared with the defaults, not model_fields_set: a run folder's spec.yaml writes every field out.
        given = [k for k in ("prompt", "target", "labels", "choices", "answer", "tests")
                 if getattr(self, k) != type(self).model_fields[k].default]
        if given:
            problems.append(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a conversation source "
                            f"(its turns are the prompts and targets); remove {'it' if len(given) == 1 else 'them'}")
        if not self.chat_template:
            problems.append("a conversation source is rendered with the chat template; remove chat_template: false")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _kind_needs(self) -> TaskSpec:
        if self.is_conversation() or self.kind == "lm_eval":
            return self  # checked by _conversation_fits
        needs = {
            "classification": ["labels", "target"],
            "multiple_choice": ["choices", "answer"],
            "code": ["tests"],
            "exact_match": ["target"],
            "rouge_l": ["target"],
            "numeric": ["target"],
            "preference": ["chosen", "rejected"],
        }
        missing = [k for k in needs.get(self.kind, []) if getattr(self, k) is None]
        if self.kind == "contains" and self.target is None and self.answer is None:
            missing.append("target or answer")
        if missing:
            raise ValueError(f"a {self.kind} task needs: {', '.join(missing)}")
        return self

    def is_conversation(self) -> bool:
        """Whether rows are multi-turn conversations (source.format messages or sharegpt)."""
        return self.source is not None and self.source.conversation_field() is not None

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


class SelfGeneratedReplaySpec(Section):
    """Replay rows written by the base model itself: its own answers to a pool of general prompts (issue 14).

    Needs no extra data: the base model answers the prompts once (greedy, cached under
    $FTPIPE_HOME/cache/replay by model fingerprint and prompt set), and training on its own answers
    keeps its style. The pool must not overlap anything evaluated: the leakage check refuses it.
    """

    source: SourceSpec = Field(..., description="The prompt pool (a string is a file path), e.g. general instructions; "
                                                "never the held-out probes.")

    @model_validator(mode="before")
    @classmethod
    def _source_shorthand(cls, data: Any) -> Any:
        return source_shorthand(data)
    prompt: str = Field("{{ instruction }}", description="Jinja template of each prompt from a pool row.")
    name: str = Field("self_replay", pattern=NAME_PATTERN, description="Task name of the replay rows in reports.")
    chat_template: bool = Field(True, description="Wrap prompts in the base model's chat template.")
    system_prompt: str | None = Field(None, description="System message for the chat template.")
    max_prompts: int = Field(200, ge=1, le=100_000, description="Most prompts taken from the pool (in file order).")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Length of each generated answer.")
    batch_size: int = Field(16, ge=1, le=1024, description="Prompts per generation batch.")

    def pool_task(self) -> TaskSpec:
        """The prompt pool read as a task (its rows rendered with `prompt`; the answers come from the model)."""
        return TaskSpec(name=self.name, source=self.source, kind="exact_match", prompt=self.prompt, target=self.prompt,
                        chat_template=self.chat_template, system_prompt=self.system_prompt)


class ReplaySpec(Section):
    """General instruction data mixed into training, the standard remedy for forgetting."""

    task: TaskSpec | None = Field(None, description="A task whose rows are replayed (trained on, not evaluated).")
    self_generated: SelfGeneratedReplaySpec | None = Field(
        None, description="Instead of task: the base model's own answers to a prompt pool become the replay rows.")
    share: float = Field(0.1, gt=0, lt=1, description="Share of the final training rows taken from replay data.")

    @model_validator(mode="after")
    def _one_source(self) -> ReplaySpec:
        if (self.task is None) == (self.self_generated is None):
            raise ValueError("give exactly one of task or self_generated")
        return self

    def replay_task(self) -> TaskSpec:
        """The task whose rows are replayed; for self_generated, rows {prompt, response} from the generated file."""
        if self.task is not None:
            return self.task
        sg = self.self_generated
        return TaskSpec(name=sg.name, source=SourceSpec(path="<self-generated>"), kind="exact_match",
                        prompt="{{ prompt }}", target="{{ response }}", chat_template=sg.chat_template,
                        system_prompt=sg.system_prompt, id_field="prompt_id")


class LeakageSpec(Section):
    """The check that nothing evaluated was also trained on."""

    action: Literal["fail", "drop"] = Field("fail", description="fail: stop and show leaks; drop: remove leaked items from evaluation.")
    ngram: int = Field(8, ge=3, le=64, description="Word n-gram size for near-duplicate detection.")
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


class PromptTuningAdapter(Section):
    """Prompt tuning (Lester et al. 2021): a few trained "virtual token" embeddings before every prompt."""

    type: Literal["prompt_tuning"]
    num_virtual_tokens: int = Field(8, ge=1, le=512, description="Number of trained virtual tokens (each one embedding vector).")
    init: Literal["text", "random"] = Field(
        "text", description="text: start from the embeddings of init_text's tokens (repeated to fill); random: N(0, 1).")
    init_text: str | None = Field(None, description="Text whose token embeddings start the soft prompt (init text).")

    @model_validator(mode="after")
    def _text_given(self) -> PromptTuningAdapter:
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init text needs init_text (e.g. a one-line instruction for the task), or use init: random")
        if self.init == "random" and self.init_text is not None:
            raise ValueError("init_text is used only with init: text")
        return self


class PrefixTuningAdapter(Section):
    """Prefix tuning (Li and Liang 2021): trained key/value vectors prepended in every attention layer."""

    type: Literal["prefix_tuning"]
    num_virtual_tokens: int = Field(8, ge=1, le=512, description="Length of the trained prefix, in positions.")
    prefix_projection: bool = Field(False, description="Reparametrise the prefix through an MLP while training.")


class FrozenAdapter(Section):
    """No weight of the base model trains (method classification_head: only the new head does)."""

    type: Literal["frozen"]


AdapterSpec = Annotated[
    Union[FullAdapter, LoraAdapter, QloraAdapter, Ia3Adapter, LohaAdapter, AdaloraAdapter, PromptTuningAdapter,
          PrefixTuningAdapter, FrozenAdapter], Field(discriminator="type")
]
PROMPT_LEARNING_ADAPTERS = (PromptTuningAdapter, PrefixTuningAdapter)


class TrainingSpec(Section):
    """Trainer settings; every value is passed to Ludwig explicitly (its defaults are ECD's, not an LLM's).

    group_by_length, packing and precision bf16 are ftpipe's own, around Ludwig (ludwig_compat, issue 16).
    """

    epochs: int = Field(3, ge=1, le=1000, description="Passes over the training rows.")
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Peak learning rate.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("linear", description="Decay after warmup.")
    warmup_fraction: float = Field(0.0, ge=0, lt=1, description="Share of steps spent warming up.")
    batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    weight_decay: float = Field(0.0, ge=0, lt=1)
    max_sequence_length: int | None = Field(
        None, ge=16, le=1_048_576, description="Cap on prompt+target tokens; rows over it are bad rows. Unset: the model's context."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    early_stopping_patience: int | None = Field(None, ge=1, le=10_000, description="Stop after this many checkpoints without validation improvement.")
    checkpoints_per_epoch: int = Field(1, ge=1, le=100, description="Checkpoints (and validation passes) per epoch.")
    evaluate_during_training: bool = Field(True, description="Validation loss at each checkpoint (off: faster, no best-checkpoint choice).")
    seed: int = Field(42)
    group_by_length: bool = Field(
        True, description="Batch rows of similar token length, so batches carry less padding (faster steps): each epoch "
                          "the shuffled rows are sorted by length within groups of `length_group_batches` batches and "
                          "the batches are shuffled. Off: Ludwig's random batches.")
    length_group_batches: int | None = Field(
        8, ge=1, le=1_000_000, description="Batches per length-sorted group: smaller mixes lengths (and tasks) within a "
                                           "batch more, larger pads less. Unset: the whole epoch is one group.")
    packing: bool = Field(
        False, description="Pack several rows into each training sequence (positions restart per row and no row sees "
                           "another), so no padding is computed. Pays with a variable-length attention kernel (GPU) and "
                           "on rows of very different lengths; on CPU attention over a pack is dense, and length "
                           "grouping is faster.")
    packing_max_tokens: int | None = Field(
        None, ge=16, le=1_048_576, description="Tokens per pack at most (with packing). Unset: the longest prompt + "
                                               "target, so only rows shorter than half of it share a pack.")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 mixed precision on CUDA, fp32 on CPU. bf16: bf16 autocast of the training "
                            "forward (ftpipe's own; Ludwig 0.17 has none), weights and optimizer stay fp32; on CPU it "
                            "needs AVX512-BF16 or AMX (SmolLM2 LoRA: steps ~1.4x faster; the demo keeps its scores and verdicts).")


class GenerationSpec(Section):
    """Decoding used for evaluation: identical for the base and the tuned model."""

    max_new_tokens: int = Field(32, ge=1, le=4096)
    do_sample: Literal[False] = Field(False, description="Greedy decoding only: evaluation must be reproducible.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a generation early.")


class DiagnosisSpec(Section):
    """Forgetting diagnosis (issue 14): for each held-out generation task that dropped, knowledge lost or format drifted?"""

    enabled: bool = Field(True, description="Diagnose every held-out generation task whose verdict is 'forgot'.")
    always: bool = Field(False, description="Diagnose every held-out generation task, whatever its verdict.")
    k: int = Field(3, ge=1, le=16, description="In-format examples of the held-out task shown to the tuned model "
                                               "in the recovery probe (from its rows that are not evaluated).")
    candidates: int = Field(4, ge=0, le=32, description="Other answers of the task the reference answer is ranked "
                                                        "against by log-likelihood (0: log-likelihood only).")


class EvaluationSpec(Section):
    """What the evaluator scores besides the target tasks' test splits."""

    held_out: list[TaskSpec] = Field(default_factory=list, description="Tasks not trained on: where forgetting shows.")
    max_items: int = Field(200, ge=1, le=1_000_000, description="Default cap on evaluated items per task.")
    min_items: int = Field(1, ge=1, le=1_000_000, description="Fewest items a task may be evaluated on (after leakage drops); fewer stops "
                                                "the run before training.")
    few_shot: int = Field(0, ge=0, le=16, description="k for the few-shot baseline of the base model on target tasks (0 = off).")
    batch_size: int = Field(64, ge=1, le=1024, description="Prompts (or scored pairs) per forward pass. Decoding reads every "
                            "weight once per step whatever the batch, so 64 runs the demo's items 1.57x faster than 16 on 2 CPU "
                            "cores, with the same fp32 outputs; lower it when long prompts x batch overflow memory.")
    bootstrap_resamples: int = Field(10_000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    diagnosis: DiagnosisSpec = Field(default_factory=DiagnosisSpec)


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
    ftpipe.training.environment.preflight(), and the combinations that depend on the adapter in PipelineSpec below.
    """

    strategy: Literal["none", "ddp", "fsdp", "deepspeed"] = Field(
        "none", description="none: one process; ddp: data parallel, CPU (gloo) or CUDA; fsdp / deepspeed: sharded, CUDA only.")
    processes_per_node: int = Field(1, ge=1, le=256, description="Processes on each machine: one per GPU on CUDA.")
    nodes: int = Field(1, ge=1, le=1024, description="Machines; node 0 runs `ftpipe run`, the others `ftpipe join`.")
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


class SweepParam(Section):
    """One searched spec field: a list of choices, or a numeric range."""

    choices: list[Any] | None = Field(None, description="Values to try (a grid needs these).")
    low: float | None = Field(None, description="Range start (tpe, nsga2, random).")
    high: float | None = Field(None, description="Range end, inclusive.")
    log: bool = Field(False, description="Sample the range on a log scale.")
    step: float | None = Field(None, gt=0, description="Step of the range.")
    type: Literal["float", "int"] = Field("float", description="Value type of a range.")

    @model_validator(mode="before")
    @classmethod
    def _list_shorthand(cls, data: Any) -> Any:
        return {"choices": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _choices_or_range(self) -> SweepParam:
        has_range = self.low is not None or self.high is not None
        if (self.choices is not None) == has_range:
            raise ValueError("give choices (a list) or a range (low and high), not both or neither")
        if self.choices is not None and not self.choices:
            raise ValueError("choices is empty")
        if has_range and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError("a range needs low <= high")
        if self.log and has_range and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SweepSpec(Section):
    """`ftpipe sweep`: a search over spec fields driven by Optuna (issue 14); `ftpipe run` ignores this section."""

    params: dict[str, SweepParam] = Field(default_factory=dict, description="Dotted spec field -> choices list or range "
                                                                            "(e.g. training.learning_rate: [1e-4, 1e-3]).")
    sampler: Literal["grid", "tpe", "nsga2", "random"] = Field(
        "grid", description="grid: every combination of choices; tpe / nsga2: multi-objective search; random.")
    trials: int | None = Field(None, ge=1, le=10_000, description="Trial budget of the whole sweep (grid: its size).")
    study: str | None = Field(None, pattern=NAME_PATTERN, description="Study name (default: the pipeline's name).")
    storage: str | None = Field(None, description="Optuna storage URL shared by workers (default: SQLite in the sweep folder).")
    max_forgetting: float | None = Field(None, ge=0, description="Forgetting tolerance of the recommendation "
                                                                 "(default: the spec's gates).")
    seed: int = Field(0, description="Seed of the sampler.")


class PreferenceSpec(Section):
    """Preference tuning (method preference) on rows with a prompt, a chosen and a rejected reply."""

    loss: Literal["dpo", "orpo"] = Field(
        "dpo", description="dpo: Rafailov et al. 2023, the frozen base (adapter disabled) as reference; "
                           "orpo: Hong et al. 2024, SFT on the chosen reply plus an odds-ratio term, no reference.")
    beta: float = Field(0.1, gt=0, le=100, description="DPO: inverse temperature of the implicit reward (higher: stay "
                                                      "closer to the reference); ORPO: weight of the odds-ratio term.")


class ComputeSpec(Section):
    """Where training and evaluation run."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)


class MlflowSpec(Section):
    """MLflow tracking and Model Registry (issue 17; optional extra: pip install 'ftpipe[mlflow]').

    Best effort: the run folder and ftpipe's history stay the source of truth, and an unreachable
    tracking server is a warning, never a failed run.
    """

    tracking_uri: str | None = Field(
        None, description="Tracking server or store: http://host:5000, sqlite:///mlflow.db, ... Unset: $MLFLOW_TRACKING_URI "
                          "(else MLflow's own default).")
    registry_uri: str | None = Field(None, description="Model Registry URI (default: the tracking URI).")
    experiment: str | None = Field(None, description="Experiment name (default: the pipeline name).")
    artifact_location: str | None = Field(
        None, description="Where a new experiment stores artifacts (e.g. file:///data/mlartifacts; default: the server's).")
    registered_model: str | None = Field(None, description="Registered model name (default: the pipeline name).")
    alias: str = Field("champion", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
                       description="Registry alias pointed at the promoted run's version (moved back on rollback).")
    register_as: Literal["adapter", "merged", "none"] = Field(
        "adapter", description="What a promotion registers as a model version: the adapter with its base reference, "
                               "merged weights (a standalone Hugging Face folder), or nothing (runs are still logged).")
    timeout_s: float = Field(5.0, gt=0, le=300, description="Seconds to wait for the tracking server before warning and going on.")


class TrackingSpec(Section):
    """Where runs are logged besides the run folder."""

    mlflow: MlflowSpec | None = Field(
        None, description="Log each run to MLflow and register promoted models; also on (with defaults) when "
                          "$MLFLOW_TRACKING_URI is set.")


class PipelineSpec(Section):
    """A whole fine-tuning job: what to tune, on what, how, and how to judge the result."""

    name: str = Field(..., pattern=NAME_PATTERN, description="Pipeline name; runs go to runs/<name>/.")
    description: str | None = Field(None, description="Free text shown in reports.")
    base_model: str = Field(..., description="Store name (ftpipe models list), a local HF folder, or a hub id.")
    method: Literal["instruction", "multitask", "domain_adaptation", "classification_head", "preference"] = Field(
        "instruction", description="instruction: one task; multitask: several, mixed; domain_adaptation: raw text; "
                                   "classification_head: a new category head on the LLM (adapter lora or frozen); "
                                   "preference: DPO or ORPO on prompt/chosen/rejected rows.")
    tasks: list[TaskSpec] = Field(..., min_length=1, description="Tasks to tune on (their test splits are evaluated).")
    adapter: AdapterSpec = Field(default_factory=lambda: LoraAdapter(type="lora"))
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    sweep: SweepSpec | None = Field(None, description="Search space of `ftpipe sweep` (not used by `ftpipe run`).")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    preference: PreferenceSpec = Field(default_factory=PreferenceSpec, description="Loss of method preference.")

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
        probes = [t.name for t in self.tasks + ([self.data.replay.task] if self.data.replay and self.data.replay.task else []) if t.kind == "lm_eval"]
        if probes:
            raise ValueError(f"kind lm_eval is a held-out probe (evaluation.held_out), not trained on: {', '.join(probes)}")
        return self

    @model_validator(mode="after")
    def _toolbox_method_fits(self) -> PipelineSpec:
        """classification_head and preference (issue 15): what each needs of tasks, adapter and evaluation."""
        problems, kinds = [], {t.kind for t in self.tasks}
        adapter, distributed = self.adapter.type, self.compute.distributed.strategy != "none"
        if self.method == "classification_head":
            if len(self.tasks) != 1 or kinds != {"classification"}:
                problems.append("method classification_head trains one task of kind classification")
            if adapter not in ("lora", "frozen"):
                problems.append(f"method classification_head adapts the LLM body with adapter lora or keeps it "
                                f"frozen (adapter: {{type: frozen}}); {adapter} is not supported")
            if self.evaluation.few_shot == 0:
                problems.append("method classification_head is judged against the base model's zero- and few-shot "
                                "generation: set evaluation.few_shot (1-16)")
        elif adapter == "frozen":
            problems.append("adapter frozen trains nothing except a new head: it needs method classification_head")
        if self.method == "preference":
            if kinds != {"preference"}:
                problems.append("method preference trains tasks of kind preference (prompt, chosen, rejected)")
            if self.preference.loss == "dpo" and adapter not in ("lora", "qlora"):
                problems.append(f"DPO uses the base model with its adapter disabled as the reference, so it needs "
                                f"adapter lora or qlora ({adapter} given); or use preference.loss orpo")
            if self.evaluation.few_shot:
                problems.append("evaluation.few_shot does not apply to preference tasks (they are scored by "
                                "log-likelihood); set it to 0")
        elif "preference" in kinds:
            problems.append("preference tasks train only with method preference (as held-out tasks they fit any method)")
        elif self.preference != PreferenceSpec():
            problems.append("the preference section applies to method preference only")
        if self.method in ("classification_head", "preference") and distributed:
            problems.append(f"method {self.method} trains in one process only (compute.distributed.strategy none)")
        if adapter in ("prompt_tuning", "prefix_tuning") and distributed:
            problems.append(f"adapter {adapter} trains in one process only: PEFT's prompt-learning adapters are not "
                            "verified with distributed training")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _packing_fits(self) -> PipelineSpec:
        """Packing and bf16 (issue 16). Packing concatenates plain prompt + target rows: not a head, a preference
        pair or a soft prompt."""
        t, problems = self.training, []
        if t.packing_max_tokens is not None and not t.packing:
            problems.append("packing_max_tokens applies with packing: true only")
        if t.packing and self.method in ("classification_head", "preference"):
            problems.append(f"method {self.method} cannot pack rows; set packing: false")
        if t.precision == "bf16" and self.method == "preference":
            problems.append("precision bf16 is not available with method preference (its step is ftpipe's own); "
                            "use auto or fp32")
        if t.packing and self.adapter.type in ("prompt_tuning", "prefix_tuning"):
            problems.append(f"adapter {self.adapter.type} prepends virtual tokens to each sequence, so rows cannot be "
                            "packed; set packing: false")
        if problems:
            raise ValueError("training: " + "; ".join(problems))
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
        wanted = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}.get(self.training.precision)
        if d.mixed_precision not in ("auto", wanted) and wanted is not None:
            problems.append(f"mixed_precision {d.mixed_precision} contradicts training.precision "
                            f"{self.training.precision}; set one of them to auto")
        if problems:
            raise ValueError("compute.distributed: " + "; ".join(problems))
        return self

    def all_tasks(self) -> list[TaskSpec]:
        """Target tasks, held-out tasks and the replay task."""
        replay = [self.data.replay.task] if self.data.replay and self.data.replay.task else []
        return [*self.tasks, *self.evaluation.held_out, *replay]


