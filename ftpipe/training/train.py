"""The train stage: a compiled config and the training rows in, a trained model folder out.

One process trains through Ludwig directly; `compute.distributed` launches torchrun workers
(ftpipe.training.distributed) whose rank 0 leaves the same artifacts. Either way the run folder
ends up with `training_statistics.json` and `adapter/` (PEFT) or `weights/` (full fine-tuning).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ftpipe import console, faults
from ftpipe.errors import TrainError
from ftpipe.files import read_jsonl, replace_folder, write_json_atomic
from ftpipe.spec import PipelineSpec, QloraAdapter
from ftpipe.training import ludwig_compat


LOSS_LOG = "loss.jsonl"


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
    try:
        if spec.compute.distributed.strategy != "none":
            from ftpipe.training import distributed

            result = distributed.train_distributed(
                config, frame, train_dir, spec, device=device, resume=resume, on_step=on_step, spec_hash=spec_hash)
            stats, saved, exported = result.stats, result.saved, result.weights
            write_json_atomic(run_dir / "distributed.json", result.summary)
        else:
            callback = ludwig_compat.make_progress_callback(on_step)
            model, stats, saved = ludwig_compat.train_model(
                config, frame, train_dir, seed=spec.training.seed, resume=resume,
                callbacks=[callback], quantized=isinstance(spec.adapter, QloraAdapter))
    finally:
        reporter.close()
        losses.close()
    if callback is not None and callback.was_interrupted():  # a half-trained model must not be evaluated or promoted
        raise KeyboardInterrupt("training interrupted (Ctrl-C)")
    write_json_atomic(run_dir / "training_statistics.json", stats)
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
    return TrainedModel(folder=final, statistics=stats)


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
