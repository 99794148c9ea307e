"""The train stage: a compiled config and the training rows in, a trained model folder out.

One process trains through Ludwig directly; `compute.distributed` launches torchrun workers
(ftpipe.training.distributed) whose rank 0 leaves the same artifacts. Either way the run folder
ends up with `training_statistics.json` and `adapter/` (PEFT) or `weights/` (full fine-tuning).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ftpipe import console
from ftpipe.errors import TrainError
from ftpipe.files import write_json_atomic
from ftpipe.spec import PipelineSpec, QloraAdapter
from ftpipe.training import ludwig_compat


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
    world = spec.compute.distributed.world_size()  # each process trains on its own share of the rows
    steps_per_epoch = -(-int((frame["split"] == 0).sum()) // (spec.training.batch_size * world))
    reporter = console.StepReporter("train", spec.training.max_steps or steps_per_epoch * spec.training.epochs)
    callback, model, exported = None, None, None  # exported: distributed full fine-tuning, rank 0 wrote the weights
    try:
        if spec.compute.distributed.strategy != "none":
            from ftpipe.training import distributed

            result = distributed.train_distributed(
                config, frame, train_dir, spec, device=device, resume=resume,
                on_step=console.step_callback(reporter), spec_hash=spec_hash)
            stats, saved, exported = result.stats, result.saved, result.weights
            write_json_atomic(run_dir / "distributed.json", result.summary)
        else:
            callback = ludwig_compat.make_progress_callback(console.step_callback(reporter))
            model, stats, saved = ludwig_compat.train_model(
                config, frame, train_dir, seed=spec.training.seed, resume=resume,
                callbacks=[callback], quantized=isinstance(spec.adapter, QloraAdapter))
    finally:
        reporter.close()
    if callback is not None and callback.was_interrupted():  # a half-trained model must not be evaluated or promoted
        raise KeyboardInterrupt("training interrupted (Ctrl-C)")
    write_json_atomic(run_dir / "training_statistics.json", stats)
    adapter = ludwig_compat.adapter_folder(saved)
    final = run_dir / ("adapter" if adapter else "weights")
    if final.exists():
        shutil.rmtree(final)
    if adapter:
        shutil.copytree(adapter, final)
    elif exported is not None:
        shutil.move(str(exported), str(final))
    else:
        ludwig_compat.export_full_weights(model, final)
    if not any(final.iterdir()):
        raise TrainError(f"no model weights were saved in {final}")
    return TrainedModel(folder=final, statistics=stats)
