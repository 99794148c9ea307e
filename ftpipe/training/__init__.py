"""The training layer: compile a spec to a Ludwig config, check it with Ludwig, and train.

Public entry points: `compile_spec(spec, context)` (pure) and `train(config, frame, run_dir, ...)`.
Ludwig is imported only inside this package, and only by `ludwig_compat` directly; every
workaround for a Ludwig bug and every use of a Ludwig internal lives there (import-linter checks it).
"""

from ftpipe.training.compile import CompileContext, compile_spec, config_hash, context_for, render_compiled
from ftpipe.training.environment import preflight, resolve_device
from ftpipe.training.ludwig_compat import check_config
from ftpipe.training.train import TrainedModel, checkpoint_state, read_losses, train

__all__ = ["compile_spec", "CompileContext", "context_for", "config_hash", "render_compiled", "train",
           "TrainedModel", "preflight", "resolve_device", "check_config", "checkpoint_state", "read_losses"]
