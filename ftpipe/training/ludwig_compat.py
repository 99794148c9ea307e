"""The only module that imports Ludwig: version gate, workarounds, config check, train/save/load.

Every workaround for a Ludwig 0.17.10 bug lives here, names the bug, and has a test in
tests/test_ludwig_compat.py that fails the day upstream behaviour changes, so it can be deleted.
Every use of a Ludwig internal (attribute chains, output folder names, trainer hooks) is here too.
Bugs sidestepped by configuration instead of patches (see shared/LUDWIG.md):
- prompt cut at the last pad token / padding attended: the store saves tokenizers with pad id 0
  (`<|endoftext|>`), which never occurs in text (ftpipe/models/store.py);
- prompts truncated from the end: the compiler sets sequence lengths from measured token counts;
- unknown keys silently dropped: `check_config` fails when Ludwig did not keep a key we set;
- wrong LLM eval metrics and one-row-at-a-time generation: the evaluator scores its own
  batched generations (ftpipe/evaluation/generation.py) and never uses Ludwig's evaluate/predict.
Issue 15 (docs/toolbox.md): workaround 2 registers prompt and prefix tuning, 3 fixes prompt tuning in
LLM.forward, 4 makes the `llm` encoder of an ECD model (a task head) honour its adapter, mask its
padding and stay frozen without one, 5 replaces Ludwig's reference-free DPO by ftpipe's DPO/ORPO step.
Issue 16 (speed-ups, at the end of this module): 1 lean training steps (always on), 2 length-grouped
batches (`training.group_by_length`), 3 packing that works (`training.packing`), 4 bf16 autocast
(`training.precision: bf16`); train_model applies them (StepOptions).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ftpipe.errors import CompileError, FtpipeError, TrainError

SUPPORTED_LUDWIG = "0.17.10"
_PATCHED = False


def import_ludwig():
    """Import Ludwig quietly, check its version and apply our workarounds (idempotent)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ludwig
        import ludwig.api  # noqa: F401
    # Importing Ludwig sets the root logger to INFO on stdout (ludwig/__init__.py): undo that.
    root.setLevel(level)
    root.handlers[:] = handlers
    if ludwig.__version__ != SUPPORTED_LUDWIG:
        warnings.warn(f"ftpipe was verified with Ludwig {SUPPORTED_LUDWIG}, found {ludwig.__version__}", stacklevel=2)
    apply_patches()
    return ludwig


# --------------------------------------------------------------------------------------------
# Workaround 1: LudwigModel.load() fails on every saved LLM.
# Upstream bug: the saved config has `adapters: null`, but the JSON schema of the `adapters` field
# (NamedAdaptersConfigField._jsonschema_type_mapping) has no null branch, so load() raises
# ConfigValidationError "None is not of type 'object'". Deleting the key does not help: load() puts
# it back. Fix: let the field's JSON schema also accept null, then clear Ludwig's cached schema.
# --------------------------------------------------------------------------------------------


def adapters_null_rejected() -> bool:
    """True while stock Ludwig's JSON schema rejects `adapters: null` (the bug is still there)."""
    from ludwig.config_validation.validation import get_schema
    from ludwig.schema.llms.peft import NamedAdaptersConfigField

    original = getattr(NamedAdaptersConfigField, "_ftpipe_original_mapping", NamedAdaptersConfigField._jsonschema_type_mapping)
    schema = original(NamedAdaptersConfigField())
    del get_schema  # imported only to make sure the module exists
    return "null" not in str(schema.get("type", "")) and not any(
        branch.get("type") == "null" for branch in schema.get("anyOf", []) + schema.get("oneOf", []))


def _patch_adapters_null() -> None:
    from ludwig.config_validation.validation import get_schema
    from ludwig.schema.llms.peft import NamedAdaptersConfigField

    if hasattr(NamedAdaptersConfigField, "_ftpipe_original_mapping"):
        return
    original = NamedAdaptersConfigField._jsonschema_type_mapping
    NamedAdaptersConfigField._ftpipe_original_mapping = original

    def nullable(self):
        return {"anyOf": [original(self), {"type": "null"}]}

    NamedAdaptersConfigField._jsonschema_type_mapping = nullable
    get_schema.cache_clear()


def apply_patches() -> None:
    """Apply the workarounds in this module once per process (each is idempotent too)."""
    global _PATCHED
    if _PATCHED:
        return
    _patch_adapters_null()
    _register_prompt_learning_adapters()
    _patch_soft_prompt_forward()
    _patch_llm_encoder()
    _patch_shifted_label_loss()
    _patch_length_grouping()
    _register_packing_fields()
    _patch_packed_forward()
    _PATCHED = True


# --------------------------------------------------------------------------------------------
# Config validation: Ludwig's own schema, plus "did Ludwig keep every key we set?"
# --------------------------------------------------------------------------------------------


def _dropped_keys(ours: Any, theirs: Any, prefix: str = "") -> list[str]:
    """Keys set in our config that are missing or changed in Ludwig's resolved config."""
    problems: list[str] = []
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [f"{prefix or 'config'}: became {theirs!r}"]
        for key, value in ours.items():
            path = f"{prefix}.{key}" if prefix else key
            if key not in theirs:
                problems.append(f"{path}: dropped by Ludwig")
            else:
                problems += _dropped_keys(value, theirs[key], path)
    elif isinstance(ours, list) and ours and isinstance(ours[0], dict):
        for i, (a, b) in enumerate(zip(ours, theirs or [])):
            problems += _dropped_keys(a, b, f"{prefix}[{i}]")
    elif ours != theirs and not (isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and float(ours) == float(theirs)):
        problems.append(f"{prefix}: set to {ours!r}, Ludwig resolved {theirs!r}")
    return problems


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate a compiled config with Ludwig's schema; fail if Ludwig rejected, dropped or changed a key.

    Returns:
        The config as Ludwig resolved it (all defaults filled in), to save in the run folder.
    """
    import_ludwig()
    from ludwig.error import ConfigValidationError
    from ludwig.schema.model_types.base import ModelConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            resolved = ModelConfig.from_dict(config).to_dict()
        except ConfigValidationError as e:
            raise CompileError(f"Ludwig rejected the compiled config: {str(e).splitlines()[0][:300]}",
                               hint="this is an ftpipe compiler bug; please report it with the spec") from None
    ignored = [str(w.message) for w in caught if "will be ignored" in str(w.message)]
    trainer_type = (config.get("trainer") or {}).get("type")
    if trainer_type in STOCK_PREFERENCE_TRAINERS:  # workaround 5: they train plain cross-entropy, silently
        raise CompileError(f"Ludwig's trainer type {trainer_type} is not used by ftpipe: in Ludwig {SUPPORTED_LUDWIG} "
                           "it has no reference model and falls back to cross-entropy without a word",
                           hint="use `method: preference` in the spec (ftpipe's DPO/ORPO step on the finetune trainer)")
    problems = _dropped_keys(config, resolved) + ignored
    if problems:
        raise CompileError("Ludwig did not keep the compiled config as meant: " + "; ".join(problems),
                           hint="this is an ftpipe compiler bug; please report it with the spec")
    return resolved


# --------------------------------------------------------------------------------------------
# Training, saving, loading
# --------------------------------------------------------------------------------------------


def make_progress_callback(on_step: Callable[[dict], None]):
    """A Ludwig callback reporting {step, total_steps, epoch, loss, learning_rate} after each batch.

    Ludwig's progress tracker has no loss, so the trainer's `train_step` is wrapped to capture it.
    """
    import_ludwig()
    from ludwig.callbacks import Callback

    class _Progress(Callback):
        def __init__(self):
            self.last_loss: float | None = None
            self.trainer = None

        def was_interrupted(self) -> bool:
            """Ludwig ends training early and returns normally on the first Ctrl-C: tell that apart."""
            return bool(getattr(self.trainer, "received_sigint", False))

        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            self.trainer = trainer
            self.save_path = save_path
            original = trainer.train_step

            def train_step(*args, **kw):
                result = original(*args, **kw)
                self.last_loss = float(result[0].detach()) if hasattr(result[0], "detach") else float(result[0])
                return result

            trainer.train_step = train_step

        def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True, **kwargs):
            on_step({"step": progress_tracker.steps, "total_steps": progress_tracker.total_steps,
                     "epoch": progress_tracker.epoch, "loss": self.last_loss,
                     "learning_rate": progress_tracker.learning_rate})

        def on_checkpoint(self, trainer, progress_tracker):
            from ftpipe import faults

            faults.point("train:checkpoint")
            record_checkpoint(Path(self.save_path), progress_tracker.steps)

    return _Progress()


def train_model(config: dict[str, Any], frame, output_dir: Path, *, seed: int, resume: bool = False,
                callbacks: list | None = None, quantized: bool = False, backend=None, save_model: bool = True,
                options: StepOptions | None = None):
    """Train with LudwigModel and save the final model under `output_dir/model`.

    Args:
        config: The compiled, checked Ludwig config.
        frame: Training DataFrame with prompt, target and split columns.
        output_dir: Ludwig's output directory (checkpoints and statistics go here).
        seed: Random seed handed to Ludwig.
        resume: Resume from `output_dir`'s last checkpoint when one exists.
        callbacks: Ludwig callbacks (progress reporting).
        quantized: QLoRA; Ludwig's end-of-training restore of the best checkpoint crashes on 4-bit
            weights ("Unexpected keys ... absmax, quant_map"), so the model is saved as trained instead.
        backend: A Ludwig backend instance, e.g. `distributed_backend(...)` run under torchrun (issue 9);
            then only the coordinator (rank 0) saves. None: the config's local backend.
        save_model: Save the model under `output_dir/model` (a classification head is exported from
            memory instead: a frozen body would be saved whole, 538 MB for SmolLM2).
        options: ftpipe's own step options (issue 16); None: the defaults.

    Returns:
        (LudwigModel, training statistics from training_statistics.json, path of the saved model folder).
    """
    global _ACTIVE
    import_ludwig()
    from ludwig.api import LudwigModel
    from ludwig.callbacks import Callback

    options = options or StepOptions()

    class _Steps(Callback):  # first, so the other callbacks' train_step wrappers see the lean step
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            if options.lean:
                make_lean(trainer)
            if options.bf16:
                enable_bf16_autocast(trainer)

    output_dir.mkdir(parents=True, exist_ok=True)
    model = LudwigModel(config, logging_level=logging.ERROR, callbacks=[_Steps(), *(callbacks or [])], backend=backend)
    experiment = experiment_folder(output_dir)
    resume_path = str(experiment) if resume and checkpoint_state(output_dir)[0] == "complete" else None
    if resume_path is None and (output_dir / LUDWIG_OUTPUT).exists() and (backend is None or backend.is_coordinator()):
        # Ludwig names a new folder experiment_run_0 when experiment_run exists: start clean instead,
        # so its statistics and checkpoints are always where experiment_folder() says.
        import shutil

        shutil.rmtree(output_dir / LUDWIG_OUTPUT)
    previous, _ACTIVE = _ACTIVE, options  # read by the batcher patch (speed-up 2) while this training runs
    try:
        result = model.train(
            dataset=frame,
            output_directory=str(output_dir / LUDWIG_OUTPUT),
            model_resume_path=resume_path,
            skip_save_model=quantized,
            skip_save_processed_input=True,
            random_seed=seed,
            experiment_name="experiment",
            model_name="run",
        )
    except FtpipeError:
        raise
    except Exception as e:
        raise TrainError(f"Ludwig training failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                         hint="rerun with --debug for the traceback") from e
    finally:
        _ACTIVE = previous
    saved = output_dir / "model"
    stats_file = experiment_folder(output_dir) / "training_statistics.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    if save_model and (backend is None or backend.is_coordinator()):  # distributed: only rank 0 writes (issue 9)
        model.save(str(saved))
        from ftpipe.files import write_json_atomic

        write_json_atomic(saved / FINISHED_RECORD, {"statistics": stats})  # last: the saved model is complete
    return model, stats, saved


FINISHED_RECORD = "ftpipe_finished.json"


def resuming_a_finished_training_fails() -> bool:
    """Upstream detector: Trainer.train assigns `has_nan_or_inf_tensors` only inside its epoch loop and reads
    it after, so resuming a checkpoint whose training is done raises UnboundLocalError."""
    import inspect

    import_ludwig()
    from ludwig.trainers.trainer import Trainer

    source = inspect.getsource(Trainer.train)
    loop = source.index("while progress_tracker.steps < self.total_steps")
    first = source.find("has_nan_or_inf_tensors")
    return first > loop and "has_nan_or_inf_tensors = False" not in source[:loop]


def finished_training(output_dir: Path) -> tuple[dict, Path] | None:
    """(statistics, saved model folder) when a training in `output_dir` ran to its end and its model was saved.

    A run killed after that (while its adapter was copied into the run folder) must not train again:
    Ludwig 0.17 cannot resume a training whose last epoch is done (its loop never runs and it fails
    with UnboundLocalError 'has_nan_or_inf_tensors'), and there is nothing left to train anyway.
    """
    saved = output_dir / "model"
    try:
        record = json.loads((saved / FINISHED_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record.get("statistics", {}), saved


def export_full_weights(model, out: Path) -> None:
    """A fully fine-tuned LudwigModel as a plain Hugging Face folder (what the evaluator and users load).

    Ludwig internal: LudwigModel.model is its LLM wrapper, whose `.model` is the transformers model
    and whose `.tokenizer` the tokenizer it trained with.
    """
    import shutil

    from ftpipe.files import replace_folder

    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    llm = model.model.model
    llm.save_pretrained(str(tmp), safe_serialization=True)
    if hasattr(model.model, "tokenizer"):
        model.model.tokenizer.save_pretrained(str(tmp))
    replace_folder(tmp, out)


# --------------------------------------------------------------------------------------------
# Checkpoints: where Ludwig keeps them, and whether the last one was written completely.
# Ludwig internal: a run's output is <output_directory>/<experiment_name>_<model_name>/ (a suffix
# _0, _1, ... when that exists), its checkpoint model/training_checkpoints/latest.ckpt plus
# latest.ckpt.safetensors, moved into place one after the other, and model/training_progress.json
# written after them (trainers/trainer.py:831-836). A kill between those writes leaves a checkpoint
# whose parts disagree, which Ludwig would load without noticing; ftpipe records the parts' hashes
# once all are written (on_checkpoint) and resumes only a checkpoint that matches its record.
# --------------------------------------------------------------------------------------------

LUDWIG_OUTPUT = "_ludwig"
CHECKPOINT_RECORD = "ftpipe_checkpoint.json"
_CHECKPOINT_PARTS = ("training_checkpoints/latest.ckpt", "training_checkpoints/latest.ckpt.safetensors",
                     "training_progress.json")


def experiment_folder(output_dir: Path) -> Path:
    """The folder Ludwig writes a training into (train_model always starts it clean or resumes it)."""
    return output_dir / LUDWIG_OUTPUT / "experiment_run"


def record_checkpoint(model_dir: Path, step: int) -> None:
    """Record the hashes of a checkpoint Ludwig has just finished writing (called from on_checkpoint)."""
    from ftpipe.files import sha256_file, write_json_atomic

    parts = {name: {"size": (model_dir / name).stat().st_size, "sha256": sha256_file(model_dir / name)}
             for name in _CHECKPOINT_PARTS if (model_dir / name).exists()}
    write_json_atomic(model_dir / CHECKPOINT_RECORD, {"step": step, "parts": parts})


def checkpoint_state(output_dir: Path) -> tuple[str, str]:
    """("none" | "complete" | "partial", why): whether training in `output_dir` can resume from its checkpoint."""
    from ftpipe.files import sha256_file

    model_dir = experiment_folder(output_dir) / "model"
    present = [name for name in _CHECKPOINT_PARTS if (model_dir / name).exists()]
    if not present:
        return "none", "no checkpoint was written yet"
    try:
        record = json.loads((model_dir / CHECKPOINT_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return "partial", "a checkpoint exists but was never recorded as complete (killed while it was saved)"
    for name in _CHECKPOINT_PARTS:
        expected = record.get("parts", {}).get(name)
        path = model_dir / name
        if expected is None or not path.exists():
            return "partial", f"checkpoint part {name} is missing"
        if path.stat().st_size != expected["size"] or sha256_file(path) != expected["sha256"]:
            return "partial", f"checkpoint part {name} differs from the last complete checkpoint (step {record.get('step')})"
    return "complete", f"step {record.get('step')}"


def load_model(path: Path):
    """Load a saved LudwigModel (needs workaround 1)."""
    import_ludwig()
    from ludwig.api import LudwigModel

    return LudwigModel.load(str(path), logging_level=logging.ERROR)


def adapter_folder(saved_model: Path) -> Path | None:
    """Where Ludwig put the PEFT adapter of a saved model, or None for full fine-tuning."""
    folder = saved_model / "model_weights"
    return folder if (folder / "adapter_config.json").exists() else None


# --------------------------------------------------------------------------------------------
# Workaround: distributed training (issue 9; docs/distributed.md, launching in ftpipe/distributed.py).
# Upstream gap 1: Ludwig 0.17 ships an Accelerate strategy (ludwig/distributed/accelerate.py; `ddp`,
# `fsdp`, `deepspeed` are aliases of it) but nothing creates it: LocalBackend.initialize() always
# initialises the `local` strategy (backend/base.py:249), create_trainer() never passes
# `distributed=`, and is_coordinator() is always True; no config key changes that. Under torchrun,
# stock Ludwig trains N unsynchronised copies racing for one output folder. Fix: a LocalBackend
# subclass that creates the Accelerate strategy, hands it to the trainer and makes only rank 0
# the coordinator. Upstream gap 2: the LLM fine-tune trainer reads `self.dist_model.tokenizer`
# (trainers/trainer_llm.py:454), which a DDP/FSDP wrapper lacks: re-exposed after prepare().
# Upstream gap 3 (CUDA, not verified on a GPU): 4-bit/8-bit weights load with device_map="auto"
# over every visible GPU (utils/llm_utils.py:53) and to_device() then leaves them there, so with
# several GPUs per machine each process pins itself to its own GPU before torch starts.
# --------------------------------------------------------------------------------------------


def stock_backend_strategy() -> str:
    """Class name of the strategy stock Ludwig's LocalBackend initialises ("LocalStrategy" while gap 1 holds)."""
    import_ludwig()
    import ludwig.distributed as dist
    from ludwig.backend.base import LocalBackend

    previous = dist._current_strategy
    try:
        LocalBackend().initialize()
        return type(dist._current_strategy).__name__
    finally:
        dist._current_strategy = previous


def llm_trainer_reads_tokenizer_from_dist_model() -> bool:
    """True while the fine-tune trainer reads the tokenizer off the (wrapped) dist_model (gap 2)."""
    import inspect

    import_ludwig()
    from ludwig.trainers.trainer_llm import FineTuneTrainer

    return "self.dist_model.tokenizer" in inspect.getsource(FineTuneTrainer.evaluation)


def quantized_load_spreads_over_gpus() -> bool:
    """True while Ludwig loads bitsandbytes-quantized LLMs with device_map="auto" (gap 3)."""
    import inspect

    import_ludwig()
    from ludwig.utils.llm_utils import load_pretrained_from_config

    return '"device_map"] = "auto"' in inspect.getsource(load_pretrained_from_config)


def pin_one_gpu_per_process(env: dict[str, str]) -> None:
    """Make a torchrun worker see only its own GPU (gap 3); call before torch is imported.

    LOCAL_RANK becomes 0 because the process's only visible GPU is cuda:0; the original stays in
    FTPIPE_LOCAL_RANK.
    """
    local_rank = int(env.get("LOCAL_RANK", "0"))
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    env["CUDA_VISIBLE_DEVICES"] = visible[local_rank] if local_rank < len(visible) else str(local_rank)
    env["FTPIPE_LOCAL_RANK"] = str(local_rank)
    env["LOCAL_RANK"] = "0"


def distributed_backend(strategy_kwargs: dict[str, Any]):
    """A Ludwig backend that trains with the Accelerate strategy on every torchrun rank (gaps 1 and 2).

    Args:
        strategy_kwargs: Arguments of Ludwig's AccelerateStrategy (mixed_precision, fsdp_config,
            deepspeed_config), built by ftpipe.distributed.strategy_kwargs.

    Returns:
        A LocalBackend subclass instance to pass to `train_model(backend=...)`; its `is_coordinator()`
        is True on rank 0 only, and `finish()` ends the process group.
    """
    import_ludwig()
    import ludwig.distributed as dist
    from ludwig.backend.base import LocalBackend
    from ludwig.distributed.accelerate import AccelerateStrategy

    class _TokenizerAccelerateStrategy(AccelerateStrategy):
        def prepare(self, model, trainer_config, base_learning_rate):
            dist_model, optimizer = super().prepare(model, trainer_config, base_learning_rate)
            if not hasattr(dist_model, "tokenizer") and hasattr(model, "tokenizer"):
                dist_model.tokenizer = model.tokenizer  # gap 2: trainer_llm.py reads it off the wrapper
            return dist_model, optimizer

    class _AccelerateBackend(LocalBackend):
        def initialize(self):
            dist._current_strategy = self.strategy  # as init_dist_strategy does: metric sync reads it

        def is_coordinator(self) -> bool:
            return self.strategy.rank() == 0

        def create_trainer(self, config, model, **kwargs):
            kwargs["distributed"] = self.strategy
            return super().create_trainer(config, model, **kwargs)

        def finish(self) -> None:
            self.strategy.accelerator.end_training()  # waits for every rank, then ends the process group

    backend = _AccelerateBackend()
    backend.strategy = _TokenizerAccelerateStrategy(**strategy_kwargs)  # now: callers check its size first
    return backend


def make_rank_callback(on_step: Callable[[dict], None] | None, seen_rows: list[str]):
    """A Ludwig callback for one torchrun rank: progress after each batch (rank 0) and a digest of each row trained on.

    The digests (sha1 of a row's prompt token ids, padding dropped) let a test check that ranks trained
    on disjoint rows.
    """
    import hashlib

    import_ludwig()
    from ludwig.callbacks import Callback

    class _RankCallback(Callback):
        def __init__(self):
            self.last_loss: float | None = None

        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            self.save_path, self.is_coordinator = save_path, is_coordinator
            original = trainer.train_step

            def train_step(inputs, *args, **kw):
                for tensor in inputs.values():
                    for row in tensor.detach().cpu():
                        seen_rows.append(hashlib.sha1(row[row != 0].numpy().tobytes()).hexdigest()[:16])
                result = original(inputs, *args, **kw)
                self.last_loss = float(result[0].detach()) if hasattr(result[0], "detach") else float(result[0])
                return result

            trainer.train_step = train_step

        def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True, **kwargs):
            if on_step is not None:
                on_step({"step": progress_tracker.steps, "total_steps": progress_tracker.total_steps,
                         "epoch": progress_tracker.epoch, "loss": self.last_loss,
                         "learning_rate": progress_tracker.learning_rate})

        def on_checkpoint(self, trainer, progress_tracker):
            if self.is_coordinator:
                record_checkpoint(Path(self.save_path), progress_tracker.steps)

    return _RankCallback()


def trainable_digest(model) -> str:
    """sha1 of a trained LudwigModel's trainable weights: equal on every rank when DDP kept them in sync."""
    import hashlib

    digest = hashlib.sha1()
    for name, param in sorted(model.model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def trainable_parameters(model) -> dict[str, int]:
    """{"trainable": weights that received updates, "total": all weights} of a trained LudwigModel."""
    params = list(model.model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


# --------------------------------------------------------------------------------------------
# Workaround 2 (issue 15): soft prompts. Upstream gap: Ludwig 0.17 has PEFT's prompt tuning and
# prefix tuning commented out of its adapter schema (schema/llms/peft.py:390-513), so
# `adapter: {type: prompt_tuning}` is refused. Fix: register both in its adapter registry (the JSON
# schema's type enum is built from it; get_schema is lru_cached, so clear it). Ludwig builds the PEFT
# config with `to_config(task_type=..., tokenizer_name_or_path=<base model>)` (utils/llm_utils.py:243).
# --------------------------------------------------------------------------------------------

PROMPT_LEARNING_TYPES = ("prompt_tuning", "prefix_tuning")
_REGISTERED_BY_FTPIPE: dict[str, type] = {}


def prompt_learning_unregistered() -> bool:
    """True while stock Ludwig registers neither prompt_tuning nor prefix_tuning (only ftpipe's classes are there)."""
    from ludwig.schema.llms.peft import adapter_registry

    return all(name not in adapter_registry or adapter_registry[name] is _REGISTERED_BY_FTPIPE.get(name)
               for name in PROMPT_LEARNING_TYPES)


def _register_prompt_learning_adapters() -> None:
    from ludwig.config_validation.validation import get_schema
    from ludwig.error import ConfigValidationError
    from ludwig.schema import utils as schema_utils
    from ludwig.schema.llms.peft import BasePromptLearningConfig, adapter_registry, register_adapter

    if any(name in adapter_registry for name in PROMPT_LEARNING_TYPES):
        return  # ours already, or upstream's (then prompt_learning_unregistered() is False and its test says so)

    @register_adapter("prompt_tuning")
    class PromptTuningAdapterConfig(BasePromptLearningConfig):
        type: str = schema_utils.ProtectedString("prompt_tuning", description="PEFT prompt tuning (a soft prompt).")
        prompt_tuning_init: str = schema_utils.StringOptions(["RANDOM", "TEXT"], default="RANDOM",
                                                             description="How the virtual token embeddings start.")
        prompt_tuning_init_text: str | None = schema_utils.String(default=None, allow_none=True,
                                                                  description="Text whose embeddings start them (TEXT).")

        def __post_init__(self):
            if self.prompt_tuning_init == "TEXT" and not self.prompt_tuning_init_text:
                raise ConfigValidationError("prompt_tuning_init TEXT needs prompt_tuning_init_text")

        def to_config(self, task_type=None, tokenizer_name_or_path=None, **kwargs):
            from peft import PromptTuningConfig

            text = self.prompt_tuning_init == "TEXT"
            return PromptTuningConfig(task_type=task_type, num_virtual_tokens=self.num_virtual_tokens,
                                      prompt_tuning_init=self.prompt_tuning_init,
                                      prompt_tuning_init_text=self.prompt_tuning_init_text if text else None,
                                      tokenizer_name_or_path=tokenizer_name_or_path if text else None)

        @classmethod
        def name(cls):
            return "Prompt tuning"

        @classmethod
        def description(cls):
            return "Trained virtual token embeddings before the prompt (registered by ftpipe)."

    @register_adapter("prefix_tuning")
    class PrefixTuningAdapterConfig(BasePromptLearningConfig):
        type: str = schema_utils.ProtectedString("prefix_tuning", description="PEFT prefix tuning.")
        prefix_projection: bool = schema_utils.Boolean(default=False, description="Reparametrise through an MLP.")

        def to_config(self, task_type=None, **kwargs):
            from peft import PrefixTuningConfig

            return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=self.num_virtual_tokens,
                                      prefix_projection=self.prefix_projection)

        @classmethod
        def name(cls):
            return "Prefix tuning"

        @classmethod
        def description(cls):
            return "Trained key/value prefixes in every attention layer (registered by ftpipe)."

    _REGISTERED_BY_FTPIPE.update(prompt_tuning=adapter_registry["prompt_tuning"], prefix_tuning=adapter_registry["prefix_tuning"])
    get_schema.cache_clear()


# --------------------------------------------------------------------------------------------
# Workaround 3 (issue 15): prompt tuning in Ludwig's LLM.forward. Upstream bug: PEFT prepends the
# virtual tokens, so the logits have L + n positions, while Ludwig aligns its labels to the L token
# positions (models/llm.py:331, utils/llm_utils.py:526-587): training fails with "Expected input
# batch_size (56) to match target batch_size (24)" (hidden behind an UnboundLocalError about
# 'has_nan_or_inf_tensors' when skip_all_evaluation is on). PEFT also puts the soft prompt before
# the left padding, so with RoPE a row's result depends on its padding. Fix: the PeftModel's forward
# builds [padding][soft prompt][tokens] and returns the tokens' logits only, so a batched row computes
# what it computes alone (the evaluator lays rows out the same way, ftpipe/evaluation/generation.py).
# --------------------------------------------------------------------------------------------


def llm_forward_keeps_virtual_token_logits() -> bool:
    """True while stock LLM.forward hands on PEFT's L + n logits (it never mentions virtual tokens)."""
    import inspect

    from ludwig.models.llm import LLM

    original = getattr(LLM.forward, "_ftpipe_original", LLM.forward)
    return "num_virtual_tokens" not in inspect.getsource(original)


def _adjacent_soft_prompt_forward(peft_model):
    """A forward for a PEFT prompt-tuning model: rows laid out [pads][soft prompt][tokens], soft-prompt logits dropped."""
    import torch

    def forward(input_ids=None, attention_mask=None, **kwargs):
        base = peft_model.get_base_model()
        n = peft_model.active_peft_config.num_virtual_tokens
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        emb = base.get_input_embeddings()(input_ids)
        soft = peft_model.get_prompt(batch_size=batch).to(emb.dtype)
        npad = (attention_mask.cumsum(-1) == 0).sum(-1)  # leading zeros of the mask: the left padding
        positions = torch.arange(length + n, device=input_ids.device).unsqueeze(0)
        is_soft = (positions >= npad[:, None]) & (positions < npad[:, None] + n)
        token_pos = torch.arange(length, device=input_ids.device)[None, :]
        dest = token_pos + n * (token_pos >= npad[:, None])  # token j goes to j (padding) or j + n (after the soft prompt)
        full = emb.new_zeros(batch, length + n, emb.shape[-1])
        full[is_soft] = soft.reshape(-1, soft.shape[-1])
        full = full.scatter(1, dest[..., None].expand(-1, -1, emb.shape[-1]), emb)
        mask = attention_mask.new_zeros(batch, length + n)
        mask[is_soft] = 1
        mask = mask.scatter(1, dest, attention_mask)
        kwargs.pop("position_ids", None)
        out = base(inputs_embeds=full, attention_mask=mask, **kwargs)
        out["logits"] = out["logits"].gather(1, dest[..., None].expand(-1, -1, out["logits"].shape[-1]))
        return out

    return forward


def _patch_soft_prompt_forward() -> None:
    from ludwig.models.llm import LLM

    if hasattr(LLM.forward, "_ftpipe_original"):
        return
    original = LLM.forward

    def forward(self, inputs, mask=None):
        from peft import PeftModel, PeftType

        model = self.model
        if isinstance(model, PeftModel) and not getattr(model, "_ftpipe_adjacent", False) \
                and model.active_peft_config.peft_type == PeftType.PROMPT_TUNING:
            model.forward = _adjacent_soft_prompt_forward(model)  # instance attribute: PEFT's generate is untouched
            model._ftpipe_adjacent = True
        return original(self, inputs, mask)

    forward._ftpipe_original = original
    LLM.forward = forward


# --------------------------------------------------------------------------------------------
# Workaround 4 (issue 15): a task head on the LLM (ECD model, `llm` text encoder, category output).
# Upstream bug a: ECD.prepare_for_training (models/ecd.py:90-100) calls prepare_for_training() on the
# text input feature, a no-op, instead of on its encoder: `adapter: lora` is silently ignored and every
# LLM weight but the tied embeddings trains. Bug b: LLMEncoder.forward (encoders/text_encoders.py:2579)
# runs the LLM without an attention mask and hands on every position, padding included, to the head's
# pooling. Gap c: there is no way to keep the body frozen. Fix: call the encoder's own
# prepare_for_training (once: stock initialize_adapter re-wraps on every call) and freeze an encoder
# without adapter (ftpipe never fully fine-tunes an ECD body); mask padding by the tokenizer's pad id,
# zero its hidden states, and compute logits for one position only.
# --------------------------------------------------------------------------------------------


def ecd_adapter_not_applied() -> bool:
    """True while stock ECD.prepare_for_training calls the input feature instead of its encoder (bug a)."""
    import inspect

    from ludwig.models.ecd import ECD

    original = getattr(ECD.prepare_for_training, "_ftpipe_original", ECD.prepare_for_training)
    return "encoder_obj" not in inspect.getsource(original)


def llm_encoder_attends_padding() -> bool:
    """True while stock LLMEncoder.forward calls the LLM without an attention mask (bug b)."""
    import inspect

    from ludwig.encoders.text_encoders import LLMEncoder

    original = getattr(LLMEncoder.forward, "_ftpipe_original", LLMEncoder.forward)
    return "attention_mask" not in inspect.getsource(original)


def _patch_llm_encoder() -> None:
    import torch
    from ludwig.constants import ENCODER_OUTPUT
    from ludwig.encoders.text_encoders import LLMEncoder
    from ludwig.models.ecd import ECD

    if hasattr(ECD.prepare_for_training, "_ftpipe_original"):
        return

    def prepare_for_training(self):
        for _, feature in self.input_features.items():
            encoder = getattr(feature, "encoder_obj", None)
            if isinstance(encoder, LLMEncoder):
                encoder.prepare_for_training()
                if not encoder.config.adapter:
                    encoder.model.requires_grad_(False)  # frozen body: only the head trains

    prepare_for_training._ftpipe_original = ECD.prepare_for_training
    ECD.prepare_for_training = prepare_for_training

    original_initialize = LLMEncoder.initialize_adapter

    def initialize_adapter(self):
        if not self.adapter_is_initialized:
            original_initialize(self)

    initialize_adapter._ftpipe_original = original_initialize
    LLMEncoder.initialize_adapter = initialize_adapter

    def forward(self, inputs, mask=None):
        # `mask` compares with Ludwig's own padding id 2, a real token for an HF tokenizer: use its pad id.
        attention = (inputs != self.tokenizer.pad_token_id).long()
        hidden = self.model(input_ids=inputs, attention_mask=attention, output_hidden_states=True,
                            logits_to_keep=1).hidden_states[-1]
        hidden = hidden * attention.unsqueeze(-1).to(hidden.dtype)
        return {ENCODER_OUTPUT: hidden.type(torch.float32)}

    forward._ftpipe_original = LLMEncoder.forward
    LLMEncoder.forward = forward


HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"


def export_classification_head(model, head_dir: Path, adapter_dir: Path) -> bool:
    """Write a trained ECD head model as plain files the evaluator loads without Ludwig.

    `head_dir` gets the category head (its Linear's weight and bias, `head.safetensors`) and
    `head.json` (class labels in Ludwig's index order, the tokenized length, the pooling);
    `adapter_dir` gets the body's PEFT adapter when it has one (a normal PEFT folder, so the held-out
    probes can be generated with it). Ludwig internals: the encoder is
    `input_features[name].encoder_obj` (its `.model` the LLM), the head
    `output_features[name].decoder_obj.dense.dense`, the labels `training_set_metadata[name]["idx2str"]`.

    Returns:
        Whether the body had an adapter (then `adapter_dir` was written).
    """
    import shutil

    from safetensors.torch import save_file

    from ftpipe.files import replace_folder, write_json_atomic

    ecd, config = model.model, model.config_obj
    in_name, out_name = config.input_features[0].name, config.output_features[0].name
    encoder = ecd.input_features.get(in_name).encoder_obj
    linear = ecd.output_features.get(out_name).decoder_obj.dense.dense
    tmp = head_dir.with_name(f".{head_dir.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({"weight": linear.weight.detach().cpu().contiguous(), "bias": linear.bias.detach().cpu().contiguous()},
              str(tmp / HEAD_WEIGHTS))
    preprocessing = config.input_features[0].preprocessing
    write_json_atomic(tmp / HEAD_CONFIG, {
        "labels": list(model.training_set_metadata[out_name]["idx2str"]),
        "sequence_length": preprocessing.sequence_length, "pooling": "last",
        "body": "lora" if encoder.config.adapter else "frozen",
    })
    replace_folder(tmp, head_dir)
    if not encoder.config.adapter:
        return False
    tmp = adapter_dir.with_name(f".{adapter_dir.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    encoder.model.save_pretrained(str(tmp))
    replace_folder(tmp, adapter_dir)
    return True


# --------------------------------------------------------------------------------------------
# Workaround 5 (issue 15): preference tuning. Upstream bug: Ludwig 0.17's `trainer: {type: dpo}`
# (and kto, orpo, grpo, which subclass it) keeps no reference model (trainers/trainer_dpo.py:46-50),
# finds the rejected reply only under a target whose name contains "rejected" (:76-82), which an LLM
# config cannot have (one text input, one output), and otherwise trains plain cross-entropy on the
# chosen reply without a word (:110-120); it also refuses adapters. check_config refuses those
# trainer types. Instead ftpipe keeps the finetune trainer with its adapter, packs each pair into the
# one target as `chosen SEP rejected` (ftpipe.data.rendering.preference_separator), and a callback
# swaps the trainer's train_step for a DPO or ORPO step that splits the target at SEP and runs
# Ludwig's own LLM.forward and label alignment on each reply; DPO's reference is the same model with
# its PEFT adapter disabled.
#
#   logp(y) = sum over y's tokens and the EOS Ludwig appends of log p(y_t | x, y_<t)
#   DPO:  loss = mean_i -log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r)))
#   ORPO: loss = NLL(chosen, token mean) - beta * mean_i log sigmoid(log odds(c) - log odds(r)),
#         log odds(y) = m - log(1 - exp(m)), m = logp(y) / tokens(y)
# --------------------------------------------------------------------------------------------

STOCK_PREFERENCE_TRAINERS = ("dpo", "kto", "orpo", "grpo")
IGNORE_INDEX = -100


def stock_dpo_is_reference_free() -> bool:
    """True while stock DPOTrainer has no reference model and falls back to cross-entropy (the bug is there)."""
    import inspect

    from ludwig.trainers.trainer_dpo import DPOTrainer

    return ("_reference_chosen_log_probs = None" in inspect.getsource(DPOTrainer.__init__)
            and "train_loss(" in inspect.getsource(DPOTrainer.train_step))


def split_packed_target(packed, sep_id: int, pad_id: int):
    """[B, T] left-padded `chosen SEP rejected` token ids -> (chosen, rejected), each left-padded [B, *].

    Raises:
        TrainError: A row does not hold exactly one separator (the data layer refuses such rows).
    """
    import torch

    chosen, rejected = [], []
    for row in packed:
        tokens = row[row != pad_id]
        where = (tokens == sep_id).nonzero()
        if len(where) != 1:
            raise TrainError(f"a preference target holds {len(where)} separator tokens (id {sep_id}), not 1",
                             hint="this is an ftpipe bug: the data layer packs exactly one; please report it")
        k = int(where[0])
        chosen.append(tokens[:k])
        rejected.append(tokens[k + 1:])

    def left_pad(rows):
        width = max(1, max(len(r) for r in rows))
        out = torch.full((len(rows), width), pad_id, dtype=packed.dtype, device=packed.device)
        for i, r in enumerate(rows):
            if len(r):
                out[i, width - len(r):] = r
        return out

    return left_pad(chosen), left_pad(rejected)


def completion_logps(llm, forward, inputs: dict, name: str, completion):
    """Ludwig's forward on prompt + completion: (sum of the completion's log-probs [B], its token counts [B], used tokens).

    The labels come from Ludwig's own SFT alignment (LLM._update_target_tensor_for_finetuning: the
    completion and an EOS, -100 elsewhere), so truncation by global_max_sequence_length is respected.
    """
    import torch

    outputs = forward((dict(inputs), {name: completion.clone()}))
    labels = llm._update_target_tensor_for_finetuning({name: completion.clone()}, {name: outputs}, name)[name]
    logits, labels = outputs["logits"][:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    token_logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logp * mask).sum(-1), mask.sum(-1), int(outputs.get("used_tokens", 0))


def preference_loss(llm, forward, inputs: dict, targets: dict, *, loss: str, beta: float, sep_id: int):
    """One batch's DPO or ORPO loss (with gradient), its parts (detached, for tests and logs) and the tokens used.

    Args:
        llm: Ludwig's LLM model (LudwigModel.model).
        forward: What runs it: the trainer's dist_model while training, else `llm` itself.
        inputs, targets: Ludwig's batch ({prompt: ids}, {target: packed ids}).
        loss: "dpo" or "orpo".
        beta: DPO's beta, or ORPO's weight of the odds-ratio term.
        sep_id: Token id of the separator between the chosen and the rejected reply.
    """
    import torch
    import torch.nn.functional as F
    from peft import PeftModel

    name = llm.config_obj.output_features[0].name
    chosen, rejected = split_packed_target(targets[name], sep_id, llm.tokenizer.pad_token_id)
    lp_c, n_c, used_c = completion_logps(llm, forward, inputs, name, chosen)
    lp_r, n_r, used_r = completion_logps(llm, forward, inputs, name, rejected)
    parts = {"logp_chosen": lp_c.detach(), "logp_rejected": lp_r.detach()}
    if loss == "dpo":
        if not isinstance(llm.model, PeftModel):
            raise TrainError("DPO needs a PEFT adapter: its reference is the base model with the adapter disabled",
                             hint="use adapter lora or qlora, or preference.loss orpo")
        with torch.no_grad(), llm.model.disable_adapter():
            ref_c = completion_logps(llm, llm, inputs, name, chosen)[0]
            ref_r = completion_logps(llm, llm, inputs, name, rejected)[0]
        value = -F.logsigmoid(beta * ((lp_c - ref_c) - (lp_r - ref_r))).mean()
        parts.update(ref_chosen=ref_c, ref_rejected=ref_r)
    elif loss == "orpo":
        mean_c, mean_r = lp_c / n_c, lp_r / n_r
        log_odds = (mean_c - torch.log1p(-torch.exp(mean_c))) - (mean_r - torch.log1p(-torch.exp(mean_r)))
        nll = -lp_c.sum() / n_c.sum()  # token-mean NLL of the chosen replies: Ludwig's SFT loss on them
        value = nll - beta * F.logsigmoid(log_odds).mean()
        parts.update(nll=nll.detach(), log_odds=log_odds.detach())
    else:
        raise ValueError(f"unknown preference loss {loss!r}")
    return value, parts, used_c + used_r


def make_preference_callback(loss: str, beta: float, sep_id: int, record: list | None = None):
    """A Ludwig callback turning the finetune trainer's train_step into a DPO or ORPO step.

    Put it before callbacks that wrap train_step (the progress callback), so they see this step.
    The step keeps Ludwig's AMP, gradient accumulation, clipping and optimizer handling
    (trainers/trainer.py `_backward_pass`, `_optimizer_step`); it returns an int token count, as
    the trainer saves it in training_progress.json. `record`, when given, gets each step's loss and parts.
    """
    import_ludwig()
    from ludwig.callbacks import Callback

    class _Preference(Callback):
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator, **kwargs):
            import torch

            def train_step(inputs, targets, should_step=True, profiler=None):
                with torch.amp.autocast("cuda") if trainer.use_amp else contextlib.nullcontext():
                    with trainer.distributed.prepare_model_update(trainer.dist_model, should_step=should_step):
                        value, parts, used = preference_loss(trainer.model, trainer.dist_model, inputs, targets,
                                                             loss=loss, beta=beta, sep_id=sep_id)
                        value = value / trainer.gradient_accumulation_steps
                if record is not None:
                    record.append({"loss": float(value.detach()), **{k: v.tolist() for k, v in parts.items()}})
                trainer._backward_pass(value)
                if should_step:
                    trainer._optimizer_step(trainer.dist_model.parameters())
                    trainer.distributed.zero_grad(trainer.optimizer)
                    if profiler:
                        profiler.step()
                return value, {}, used

            trainer.train_step = train_step

    return _Preference()


# --------------------------------------------------------------------------------------------
# Speed-up 1 (issue 16): lean training steps. Per step, Ludwig's finetune trainer does work nobody reads: (a) `_update_training_metrics` decodes every row and
# computes the loss three more times (one a softmax of the softmax), only for training-set metrics
# in training_statistics.json; (b) LLM.forward's predictions() takes a softmax over the whole
# vocabulary and keeps it in the graph; (c) NextTokenSoftmaxCrossEntropyLoss slices the logits
# (`preds[:, :-1, :]`), which copies them and makes the backward allocate a zero-filled full-size
# gradient. Fixes: (a) keep only the combined training loss, from the loss already computed (ftpipe
# logs every step's loss itself, training/loss.jsonl; the per-feature training metrics become NaN,
# validation metrics are untouched); (b) argmax only in training forwards (the
# target realignment reads the predictions' shape); (c) shift the labels instead, as transformers
# does: the same (logit, label) pairs and mean, so the same loss; (d) the LM head computes logits at
# every position, prompt included, though only target positions have a label: Ludwig left-pads the
# merged prompt + target, so every row's target ends at the last position, and a training forward
# asks transformers for the logits of the last (longest target + 2) positions only (`logits_to_keep`);
# the LM head (a fifth of SmolLM2's matmul weights) and the loss's softmax then run on those.
# --------------------------------------------------------------------------------------------


def loss_slices_logits() -> bool:
    """True while stock Ludwig's next-token loss slices the logits (speed-up 1c)."""
    import inspect

    from ludwig.modules.loss_modules import NextTokenSoftmaxCrossEntropyLoss

    forward = NextTokenSoftmaxCrossEntropyLoss.forward
    return "preds[:, :-1, :]" in inspect.getsource(getattr(forward, "_ftpipe_original", forward))


def training_step_updates_metrics() -> bool:
    """True while stock Trainer.train_step computes training-set metrics after every step (speed-up 1a)."""
    import inspect

    from ludwig.trainers.trainer import Trainer

    return "self._update_training_metrics(" in inspect.getsource(Trainer.train_step)


def sequence_predictions_take_softmax() -> bool:
    """True while stock text predictions() compute full-vocabulary probabilities (speed-up 1b)."""
    import inspect

    from ludwig.features.sequence_feature import _SequencePredict

    return "torch.softmax" in inspect.getsource(_SequencePredict.forward)


def _patch_shifted_label_loss() -> None:
    import torch.nn.functional as F
    from ludwig.modules.loss_modules import NextTokenSoftmaxCrossEntropyLoss

    if hasattr(NextTokenSoftmaxCrossEntropyLoss.forward, "_ftpipe_original"):
        return
    original = NextTokenSoftmaxCrossEntropyLoss.forward

    def forward(self, preds, target):
        # the label of position i is target[i + 1]; the last position has none (-100 is ignored)
        labels = F.pad(target.long()[:, 1:], (0, 1), value=IGNORE_INDEX)
        kept = preds.shape[1]
        if kept < labels.shape[1]:  # speed-up 1d: logits of the last `kept` positions only
            if (labels[:, : labels.shape[1] - kept] != IGNORE_INDEX).any():
                raise TrainError(f"ftpipe's lean step kept the logits of the last {kept} positions, but a target "
                                 "token lies before them (an ftpipe bug: please report it with the spec)")
            labels = labels[:, -kept:]
        return self.loss_fn(preds.reshape(-1, preds.shape[-1]), labels.reshape(-1))

    forward._ftpipe_original = original
    NextTokenSoftmaxCrossEntropyLoss.forward = forward


def make_lean(trainer) -> None:
    """Speed-up 1a and 1b on one trainer (from a callback's on_trainer_train_setup; idempotent)."""
    import torch
    from ludwig.constants import MODEL_LLM
    from ludwig.features.sequence_feature import _SequencePredict
    from ludwig.utils import output_feature_utils

    if getattr(trainer, "_ftpipe_lean", False):
        return
    trainer._ftpipe_lean = True
    original_forward_pass = trainer._forward_pass
    last_loss: list[float] = []

    def forward_pass(inputs, targets, should_step, *args, **kwargs):
        with suffix.covering(model, targets) if suffix is not None else contextlib.nullcontext():
            outputs, loss, all_losses = original_forward_pass(inputs, targets, should_step, *args, **kwargs)
        last_loss[:] = [float(loss.detach()) * trainer.gradient_accumulation_steps]  # undo the trainer's division
        return outputs, loss, all_losses

    def update_training_metrics(model_outputs, targets):
        # Only the combined loss (the training curve of training_statistics.json, read by the fit
        # diagnosis): Ludwig reports it as loss + additional losses, both already in the train loss.
        if not trainer.evaluate_training_set and last_loss:
            trainer.model.eval_loss_metric.update(last_loss[0])
            trainer.model.eval_additional_losses_metrics.update(0.0)

    model = trainer.model
    if model.type() != MODEL_LLM:
        return  # an ECD head's metrics are cheap, and skipping them leaves roc_auc with no samples (a logged traceback)
    suffix = _keep_suffix_logits(model)
    trainer._forward_pass = forward_pass
    trainer._update_training_metrics = update_training_metrics
    validating = _make_validation_lean(trainer, model, suffix)
    for feature in model.output_features.values():
        predict = feature.prediction_module
        if not isinstance(predict, _SequencePredict) or getattr(predict, "_ftpipe_lean", False):
            continue
        original_predict = predict.forward

        def lean_predict(inputs, feature_name, _predict=predict, _original=original_predict):
            if not (model.training and torch.is_grad_enabled()) and not validating:
                return _original(inputs, feature_name)  # evaluation keeps its probabilities
            logits = output_feature_utils.get_output_feature_tensor(inputs, feature_name, _predict.logits_key)
            predictions = torch.argmax(logits.detach(), -1)
            width = model.model_inputs.shape[1]
            if predictions.shape[1] < width:  # speed-up 1d: the target realignment needs the full width
                full = predictions.new_full((predictions.shape[0], width), model.tokenizer.pad_token_id)
                full[:, width - predictions.shape[1]:] = predictions
                predictions = full
            return {_predict.predictions_key: predictions, _predict.logits_key: logits}

        predict.forward = lean_predict
        predict._ftpipe_lean = True


class _Flag:
    def __init__(self):
        self.on = False

    def __bool__(self) -> bool:
        return self.on


def _make_validation_lean(trainer, model, suffix) -> _Flag:
    """Speed-up 1e: Ludwig's checkpoint validation, reduced to what is read of it, the validation loss (the
    best-checkpoint choice and the report's curve): suffix logits, no probabilities, no other metrics
    (Ludwig's LLM metrics are wrong anyway, shared/LUDWIG.md; they become NaN). The same loss."""
    validating = _Flag()
    original_evaluation, original_forward = trainer.evaluation, model.forward
    original_update = model.update_metrics_finetune_llm

    def evaluation(*args, **kwargs):
        validating.on = True
        try:
            return original_evaluation(*args, **kwargs)
        finally:
            validating.on = False

    def forward(inputs, *args, **kwargs):
        if not (validating and suffix is not None and isinstance(inputs, tuple) and inputs[1]):
            return original_forward(inputs, *args, **kwargs)
        with suffix.covering(model, inputs[1]):
            return original_forward(inputs, *args, **kwargs)

    def update_metrics_finetune_llm(targets, predictions):
        if not validating:
            return original_update(targets, predictions)
        for of_name, feature in model.output_features.items():
            targets = model._update_target_tensor_for_finetuning(targets, predictions, of_name)
            logits = predictions[of_name][feature.prediction_module.logits_key].detach()
            feature._metric_functions["loss"].to(logits.device).update(logits, targets[of_name])
        eval_loss, additional_losses = model.eval_loss(targets, predictions)
        model.eval_loss_metric.update(eval_loss)
        model.eval_additional_losses_metrics.update(additional_losses)

    trainer.evaluation = evaluation
    model.forward = forward
    model.update_metrics_finetune_llm = update_metrics_finetune_llm
    return validating


class _LogitsSuffix:
    """How many last positions the running lean forward (a training step or Ludwig's validation pass)
    computes logits for (None: all)."""

    length: int | None = None

    @contextlib.contextmanager
    def covering(self, model, targets):
        """Keep the positions that cover these targets while the block runs."""
        self.length = target_suffix_length(model, targets)
        try:
            yield
        finally:
            self.length = None


def target_suffix_length(model, targets) -> int:
    """Positions from the end that cover every row's target + EOS and the position predicting its first token."""
    from ludwig.utils.llm_utils import remove_left_padding

    of_name = next(iter(model.output_features))
    return max(remove_left_padding(row, model.tokenizer)[0].shape[0] for row in targets[of_name]) + 2


def _keep_suffix_logits(model) -> _LogitsSuffix | None:
    """Speed-up 1d on one Ludwig LLM: a forward pre-hook passes `logits_to_keep` while `_LogitsSuffix.covering` runs.
    Not for packed batches (targets inside the pack) or soft prompts (virtual tokens re-lay the sequence)."""
    import inspect

    from ludwig.constants import TEXT

    if model.output_feature_type != TEXT or getattr(model.config_obj.trainer, "packing", False):
        return None
    peft_configs = getattr(model.model, "peft_config", {}) or {}
    if any(getattr(c, "is_prompt_learning", False) for c in peft_configs.values()):
        return None
    hf = model.model.get_base_model() if hasattr(model.model, "get_base_model") else model.model
    if "logits_to_keep" not in inspect.signature(hf.forward).parameters:
        return None
    suffix = _LogitsSuffix()

    def pass_length(module, args, kwargs):
        if suffix.length is not None:  # set only inside a training step or Ludwig's validation pass
            kwargs = {**kwargs, "logits_to_keep": suffix.length}
        return args, kwargs

    model.model.register_forward_pre_hook(pass_length, with_kwargs=True)
    return suffix


@dataclass(frozen=True)
class StepOptions:
    """ftpipe's own training options (not Ludwig config keys) that train_model applies around Ludwig.

    lean: the lean step (speed-up 1; off only to compare with stock Ludwig). group_by_length: length-grouped
    batches (speed-up 2); group_batches: batches per sorted group (None: the whole epoch). bf16: bf16 autocast
    of the training forward (speed-up 4).
    """

    lean: bool = True
    group_by_length: bool = True
    group_batches: int | None = 8
    bf16: bool = False


# --------------------------------------------------------------------------------------------
# Speed-up 2 (issue 16): length-grouped batches. Ludwig cuts training batches from a random
# permutation of the rows (data/sampler.py DistributedSampler, np.random.RandomState(seed + epoch)),
# so a batch pads to its longest row: ~10% of the tokens are padding on the demo data. Callbacks
# never see the batcher, so PandasDataset.initialize_batcher is wrapped: while train_model runs with
# group_by_length, a shuffled (= training) batcher gets a sampler that draws Ludwig's own permutation,
# sorts it by token length within groups of `group_batches` batches, and shuffles the batch order;
# every epoch re-draws (the trainer calls set_epoch). Evaluation batchers are not shuffled: untouched.
# --------------------------------------------------------------------------------------------

_ACTIVE = StepOptions(group_by_length=False)  # what the running train_model asked for


def batcher_has_no_length_grouping() -> bool:
    """True while stock PandasDataset.initialize_batcher builds a plain DistributedSampler (speed-up 2)."""
    import inspect

    from ludwig.data.dataset.pandas import PandasDataset

    batcher = PandasDataset.initialize_batcher
    source = inspect.getsource(getattr(batcher, "_ftpipe_original", batcher))
    return "DistributedSampler(" in source and "length" not in source.replace("len(self)", "").lower()


def row_token_counts(dataset) -> "np.ndarray":
    """Tokens of each row: non-zero ids summed over the dataset's token-id columns (pad id 0 never occurs in text)."""
    import numpy as np

    total = np.zeros(len(dataset), dtype=np.int64)
    for name in dataset.features:
        column = dataset.dataset.get(name)
        if column is None:
            continue
        ids = np.asarray(column.tolist() if column.dtype == object else column)
        if ids.ndim == 2 and np.issubdtype(ids.dtype, np.integer):
            total += np.count_nonzero(ids, axis=1)
    return total


class LengthGroupedSampler:
    """Ludwig's DistributedSampler interface (iter, len, set_epoch), yielding length-grouped batches."""

    def __init__(self, lengths, batcher, stock, group_batches: int | None):
        import numpy as np

        self.lengths, self.batcher, self.group_batches = np.asarray(lengths), batcher, group_batches
        self.random_seed, self.num_replicas, self.rank = stock.random_seed, stock.num_replicas, stock.rank
        self.num_samples, self.total_size, self.epoch = stock.num_samples, stock.total_size, stock.epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def order(self) -> list[int]:
        import numpy as np

        rng = np.random.RandomState(self.random_seed + self.epoch)  # Ludwig's own draw for this epoch
        perm = rng.permutation(len(self.lengths))
        perm = np.concatenate([perm, perm[: self.total_size - len(perm)]])  # padded to split evenly, as Ludwig does
        step = self.batcher.batch_size * self.num_replicas  # read now: Ludwig may change the batch size per epoch
        size = step * self.group_batches if self.group_batches else len(perm)
        batches = []
        for start in range(0, len(perm), size):
            group = perm[start:start + size]
            group = group[np.argsort(-self.lengths[group], kind="stable")]  # equal lengths keep the random order
            batches += [group[i:i + step] for i in range(0, len(group), step)]
        rng.shuffle(batches)
        # The batcher takes batch_size ids at a time from the flat list: a short batch in the middle would
        # shift every later batch across group boundaries, so short ones go last.
        batches = [b for b in batches if len(b) == step] + [b for b in batches if len(b) != step]
        return [int(i) for b in batches for i in b]

    def __iter__(self):
        return iter(self.order()[self.rank:self.total_size:self.num_replicas])  # rank r's share, as Ludwig's


def _patch_length_grouping() -> None:
    from ludwig.data.dataset.pandas import PandasDataset

    if hasattr(PandasDataset.initialize_batcher, "_ftpipe_original"):
        return
    original = PandasDataset.initialize_batcher

    @contextlib.contextmanager
    def initialize_batcher(self, *args, **kwargs):
        with original(self, *args, **kwargs) as batcher:
            shuffled = kwargs.get("should_shuffle", args[1] if len(args) > 1 else True)
            # prefetching batchers (lazy image/audio columns) read the sampler in a thread: left alone
            if _ACTIVE.group_by_length and shuffled and getattr(batcher, "_prefetch_size", 0) == 0:
                batcher.sampler = LengthGroupedSampler(row_token_counts(self), batcher, batcher.sampler,
                                                       _ACTIVE.group_batches)
                batcher.sample_it = iter(batcher.sampler)
            yield batcher

    initialize_batcher._ftpipe_original = original
    PandasDataset.initialize_batcher = initialize_batcher


# --------------------------------------------------------------------------------------------
# Speed-up 3 (issue 16): packing (`training.packing`). Upstream: `trainer.packing` exists only on
# LLMTrainerConfig (schema/trainer.py:673-686); FineTuneTrainerConfig subclasses ECD's trainer
# config, so a finetune config drops the key ("will be ignored"). Its packed path could not be used
# anyway: it hands transformers a 3-D mask (5.x's sdpa_mask fails to expand it), packs only up to
# global_max_sequence_length, keeps positions running across rows, and realigns targets row by row
# against packs (utils/llm_utils.py:526-587), so labels would be wrong. Fix: register the fields on
# the finetune trainer schema (plus packing_max_tokens, the pack width) and replace the packed
# forward: rows (prompt + target + EOS) packed first-fit decreasing, position ids restarting at 0
# per row, no attention mask and no cache, so transformers builds a block-diagonal causal mask from
# the position ids (masking_utils.find_packed_sequence_indices). use_cache=False matters: with a
# cache (the config default, created even in training) the detection is skipped and rows see each
# other. Labels (target + EOS, -100 elsewhere) go to Ludwig's unchanged loss.
# --------------------------------------------------------------------------------------------


def finetune_trainer_drops_packing() -> bool:
    """True while stock Ludwig's finetune trainer config has no `packing` field (speed-up 3)."""
    from ludwig.schema.trainer import FineTuneTrainerConfig

    return "packing" not in FineTuneTrainerConfig.model_fields  # the stock class itself is never changed


def llm_packing_passes_3d_mask() -> bool:
    """True while stock Ludwig's packed path builds its own [packs, L, L] mask instead of position ids (speed-up 3)."""
    import inspect

    from ludwig.utils import llm_utils

    return "position_ids" not in inspect.getsource(llm_utils.generate_merged_ids_packed)


def _register_packing_fields() -> None:
    from ludwig.config_validation.validation import get_schema
    from ludwig.schema import utils as schema_utils
    from ludwig.schema.trainer import FineTuneTrainerConfig, _llm_trainer_schema_registry, register_llm_trainer_schema

    if "packing" in _llm_trainer_schema_registry["finetune"].model_fields:
        return

    @register_llm_trainer_schema("finetune")
    class PackingFineTuneTrainerConfig(FineTuneTrainerConfig):
        packing: bool = schema_utils.Boolean(default=False, description="Pack several rows into each sequence (ftpipe).")
        packing_max_sequences_per_pack: int = schema_utils.PositiveInteger(default=8, description="Rows per pack at most.")
        packing_max_tokens: int | None = schema_utils.PositiveInteger(
            default=None, allow_none=True, description="Tokens per pack at most; null: global_max_sequence_length.")

    get_schema.cache_clear()


def pack_rows(prompts, targets, eos_id: int, width: int, max_rows: int):
    """Left-padded prompt and target ids [B, *] -> (ids, position_ids, labels) [packs, W], right-padded with 0.

    First-fit decreasing into packs of at most `width` tokens and `max_rows` rows (a longer row gets a pack of
    its own); positions restart at 0 per row; labels are the target tokens and an EOS, -100 elsewhere.
    """
    import torch

    rows = []
    for p, t in zip(prompts, targets):
        p, t = p[p != 0].long(), t[t != 0].long()  # pad id 0 never occurs in text (ftpipe's store)
        rows.append((p, torch.cat([t, t.new_tensor([eos_id])])))
    packs: list[list] = []
    for row in sorted(rows, key=lambda r: -(len(r[0]) + len(r[1]))):
        n = len(row[0]) + len(row[1])
        pack = next((k for k in packs if sum(len(p) + len(t) for p, t in k) + n <= width and len(k) < max_rows), None)
        if pack is None:
            packs.append([row])
        else:
            pack.append(row)
    w = max(sum(len(p) + len(t) for p, t in k) for k in packs)
    ids = torch.zeros((len(packs), w), dtype=torch.long)
    positions, labels = torch.zeros_like(ids), torch.full_like(ids, IGNORE_INDEX)
    for k, pack in enumerate(packs):
        at = 0
        for p, t in pack:
            n = len(p) + len(t)
            ids[k, at:at + n] = torch.cat([p, t])
            positions[k, at:at + n] = torch.arange(n)
            labels[k, at + len(p):at + n] = t
            at += n
        positions[k, at:] = torch.arange(w - at)  # the tail padding is a block of its own, with no labels
    return ids, positions, labels


def _patch_packed_forward() -> None:
    from ludwig.constants import LOGITS, PREDICTIONS, USED_TOKENS
    from ludwig.models.llm import LLM

    if hasattr(LLM.forward, "_ftpipe_unpacked"):
        return
    unpacked_forward, unpacked_align = LLM.forward, LLM._update_target_tensor_for_finetuning

    def forward(self, inputs, mask=None):
        import torch

        trainer = getattr(self.config_obj, "trainer", None)
        input_ids, target_ids = self._unpack_inputs(inputs)
        self._ftpipe_packed_labels = None
        if not (getattr(trainer, "packing", False) and self.training and target_ids is not None):
            return unpacked_forward(self, inputs, mask)
        ids, positions, labels = pack_rows(input_ids, target_ids, self.tokenizer.eos_token_id,
                                           getattr(trainer, "packing_max_tokens", None) or self.global_max_sequence_length,
                                           getattr(trainer, "packing_max_sequences_per_pack", 8))
        device = input_ids.device
        self.model_inputs, self.attention_masks = ids.to(device), torch.ones_like(ids, device=device)
        self._ftpipe_packed_labels = labels.to(device)
        logits = self.model(input_ids=self.model_inputs, position_ids=positions.to(device), use_cache=False).get(LOGITS)
        # what LLM.forward returns after predictions(), less the probabilities (speed-up 1b)
        return {LOGITS: logits.float(), PREDICTIONS: torch.argmax(logits.detach(), -1),
                USED_TOKENS: int((ids != 0).sum())}

    def align(self, targets, predictions, of_name):
        labels = getattr(self, "_ftpipe_packed_labels", None)
        if labels is None:
            return unpacked_align(self, targets, predictions, of_name)
        targets[of_name] = labels  # as upstream, the caller's dict is updated in place
        return targets

    forward._ftpipe_unpacked = unpacked_forward
    forward._ftpipe_original = getattr(unpacked_forward, "_ftpipe_original", unpacked_forward)  # stock, for detectors
    LLM.forward = forward
    LLM._update_target_tensor_for_finetuning = align


# --------------------------------------------------------------------------------------------
# Speed-up 4 (issue 16): `training.precision: bf16`. Ludwig 0.17's only mixed precision is fp16 AMP
# on CUDA (trainers/trainer.py: `torch.amp.autocast("cuda")` with a GradScaler); on CPU it trains fp32.
# Fix: autocast the trainer's forward pass (model forward + loss) to bf16. The backward runs outside
# the context, as PyTorch recommends; bf16 needs no GradScaler; Ludwig casts the logits to fp32
# before the loss; master weights and AdamW stay fp32. Validation passes stay fp32.
# Autocast caches its bf16 casts only for weights that require grad, so with LoRA it re-casts every
# frozen fp32 Linear weight in every forward (134.5M values per SmolLM2 step). The forward instead
# swaps in bf16 copies of those weights, cast once: the same rounded values, so the same loss and
# gradients, 1.17x faster forward + backward on SmolLM2 (measured 2026-12-03), for half the frozen
# weights' memory again. The fp32 weights are back in place before anything else reads the model
# (backward reads the bf16 tensors autograd saved; validation and checkpoints see fp32).
# --------------------------------------------------------------------------------------------


def ludwig_has_no_bf16_training() -> bool:
    """True while stock Ludwig's trainer autocasts only to CUDA fp16 (speed-up 4)."""
    import inspect

    from ludwig.trainers.trainer import Trainer

    return "bfloat16" not in inspect.getsource(Trainer)


def bf16_unsupported(device: str) -> str | None:
    """Why bf16 autocast cannot run fast on `device` ("cpu" or "cuda"), or None when it can."""
    import torch

    if device.startswith("cuda"):
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # without AVX512-BF16 or AMX, bf16 is emulated: slower
        return "this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 would be slower than fp32"
    return None


def enable_bf16_autocast(trainer) -> None:
    """Run `trainer._forward_pass` under bf16 autocast (idempotent).

    Raises:
        TrainError: The device has no native bf16.
    """
    import torch

    if getattr(trainer, "_ftpipe_bf16", False):
        return
    device = "cuda" if str(trainer.device).startswith("cuda") else "cpu"
    why = bf16_unsupported(device)
    if why:
        raise TrainError(f"training.precision bf16: {why}", hint="use precision auto (fp32 on CPU)")
    original = trainer._forward_pass
    frozen = FrozenBf16Weights(trainer.model)

    def forward_pass(*args, **kwargs):
        with frozen.swapped_in(), torch.autocast(device, dtype=torch.bfloat16):
            return original(*args, **kwargs)

    trainer._forward_pass = forward_pass
    trainer._ftpipe_bf16 = True
    trainer._ftpipe_frozen_bf16 = frozen


class FrozenBf16Weights:
    """bf16 copies of a model's frozen fp32 Linear weights, cast once, swapped in for a forward."""

    def __init__(self, model) -> None:
        self._model = model
        self._slots: list[tuple[Any, Any, Any]] | None = None  # (Linear, its fp32 weight, the bf16 copy); None: not built

    def _build(self) -> None:
        import torch

        copies: dict[int, Any] = {}  # tied weights (SmolLM2's LM head and embedding) share one copy
        self._slots = []
        for module in self._model.modules():
            weight = module._parameters.get("weight") if isinstance(module, torch.nn.Linear) else None
            if weight is None or weight.requires_grad or weight.dtype != torch.float32:
                continue  # trained weights are cached by autocast itself; 4-bit or bf16 ones need no copy
            if id(weight) not in copies:
                copies[id(weight)] = torch.nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
            self._slots.append((module, weight, copies[id(weight)]))

    @property
    def count(self) -> int:
        """How many Linear layers get a bf16 copy (0 before the first forward)."""
        return len(self._slots or ())

    @contextlib.contextmanager
    def swapped_in(self):
        # Rebuilt if anything replaced a weight since (a reloaded checkpoint, a merged adapter).
        # A model with no frozen weights (full fine-tuning) is scanned once, not every step.
        if self._slots is None or any(module._parameters.get("weight") is not fp32 for module, fp32, _ in self._slots):
            self._build()
        for module, _, bf16 in self._slots:
            module._parameters["weight"] = bf16
        try:
            yield
        finally:
            for module, fp32, _ in self._slots:
                module._parameters["weight"] = fp32
