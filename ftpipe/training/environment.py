"""Where training runs: the device, and what this machine must have for the spec's settings."""

from __future__ import annotations

from ftpipe.errors import BadInputError
from ftpipe.spec import LoadedSpec, QloraAdapter


def resolve_device(requested: str) -> str:
    """`auto` becomes cuda when a CUDA GPU is visible, else cpu; asking for cuda without one is an error."""
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise BadInputError("compute.device is cuda but no CUDA GPU is visible", hint="set compute.device: auto or cpu")
    return "cuda" if requested == "cuda" or (requested == "auto" and has_cuda) else "cpu"


def preflight(loaded: LoadedSpec, device: str) -> None:
    """Checks that need the environment (not the spec alone), before anything is written."""
    spec = loaded.spec
    if isinstance(spec.adapter, QloraAdapter):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            raise BadInputError(f"adapter qlora needs bitsandbytes ({e})", hint="pip install bitsandbytes, or use adapter lora") from None
        if device == "cpu" and spec.adapter.bits == 8:
            raise BadInputError("8-bit bitsandbytes weights need a CUDA GPU", hint="use bits: 4 on CPU, or adapter lora")
    if spec.training.precision == "bf16" and spec.compute.distributed.strategy == "none":
        from ftpipe.training.ludwig_compat import bf16_unsupported

        why = bf16_unsupported(device)
        if why:
            raise BadInputError(f"training.precision bf16: {why}", hint="use precision auto (fp32 on CPU)")
    if spec.compute.distributed.strategy != "none":  # e.g. fsdp/deepspeed need CUDA, enough GPUs
        from ftpipe.training.distributed import check_environment

        check_environment(spec, device)
