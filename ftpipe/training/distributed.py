"""Scale-out (issue 9): train one spec on several processes and machines, launched by torchrun.

No distributed machinery of our own. torchrun starts the processes (and spans machines); Ludwig's
Accelerate strategy, wired in by the "distributed training" workaround in ludwig_compat, does
DDP / FSDP / DeepSpeed. This module only glues them together:

- `train_distributed` (called by the train stage, ftpipe.training.train, in the `ftpipe run` process) writes a job folder
  `training/_dist/` (the compiled config, the training rows, the strategy settings), runs torchrun,
  streams rank 0's progress into ftpipe's progress bar and every other line into `launch.log`;
- `python -m ftpipe.training.distributed worker JOB` runs on every rank: Ludwig trains with the shim, and
  rank 0 alone writes the model, the statistics and `result.json`, so that afterwards the run folder
  holds what a one-process run leaves and evaluation and report follow unchanged;
- `ftpipe join SPEC --node-rank K` (or `python -m ftpipe.training.distributed join --job JOB ...`)
  starts the processes of machines 1..N-1 of a run that `ftpipe run` started on machine 0
  (docs/distributed.md); finding the job of a spec's running run is the lifecycle's business.

Torch and Ludwig are imported only in the workers (and by ludwig_compat).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ftpipe.errors import BadInputError, TrainError
from ftpipe.spec import DistributedSpec, PipelineSpec, QloraAdapter
from ftpipe.training.compile import step_options

JOB_FOLDER = "_dist"  # inside the run's training folder
PROGRESS_PREFIX = "FTPIPE_PROGRESS "  # rank 0's progress lines on the launcher's stdout


# --------------------------------------------------------------------------------------------
# Environment checks (train.preflight calls these before anything is written or started)
# --------------------------------------------------------------------------------------------


def check_environment(spec: PipelineSpec, device: str) -> None:
    """Refuse distributed settings this machine cannot run, before any process starts.

    Raises:
        BadInputError: one line naming the setting and what to change.
    """
    d = spec.compute.distributed
    if d.strategy == "none":
        return
    if d.strategy in ("fsdp", "deepspeed") and device != "cuda":
        raise BadInputError(f"compute.distributed.strategy {d.strategy} needs CUDA GPUs, and this run is on {device}",
                            hint="use strategy ddp on CPU (on CPU Accelerate silently falls back to DDP or one process)")
    if d.mixed_precision == "fp16" and device != "cuda":
        raise BadInputError("compute.distributed.mixed_precision fp16 needs CUDA", hint="use bf16 or no on CPU")
    for module, why in (("accelerate", "Ludwig's distributed strategy"), ("torch.distributed", "torchrun")):
        if importlib.util.find_spec(module) is None:
            raise BadInputError(f"compute.distributed needs {module} ({why})", hint=f"pip install {module.split('.')[0]}")
    if d.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise BadInputError("compute.distributed.strategy deepspeed needs the deepspeed package",
                            hint="pip install deepspeed (DS_BUILD_OPS=0 builds no kernels ahead of time)")
    import torch

    if not torch.distributed.is_available():
        raise BadInputError("this torch build has no torch.distributed", hint="install a standard torch build")
    if device == "cuda":
        gpus = torch.cuda.device_count()
        if d.processes_per_node > gpus:
            raise BadInputError(f"compute.distributed.processes_per_node is {d.processes_per_node} but {gpus} GPU(s) are visible",
                                hint=f"set processes_per_node to at most {gpus} (one process per GPU)")
        if not torch.distributed.is_nccl_available():
            raise BadInputError("this torch build has no NCCL for multi-GPU training", hint="install a CUDA build of torch")
    elif not torch.distributed.is_gloo_available():
        raise BadInputError("this torch build has no gloo backend for CPU training", hint="install a standard torch build")


# --------------------------------------------------------------------------------------------
# What the launcher and the workers are given
# --------------------------------------------------------------------------------------------


def strategy_kwargs(spec: PipelineSpec, base_model: str) -> dict[str, Any]:
    """Arguments of Ludwig's AccelerateStrategy for the spec's strategy (JSON-able: they go in the job file).

    ddp needs none: Accelerate sees torchrun's environment and wraps the model in DDP.
    """
    d, t = spec.compute.distributed, spec.training
    kwargs: dict[str, Any] = {}
    if d.mixed_precision != "auto":
        kwargs["mixed_precision"] = d.mixed_precision
    elif t.precision == "bf16":
        kwargs["mixed_precision"] = "bf16"
    if d.strategy == "fsdp":
        kwargs["fsdp_config"] = {
            "sharding_strategy": "FULL_SHARD",
            "auto_wrap_policy": "transformer_based_wrap",
            # Ludwig's LLM wrapper has no _no_split_modules for Accelerate to find: name the layer class
            "transformer_cls_names_to_wrap": _decoder_layer_classes(base_model),
            "use_orig_params": True,  # LoRA: frozen and trainable weights share FSDP's flat parameters
            "cpu_offload": d.offload,
            "state_dict_type": "FULL_STATE_DICT",  # rank 0 saves a whole model
        }
    elif d.strategy == "deepspeed":
        stage = d.zero_stage or 2
        zero: dict[str, Any] = {"stage": stage}
        if d.offload:
            zero["offload_optimizer"] = {"device": "cpu"}
            if stage == 3:
                zero["offload_param"] = {"device": "cpu"}
        kwargs["deepspeed_config"] = {"hf_ds_config": {
            # Ludwig prepares no dataloader, so DeepSpeed cannot infer the batch size: give it
            "train_micro_batch_size_per_gpu": t.batch_size,
            "gradient_accumulation_steps": t.gradient_accumulation_steps,
            "zero_optimization": zero,
            "zero_force_ds_cpu_optimizer": False,  # Ludwig builds a torch AdamW, not DeepSpeedCPUAdam
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},  # filled from mixed_precision by Accelerate
        }}
    return kwargs


def _decoder_layer_classes(base_model: str) -> list[str]:
    """The model class's `_no_split_modules` (e.g. LlamaDecoderLayer), read from its config.json."""
    import transformers

    config = json.loads((Path(base_model) / "config.json").read_text()) if (Path(base_model) / "config.json").exists() else {}
    classes: list[str] = []
    for arch in config.get("architectures") or []:
        classes += list(getattr(getattr(transformers, arch, None), "_no_split_modules", None) or [])
    if not classes:
        raise BadInputError(f"cannot tell which layers of {base_model} to shard with fsdp (no _no_split_modules)",
                            hint="use strategy ddp or deepspeed for this model")
    return sorted(set(classes))


def launch_env(d: DistributedSpec, device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the torchrun launcher (its workers inherit it)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"  # progress lines arrive as they happen
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device == "cpu":
        # Ludwig builds Accelerator() without cpu=True: without this variable Accelerate runs every
        # process with world size 1 on CPU (shared/LUDWIG.md "Distributed").
        env["ACCELERATE_USE_CPU"] = "1"
        # torchrun sets 1 thread per process unless told; share the cores instead
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // d.processes_per_node)))
    return env


def torchrun_command(d: DistributedSpec, job_file: Path, node_rank: int = 0, python: str | None = None) -> list[str]:
    """The torchrun command line that starts this machine's processes of a distributed run.

    One machine: `--standalone` (torchrun picks a free local port). Several: a static rendezvous at
    master_addr:master_port, which node 0's torchrun hosts.
    """
    cmd = [python or sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(d.processes_per_node)]
    if d.nodes == 1:
        cmd.append("--standalone")
    else:
        if not 0 <= node_rank < d.nodes:
            raise BadInputError(f"node rank {node_rank} is outside 0..{d.nodes - 1}", hint="give each machine its own rank")
        cmd += ["--nnodes", str(d.nodes), "--node_rank", str(node_rank),
                "--master_addr", str(d.master_addr), "--master_port", str(d.master_port)]
    return cmd + ["-m", "ftpipe.training.distributed", "worker", str(job_file)]


def write_job(config: dict, frame, train_dir: Path, spec: PipelineSpec, *, device: str, resume: bool,
              spec_hash: str | None = None) -> Path:
    """Write the job folder every rank reads: job.json and the training rows (frame.parquet)."""
    job_dir = (train_dir / JOB_FOLDER).resolve()
    if job_dir.exists():
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    frame.to_parquet(job_dir / "frame.parquet", index=False)
    d = spec.compute.distributed
    job = {
        "status": "launched", "spec_hash": spec_hash, "device": device,
        "distributed": d.model_dump(mode="json"), "world_size": d.world_size(),
        "config": config, "frame": str(job_dir / "frame.parquet"), "output_dir": str(train_dir.resolve()),
        "seed": spec.training.seed, "resume": resume, "step_options": step_options(spec), "quantized": isinstance(spec.adapter, QloraAdapter),
        "strategy": strategy_kwargs(spec, config["base_model"]),
        # each process sees only its own GPU when Ludwig would spread 4-bit weights over all of them
        "pin_gpu": device == "cuda" and isinstance(spec.adapter, QloraAdapter),
    }
    (job_dir / "job.json").write_text(json.dumps(job, indent=2, sort_keys=True))
    return job_dir / "job.json"


def _set_job_status(job_file: Path, status: str) -> None:
    job = json.loads(job_file.read_text())
    job["status"] = status
    tmp = job_file.with_name(job_file.name + ".tmp")
    tmp.write_text(json.dumps(job, indent=2, sort_keys=True))
    os.replace(tmp, job_file)


# --------------------------------------------------------------------------------------------
# Launching (the `ftpipe run` process)
# --------------------------------------------------------------------------------------------


@dataclass
class DistributedResult:
    """What the launched processes left: rank 0's statistics and model, and a per-rank summary."""

    stats: dict
    saved: Path  # Ludwig's saved model folder (adapter inside for PEFT)
    weights: Path | None  # full fine-tuning: the exported Hugging Face folder
    summary: dict  # written to the run folder as distributed.json


def train_distributed(config: dict, frame, train_dir: Path, spec: PipelineSpec, *, device: str, resume: bool,
                      on_step: Callable[[dict], None] | None = None, spec_hash: str | None = None) -> DistributedResult:
    """Train on `spec.compute.distributed`'s processes with torchrun; return what rank 0 saved.

    Raises:
        TrainError: a process failed (the message has the last error line; launch.log has everything).
    """
    d = spec.compute.distributed
    job_file = write_job(config, frame, train_dir, spec, device=device, resume=resume, spec_hash=spec_hash)
    job_dir = job_file.parent
    cmd = torchrun_command(d, job_file)
    log_path = job_dir / "launch.log"
    start = time.monotonic()
    rc, last_error = run_streaming(cmd, launch_env(d, device), job_dir, log_path, on_step)
    _set_job_status(job_file, "finished" if rc == 0 else "failed")
    if rc != 0:
        raise TrainError(f"distributed training failed (torchrun exit {rc}): {last_error}", hint=f"see {log_path}")
    result_file = job_dir / "result.json"
    if not result_file.exists():
        raise TrainError("distributed training ended without rank 0's result.json", hint=f"see {log_path}")
    result = json.loads(result_file.read_text())
    ranks = [json.loads(p.read_text()) for p in sorted(job_dir.glob("rank*.json"))]
    summary = {
        "strategy": d.strategy, "nodes": d.nodes, "processes_per_node": d.processes_per_node,
        "world_size": d.world_size(), "learning_rate_scaling": d.learning_rate_scaling, "device": device,
        "command": cmd, "seconds": round(time.monotonic() - start, 2),
        "ranks": [{k: r[k] for k in ("rank", "host", "rows", "steps", "last_loss")} for r in ranks],
    }
    (job_dir / "frame.parquet").unlink(missing_ok=True)  # the rows were only needed by the workers
    return DistributedResult(stats=result["stats"], saved=Path(result["saved"]),
                             weights=Path(result["weights"]) if result.get("weights") else None, summary=summary)


def run_streaming(cmd: list[str], env: dict, cwd: Path, log_path: Path,
                   on_step: Callable[[dict], None] | None) -> tuple[int, str]:
    """Run torchrun; progress lines go to `on_step`, the rest to the log. Returns (exit code, last error line)."""
    last_error = ""
    # a session of its own: Ctrl-C reaches only us, and we stop torchrun (which stops its workers)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    try:
        with log_path.open("w", encoding="utf-8") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            for line in proc.stdout:
                if line.startswith(PROGRESS_PREFIX):
                    if on_step is not None:
                        on_step(json.loads(line[len(PROGRESS_PREFIX):]))
                    continue
                log.write(line)
                log.flush()
                text = line.strip()
                if ("Error" in text or "Exception" in text) and ":" in text and not text.startswith(("File ", "warnings.warn")):
                    last_error = text[:300]
        return proc.wait(), last_error or "no error line; see the log"
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # torchrun forwards it to its workers
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


# --------------------------------------------------------------------------------------------
# On every rank: `python -m ftpipe.distributed worker JOB` (started by torchrun)
# --------------------------------------------------------------------------------------------


def worker_main(job_file: Path) -> int:
    """Train on this rank with Ludwig's Accelerate strategy; rank 0 writes the model and result.json."""
    job = json.loads(job_file.read_text())
    job_dir = job_file.parent
    from ftpipe.training import ludwig_compat

    if job.get("pin_gpu"):
        ludwig_compat.pin_one_gpu_per_process(os.environ)  # before torch sees the GPUs
    import platform

    import pandas as pd

    from ftpipe import console

    console.quiet_libraries()
    rank = int(os.environ.get("RANK", "0"))
    frame = pd.read_parquet(job["frame"])
    backend = ludwig_compat.distributed_backend(job["strategy"])
    if backend.strategy.size() != job["world_size"]:
        raise RuntimeError(f"Accelerate runs {backend.strategy.size()} processes, the spec asks for {job['world_size']}: "
                           "its environment did not reach the workers")
    seen_rows: list[str] = []
    on_step = (lambda info: print(PROGRESS_PREFIX + json.dumps(info), flush=True)) if rank == 0 else None
    callback = ludwig_compat.make_rank_callback(on_step, seen_rows)
    model, stats, saved = ludwig_compat.train_model(
        job["config"], frame, Path(job["output_dir"]), seed=job["seed"], resume=job["resume"],
        callbacks=[callback], quantized=job["quantized"], backend=backend,
        options=ludwig_compat.StepOptions(**job.get("step_options", {})))
    if backend.is_coordinator():
        weights = None
        if ludwig_compat.adapter_folder(saved) is None:  # full fine-tuning: the same export as one process
            weights = job_dir / "weights"
            ludwig_compat.export_full_weights(model, weights)
        (job_dir / "result.json").write_text(json.dumps({"stats": stats, "saved": str(saved),
                                                         "weights": str(weights) if weights else None}, default=str))
    (job_dir / f"rank{rank:04d}.json").write_text(json.dumps({
        "rank": rank, "world_size": backend.strategy.size(), "host": platform.node(), "rows": len(seen_rows),
        "steps": len(seen_rows) // max(1, job["config"]["trainer"]["batch_size"]),
        "last_loss": callback.last_loss, "row_digests": seen_rows,
        "trainable_digest": ludwig_compat.trainable_digest(model)}))  # equal on every rank when gradients synced
    backend.finish()
    return 0


# --------------------------------------------------------------------------------------------
# Machines 1..N-1: `python -m ftpipe.distributed join ...`
# --------------------------------------------------------------------------------------------


def node_rank_from_env() -> int:
    """This machine's rank from $NODE_RANK or $SLURM_NODEID (-1 when neither is set)."""
    return int(os.environ.get("NODE_RANK", os.environ.get("SLURM_NODEID", "-1")))


def join(job_file: Path, node_rank: int) -> int:
    """Start this machine's processes of a run launched on node 0; their output goes to stdout."""
    if node_rank < 1:
        raise BadInputError("join needs --node-rank 1..nodes-1 (node 0 is the machine running `ftpipe run`)")
    job = json.loads(job_file.read_text())
    d = DistributedSpec.model_validate(job["distributed"])
    if d.nodes < 2:
        raise BadInputError(f"{job_file} is a one-machine run (nodes: 1)", hint="set compute.distributed.nodes")
    cmd = torchrun_command(d, job_file.resolve(), node_rank=node_rank)
    return subprocess.run(cmd, cwd=job_file.parent, env=launch_env(d, job["device"])).returncode


def main(argv: list[str] | None = None) -> int:
    """`python -m ftpipe.training.distributed worker JOB` | `join --job JOB --node-rank K`."""
    parser = argparse.ArgumentParser(prog="python -m ftpipe.training.distributed", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one rank (torchrun starts these)")
    worker.add_argument("job", type=Path)
    joiner = sub.add_parser("join", help="start this machine's processes of a run started on node 0 "
                                         "(`ftpipe join SPEC` finds the job from the spec)")
    joiner.add_argument("--job", type=Path, required=True, help="node 0's training/_dist/job.json")
    joiner.add_argument("--node-rank", type=int, default=node_rank_from_env(),
                        help="this machine's rank, 1..nodes-1 (default: $NODE_RANK or $SLURM_NODEID)")
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker_main(args.job)
    from ftpipe.errors import FtpipeError

    try:
        return join(args.job, args.node_rank)
    except FtpipeError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
