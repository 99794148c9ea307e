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
"""

from __future__ import annotations

import json
import logging
import os
import warnings
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
    """Apply the workarounds above once per process."""
    global _PATCHED
    if _PATCHED:
        return
    _patch_adapters_null()
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
                callbacks: list | None = None, quantized: bool = False, backend=None):
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

    Returns:
        (LudwigModel, training statistics from training_statistics.json, path of the saved model folder).
    """
    import_ludwig()
    from ludwig.api import LudwigModel

    output_dir.mkdir(parents=True, exist_ok=True)
    model = LudwigModel(config, logging_level=logging.ERROR, callbacks=callbacks, backend=backend)
    experiment = experiment_folder(output_dir)
    resume_path = str(experiment) if resume and checkpoint_state(output_dir)[0] == "complete" else None
    if resume_path is None and (output_dir / LUDWIG_OUTPUT).exists() and (backend is None or backend.is_coordinator()):
        # Ludwig names a new folder experiment_run_0 when experiment_run exists: start clean instead,
        # so its statistics and checkpoints are always where experiment_folder() says.
        import shutil

        shutil.rmtree(output_dir / LUDWIG_OUTPUT)
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
    saved = output_dir / "model"
    if backend is None or backend.is_coordinator():  # distributed: only rank 0 writes (issue 9)
        model.save(str(saved))
    stats_file = experiment_folder(output_dir) / "training_statistics.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    return model, stats, saved


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
