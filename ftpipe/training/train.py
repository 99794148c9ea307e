"""The train stage: a compiled config and the training rows in, a trained model folder out.

One process trains through Ludwig directly; `compute.distributed` launches torchrun workers
(ftpipe.training.distributed) whose rank 0 leaves the same artifacts. Either way the run folder
ends up with `training_statistics.json` and `adapter/` (PEFT) or `weights/` (full fine-tuning);
a classification head (an ECD model) leaves `head/`, plus `adapter/` when its body had LoRA.
One-process runs also record `parameters.json`: trainable and total weights, and what ftpipe's
default LoRA (r 8, PEFT's default modules) would train on the same base, for comparison.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from ftpipe import console, faults
from ftpipe.errors import TrainError
from ftpipe.files import read_jsonl, replace_folder, write_json_atomic
from ftpipe.spec import PipelineSpec, QloraAdapter
from ftpipe.training import ludwig_compat
from ftpipe.training.compile import step_options


LOSS_LOG = "loss.jsonl"
PARAMETERS = "parameters.json"
HEAD = "head"


@dataclass
class TrainedModel:
    """Where the stage left the model: `adapter/` or `weights/` in the run folder."""

    folder: Path
    statistics: dict


def checkpoint_state(run_dir: Path) -> tuple[str, str]:
    """("none" | "complete" | "partial", why) of a run's last training checkpoint: may it be resumed?"""
    return ludwig_compat.checkpoint_state(run_dir / "training")


def train(config: dict, frame, run_dir: Path, spec: PipelineSpec, *, device: str, resume: bool,
          spec_hash: str | None = None) -> TrainedModel:
    """Train (resuming Ludwig's last checkpoint when `resume`) and put the model into the run folder.

    Raises:
        TrainError: training failed or saved no weights.
        KeyboardInterrupt: training was stopped with Ctrl-C (a half-trained model is never kept).
    """
    train_dir = run_dir / "training"
    train_dir.mkdir(parents=True, exist_ok=True)
    world = spec.compute.distributed.world_size()  # each process trains on its own share of the rows
    steps_per_epoch = -(-int((frame["split"] == 0).sum()) // (spec.training.batch_size * world))
    reporter = console.StepReporter("train", spec.training.max_steps or steps_per_epoch * spec.training.epochs)
    show = console.step_callback(reporter)
    losses = (train_dir / LOSS_LOG).open("a", encoding="utf-8", buffering=1)  # one line per step, kept on resume

    def on_step(info: dict) -> None:
        losses.write(json.dumps({k: info.get(k) for k in ("step", "epoch", "loss", "learning_rate")}) + "\n")
        show(info)
        faults.step_point(int(info["step"]), steps_per_epoch)

    callback, model, exported = None, None, None  # exported: distributed full fine-tuning, rank 0 wrote the weights
    head = config["model_type"] == "ecd"  # method classification_head
    finished = ludwig_compat.finished_training(train_dir) if resume and not head else None
    try:
        if finished is not None:  # killed after training ended (while placing the model): only the export is left
            stats, saved = finished
            console.log("  training had finished before the run was stopped; using its saved model")
            if ludwig_compat.adapter_folder(saved) is None:
                model = ludwig_compat.load_model(saved)  # full weights are exported from the model
        elif spec.compute.distributed.strategy != "none":
            from ftpipe.training import distributed

            result = distributed.train_distributed(
                config, frame, train_dir, spec, device=device, resume=resume, on_step=on_step, spec_hash=spec_hash)
            stats, saved, exported = result.stats, result.saved, result.weights
            write_json_atomic(run_dir / "distributed.json", result.summary)
        else:
            callback = ludwig_compat.make_progress_callback(on_step)
            callbacks = [callback]
            if spec.method == "preference":  # first, so the progress callback wraps (and reports) its step
                callbacks.insert(0, ludwig_compat.make_preference_callback(
                    spec.preference.loss, spec.preference.beta, preference_separator_id(config["base_model"])))
            model, stats, saved = ludwig_compat.train_model(
                config, frame, train_dir, seed=spec.training.seed, resume=resume,
                callbacks=callbacks, quantized=isinstance(spec.adapter, QloraAdapter), save_model=not head,
                options=ludwig_compat.StepOptions(**step_options(spec)))
    finally:
        reporter.close()
        losses.close()
    if callback is not None and callback.was_interrupted():  # a half-trained model must not be evaluated or promoted
        raise KeyboardInterrupt("training interrupted (Ctrl-C)")
    write_json_atomic(run_dir / "training_statistics.json", stats)
    reference = lora_reference_parameters(config)
    if model is not None:
        write_json_atomic(run_dir / PARAMETERS, {**ludwig_compat.trainable_parameters(model), "lora_reference": reference})
    if head:
        ludwig_compat.export_classification_head(model, run_dir / HEAD, run_dir / "adapter")
        return TrainedModel(folder=run_dir / HEAD, statistics=stats)
    adapter = ludwig_compat.adapter_folder(saved)
    final = run_dir / ("adapter" if adapter else "weights")
    if adapter:
        _place_copy(adapter, final)
    elif exported is not None:
        replace_folder(exported, final)
    else:
        ludwig_compat.export_full_weights(model, final)
    if not any(final.iterdir()):
        raise TrainError(f"no model weights were saved in {final}")
    if model is None:  # distributed: the ranks' model is gone; count what they saved
        write_json_atomic(run_dir / PARAMETERS, {**saved_parameters(final, reference), "lora_reference": reference})
    return TrainedModel(folder=final, statistics=stats)


def saved_parameters(folder: Path, reference: dict) -> dict[str, int]:
    """{"trainable", "total"} from a saved adapter/ (its tensors on top of the base) or weights/ folder (all of them)."""
    from safetensors import safe_open

    count = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                count += math.prod(f.get_slice(key).get_shape())
    if folder.name == "adapter":
        return {"trainable": count, "total": reference["base_total"] + count}
    return {"trainable": count, "total": count}


def preference_separator_id(base_model: str) -> int:
    """Token id of the separator the data layer packed each preference pair with (same tokenizer, same rule)."""
    from ftpipe.data import load_tokenizer
    from ftpipe.data.rendering import preference_separator

    tokenizer = load_tokenizer(base_model)
    return int(tokenizer.convert_tokens_to_ids(preference_separator(tokenizer)))


def lora_reference_parameters(config: dict) -> dict:
    """What ftpipe's default LoRA (r 8, PEFT's default target modules) trains on this base: the yardstick
    the report puts next to every run's trainable count. Built on the meta device: no weights are read."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    base = config.get("base_model") or config["input_features"][0]["encoder"]["base_model"]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM"))
    trainable, total = peft_model.get_nb_trainable_parameters()
    modules = sorted(peft_model.peft_config["default"].target_modules)
    return {"r": 8, "target_modules": modules, "trainable": int(trainable), "base_total": int(total - trainable)}


def _place_copy(source: Path, final: Path) -> None:
    """Copy a folder into place through a temporary sibling, so `final` is complete or absent."""
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for i, f in enumerate(sorted(p for p in source.iterdir() if p.is_file())):
        shutil.copy2(f, tmp / f.name)
        if i == 0:
            faults.point("train:adapter")
    replace_folder(tmp, final)


def read_losses(run_dir: Path) -> list[dict]:
    """The per-step losses the train stage logged (every attempt; a line cut by a kill is skipped)."""
    return read_jsonl(run_dir / "training" / LOSS_LOG)
