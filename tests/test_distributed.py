"""Scale-out (issue 9): spec checks, the torchrun command line, environment checks, the Ludwig gaps the
distributed workaround covers, and a 2-process DDP training of the tiny model on CPU (gloo) compared
with a one-process run of the same spec.

When a `test_upstream_*` test fails after a Ludwig upgrade, the gap it pins was closed upstream:
delete the matching part of the "distributed training" workaround in ftpipe/ludwig_compat.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ftpipe.training import distributed, ludwig_compat
from ftpipe.cli import app
from ftpipe.training import CompileContext, compile_spec
from ftpipe.errors import BadInputError, SpecError
from ftpipe.spec import DistributedSpec, PipelineSpec, load_spec

SPEC = Path(__file__).parent / "fixtures" / "specs" / "tiny_lora.yaml"
DDP2 = ["compute.distributed.strategy=ddp", "compute.distributed.processes_per_node=2"]


def spec_with(**distributed_fields) -> PipelineSpec:
    return load_spec(SPEC, [f"compute.distributed.{k}={v}" for k, v in distributed_fields.items()]).spec


# --------------------------------------------------------------------------------------------
# Spec checks that need no environment
# --------------------------------------------------------------------------------------------


def test_defaults_are_one_process():
    d = DistributedSpec()
    assert (d.strategy, d.world_size(), d.learning_rate_scaling, d.mixed_precision) == ("none", 1, "constant", "auto")
    assert spec_with(strategy="ddp", processes_per_node=4, nodes=2, master_addr="10.0.0.1").compute.distributed.world_size() == 8


@pytest.mark.parametrize("overrides, message", [
    (["adapter.type=qlora", "compute.distributed.strategy=deepspeed", "compute.distributed.zero_stage=3"], "ZeRO-3"),
    (["adapter.type=qlora", "compute.distributed.strategy=fsdp"], "qlora cannot be sharded with fsdp"),
    (["compute.distributed.processes_per_node=2"], "need a strategy"),
    (["compute.distributed.strategy=ddp", "compute.distributed.nodes=2"], "needs master_addr"),
    (["compute.distributed.strategy=ddp", "compute.distributed.zero_stage=2"], "zero_stage is a DeepSpeed setting"),
    (["compute.distributed.strategy=ddp", "compute.distributed.offload=true"], "offload needs strategy fsdp or deepspeed"),
    (["compute.distributed.mixed_precision=bf16"], "distributed training only"),
    (["compute.distributed.strategy=ddp", "compute.distributed.mixed_precision=bf16", "training.precision=fp32"],
     "contradicts training.precision"),
])
def test_impossible_combinations_are_spec_errors(overrides, message):
    with pytest.raises(SpecError, match=message):
        load_spec(SPEC, overrides)


def test_qlora_with_zero2_and_ddp_are_allowed():
    for extra in (["compute.distributed.strategy=deepspeed", "compute.distributed.zero_stage=2"], DDP2):
        assert load_spec(SPEC, ["adapter.type=qlora", *extra]).spec.adapter.type == "qlora"


def test_cli_validate_refuses_qlora_with_zero3_exit_code_2():
    result = CliRunner().invoke(app, ["validate", str(SPEC), "--set", "adapter.type=qlora", "--set",
                                      "compute.distributed.strategy=deepspeed", "--set", "compute.distributed.zero_stage=3"])
    assert result.exit_code == 2 and "ZeRO-3" in result.output and "Traceback" not in result.output


def test_learning_rate_scaling_is_explicit_in_the_compiled_config():
    ctx = CompileContext(base_model="/models/x", max_prompt_tokens=32, max_target_tokens=4)
    assert compile_spec(spec_with(), ctx)["trainer"]["learning_rate_scaling"] == "constant"  # one-process configs unchanged
    scaled = spec_with(strategy="ddp", processes_per_node=2, learning_rate_scaling="sqrt")
    assert compile_spec(scaled, ctx)["trainer"]["learning_rate_scaling"] == "sqrt"


# --------------------------------------------------------------------------------------------
# Launching: command line, environment, strategy settings
# --------------------------------------------------------------------------------------------


def test_torchrun_command_one_machine_picks_a_free_port(tmp_path):
    cmd = distributed.torchrun_command(spec_with(strategy="ddp", processes_per_node=8).compute.distributed,
                                       tmp_path / "job.json", python="python")
    assert cmd == ["python", "-m", "torch.distributed.run", "--nproc_per_node", "8", "--standalone",
                   "-m", "ftpipe.training.distributed", "worker", str(tmp_path / "job.json")]


def test_torchrun_command_for_several_machines(tmp_path):
    d = spec_with(strategy="fsdp", processes_per_node=8, nodes=4, master_addr="10.0.0.1", master_port=29400).compute.distributed
    cmd = distributed.torchrun_command(d, tmp_path / "job.json", node_rank=2, python="python")
    assert cmd == ["python", "-m", "torch.distributed.run", "--nproc_per_node", "8", "--nnodes", "4", "--node_rank", "2",
                   "--master_addr", "10.0.0.1", "--master_port", "29400",
                   "-m", "ftpipe.training.distributed", "worker", str(tmp_path / "job.json")]
    with pytest.raises(BadInputError, match="outside 0..3"):
        distributed.torchrun_command(d, tmp_path / "job.json", node_rank=4)


def test_join_needs_a_node_rank_above_zero(capsys):
    assert distributed.main(["join", "--job", "x.json", "--node-rank", "0"]) == 2
    assert "node 0 is the machine running `ftpipe run`" in capsys.readouterr().err


def test_launch_env_on_cpu_tells_accelerate_to_use_it():
    d = spec_with(strategy="ddp", processes_per_node=2).compute.distributed
    cpu = distributed.launch_env(d, "cpu", base={"PATH": "/bin"})
    # without ACCELERATE_USE_CPU, Accelerate silently runs each process with world size 1 (shared/LUDWIG.md)
    assert cpu["ACCELERATE_USE_CPU"] == "1" and int(cpu["OMP_NUM_THREADS"]) >= 1 and cpu["PATH"] == "/bin"
    assert "ACCELERATE_USE_CPU" not in distributed.launch_env(d, "cuda", base={})
    assert distributed.launch_env(d, "cpu", base={"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's wins


def test_strategy_settings(tiny_llama_dir):
    assert distributed.strategy_kwargs(spec_with(strategy="ddp", processes_per_node=2), str(tiny_llama_dir)) == {}
    fsdp = distributed.strategy_kwargs(spec_with(strategy="fsdp", processes_per_node=2, offload="true",
                                                 mixed_precision="bf16"), str(tiny_llama_dir))
    assert fsdp["mixed_precision"] == "bf16"
    ddp_bf16 = load_spec(SPEC, ["compute.distributed.strategy=ddp", "compute.distributed.processes_per_node=2",
                                "training.precision=bf16"]).spec
    assert distributed.strategy_kwargs(ddp_bf16, str(tiny_llama_dir)) == {"mixed_precision": "bf16"}  # Accelerate's
    assert fsdp["fsdp_config"]["transformer_cls_names_to_wrap"] == ["LlamaDecoderLayer"] and fsdp["fsdp_config"]["cpu_offload"]
    ds = distributed.strategy_kwargs(spec_with(strategy="deepspeed", processes_per_node=2, zero_stage=3, offload="true"),
                                     str(tiny_llama_dir))["deepspeed_config"]["hf_ds_config"]
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}
    assert ds["train_micro_batch_size_per_gpu"] == 8  # the spec's batch size: Ludwig gives DeepSpeed no dataloader


def test_launcher_routes_progress_and_names_the_failing_line(tmp_path):
    progress = "FTPIPE_PROGRESS " + json.dumps({"step": 1, "total_steps": 2})
    script = f"import sys; print({progress!r}); print('hello'); print('ValueError: boom', file=sys.stderr); sys.exit(3)"
    seen: list[dict] = []
    rc, last_error = distributed.run_streaming([sys.executable, "-c", script], dict(os.environ), tmp_path,
                                                tmp_path / "launch.log", seen.append)
    assert (rc, last_error, seen) == (3, "ValueError: boom", [{"step": 1, "total_steps": 2}])
    log = (tmp_path / "launch.log").read_text().splitlines()
    assert log[0].startswith("$ ") and log[1:] == ["hello", "ValueError: boom"]  # the command, then the output


def test_pin_one_gpu_per_process():
    env = {"LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,6"}
    ludwig_compat.pin_one_gpu_per_process(env)
    assert env == {"LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "6", "FTPIPE_LOCAL_RANK": "1"}
    env = {"LOCAL_RANK": "3"}
    ludwig_compat.pin_one_gpu_per_process(env)
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["LOCAL_RANK"] == "0"


# --------------------------------------------------------------------------------------------
# Environment checks: before any process starts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_sharded_strategies_need_cuda(strategy):
    with pytest.raises(BadInputError, match=f"strategy {strategy} needs CUDA") as caught:
        distributed.check_environment(spec_with(strategy=strategy, processes_per_node=2), "cpu")
    assert "\n" not in caught.value.one_line()


def test_fp16_needs_cuda_and_gpus_are_counted(monkeypatch):
    with pytest.raises(BadInputError, match="fp16 needs CUDA"):
        distributed.check_environment(spec_with(strategy="ddp", processes_per_node=2, mixed_precision="fp16"), "cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(BadInputError, match="processes_per_node is 8 but 2 GPU"):
        distributed.check_environment(spec_with(strategy="ddp", processes_per_node=8), "cuda")
    distributed.check_environment(spec_with(strategy="ddp", processes_per_node=2), "cpu")  # fine on CPU


def test_cli_run_refuses_fsdp_on_cpu_before_anything_starts(tiny_llama_dir, tmp_path):
    result = CliRunner().invoke(app, ["run", str(SPEC), "--set", "compute.distributed.strategy=fsdp", "--set",
                                      "compute.distributed.processes_per_node=2", "--set", "compute.device=cpu",
                                      "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "fsdp" in line]
    assert len(errors) == 1 and "needs CUDA" in errors[0] and "Traceback" not in result.output
    assert not [p for p in tmp_path.rglob("manifest.json")]  # no run folder was made


# --------------------------------------------------------------------------------------------
# The Ludwig gaps the distributed workaround covers (fail when upstream closes them)
# --------------------------------------------------------------------------------------------


def test_upstream_local_backend_still_creates_the_local_strategy():
    """Gap 1: nothing in stock Ludwig creates its Accelerate strategy."""
    assert ludwig_compat.stock_backend_strategy() == "LocalStrategy"


def test_upstream_llm_trainer_still_reads_tokenizer_from_the_wrapped_model():
    """Gap 2: the fine-tune trainer reads `dist_model.tokenizer`, which DDP's wrapper lacks."""
    assert ludwig_compat.llm_trainer_reads_tokenizer_from_dist_model()


def test_upstream_quantized_models_still_load_over_every_gpu():
    """Gap 3: 4-bit weights load with device_map="auto" (each process is pinned to one GPU instead)."""
    assert ludwig_compat.quantized_load_spreads_over_gpus()


# --------------------------------------------------------------------------------------------
# The whole pipeline: 2 processes (gloo, CPU) against 1, same spec and max_steps
# --------------------------------------------------------------------------------------------


def _run_files(run_dir: Path) -> set[str]:
    """Relative paths of a run folder, without Ludwig's internals (tensorboard file names hold times)."""
    return {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
            if "_ludwig" not in p.parts and distributed.JOB_FOLDER not in p.parts}


def _final_training_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "training_statistics.json").read_text())["training"]["combined"]["loss"][-1]


@pytest.mark.slow  # two real training processes; the spec, launch and strategy tests run by default
def test_two_processes_make_the_same_run_as_one(tiny_llama_dir, tmp_path, capsys):
    from ftpipe.lifecycle import run_pipeline

    steps = ["training.max_steps=4"]
    start = time.monotonic()
    single = run_pipeline(SPEC, steps, tmp_path / "single")
    single_s = time.monotonic() - start
    multi = run_pipeline(SPEC, steps + DDP2, tmp_path / "ddp")
    multi_s = time.monotonic() - start - single_s

    # the same kind of run: one manifest, one report, the same files (plus the record of the processes)
    assert single.manifest.status == multi.manifest.status == "succeeded"
    assert _run_files(multi.run_dir) - _run_files(single.run_dir) == {"distributed.json"}
    assert _run_files(single.run_dir) <= _run_files(multi.run_dir)
    counts = [json.loads((r.run_dir / "parameters.json").read_text()) for r in (single, multi)]
    assert counts[0] == counts[1]  # counted from the saved adapter, the same as from the trained model
    assert (multi.run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert single.report.keys() == multi.report.keys()
    assert [t["task"] for t in single.report["tasks"]] == [t["task"] for t in multi.report["tasks"]]
    assert not (multi.run_dir / "training" / distributed.JOB_FOLDER / "frame.parquet").exists()

    # the same training, on twice the rows: the loss is close
    loss_1, loss_2 = _final_training_loss(single.run_dir), _final_training_loss(multi.run_dir)
    assert abs(loss_2 - loss_1) / loss_1 < 0.10

    # two real ranks, each on its own half of the rows, ending with the same weights
    summary = json.loads((multi.run_dir / "distributed.json").read_text())
    assert summary["world_size"] == 2 and [r["rank"] for r in summary["ranks"]] == [0, 1]
    ranks = [json.loads(p.read_text()) for p in sorted((multi.run_dir / "training" / distributed.JOB_FOLDER).glob("rank*.json"))]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["rows"] for r in ranks] == [4 * 8, 4 * 8]  # max_steps x batch_size on each rank
    assert not set(ranks[0]["row_digests"]) & set(ranks[1]["row_digests"])
    assert ranks[0]["trainable_digest"] == ranks[1]["trainable_digest"]
    with capsys.disabled():
        print(f"\n[distributed] 1 process: loss {loss_1:.4f} in {single_s:.0f}s; "
              f"2 processes: loss {loss_2:.4f} in {multi_s:.0f}s (train stage {multi.manifest.timings['train']:.0f}s)")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gpus(strategy, tiny_llama_dir, tmp_path):
    from ftpipe.lifecycle import run_pipeline

    result = run_pipeline(SPEC, ["training.max_steps=4", f"compute.distributed.strategy={strategy}",
                                 "compute.distributed.processes_per_node=2", "compute.device=cuda"], tmp_path)
    assert result.manifest.status == "succeeded" and (result.run_dir / "adapter").exists()


def test_cli_join_refuses_rank_zero_and_waits_for_a_launched_run(tmp_path):
    runner = CliRunner()
    refused = runner.invoke(app, ["join", "--job", "x.json", "--node-rank", "0"])
    assert refused.exit_code == 2 and "node 0 is the machine running `ftpipe run`" in refused.output
    missing = runner.invoke(app, ["join", str(SPEC), "--node-rank", "1", "--runs-dir", str(tmp_path), "--wait", "0"])
    assert missing.exit_code == 2 and "no launched run of" in missing.output


def test_gpu_check_says_skipped_and_exits_0_without_a_gpu():
    """`make gpu-check` is safe on any machine: without CUDA it runs nothing and says so."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: make gpu-check runs for real")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("gpu-check: skipped (no CUDA GPU")
