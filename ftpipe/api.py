"""ftpipe from Python (notebooks, scripts): the same stages as the command line, without a shell.

    from ftpipe import load_spec, run, evaluate
    spec = load_spec("pipelines/demo.yaml", overrides=["training.epochs=1"])
    result = run("pipelines/demo.yaml")        # train + evaluate; result.report is report.json
    report = evaluate(result.run_dir)           # score an existing run again

Errors are `ftpipe.errors.FtpipeError` subclasses whose `exit_code` is what the CLI would return.
"""

from __future__ import annotations

from pathlib import Path

from ftpipe.data import validate_spec
from ftpipe.lifecycle import RunResult, reevaluate, run_pipeline
from ftpipe.spec import LoadedSpec


def load_spec(path: str | Path, overrides: list[str] | None = None) -> LoadedSpec:
    """Load and fully validate a spec (fields, then the files, columns and base model it names).

    Args:
        path: The spec YAML.
        overrides: `path.to.key=value` strings, as `--set` takes them.

    Returns:
        The validated spec (`.spec` is the Pydantic model) with where it came from.

    Raises:
        ftpipe.errors.SpecError: one located line per problem.
    """
    return validate_spec(path, overrides)


def run(path: str | Path, overrides: list[str] | None = None, runs_dir: str | Path | None = None,
        evaluate: bool = True, if_changed: bool = False) -> RunResult:
    """`ftpipe run`: prepare data, train with Ludwig, evaluate base versus tuned, judge gates, promote.

    Args:
        path: The spec YAML.
        overrides: `--set` overrides.
        runs_dir: Root of run folders (default $FTPIPE_RUNS or ./runs).
        evaluate: Evaluate after training (False: train only, like `--no-eval`).
        if_changed: Do nothing when spec and data equal the last successful run's.

    Returns:
        The run folder, its manifest and the report.
    """
    return run_pipeline(Path(path), overrides, Path(runs_dir) if runs_dir else None, evaluate=evaluate,
                        if_changed=if_changed)


def evaluate(run: str | Path, runs_dir: str | Path | None = None) -> dict:
    """`ftpipe eval RUN`: score a run's base and tuned model again and rewrite its report.

    Args:
        run: A run folder, run id, or unique id prefix.
        runs_dir: Root of run folders to search for an id.

    Returns:
        The new report (report.json's content).
    """
    return reevaluate(str(run), Path(runs_dir) if runs_dir else None)


def evaluate_model(spec: str | Path, model: str | Path, overrides: list[str] | None = None, base: str | None = None,
                   runs_dir: str | Path | None = None):
    """`ftpipe evaluate SPEC --model PATH`: the base-versus-tuned report for a model trained anywhere.

    Returns:
        `EvaluationResult` (folder, report, gates_passed); a failed gate does not raise here.
    """
    from ftpipe.lifecycle.external import evaluate_model as _evaluate_model

    return _evaluate_model(Path(spec), Path(model), overrides, base=base, root=Path(runs_dir) if runs_dir else None,
                           fail_on_gates=False)


def sweep(spec: str | Path, params: list[str] | None = None, overrides: list[str] | None = None,
          runs_dir: str | Path | None = None, **options):
    """`ftpipe sweep SPEC`: search spec fields for the setting that learns most without forgetting.

    Args:
        params: `--param` strings (`key=a,b` or ranges); `options` are `run_sweep`'s keyword arguments
            (sampler, trials, storage, study_name, max_forgetting, promote_best, heartbeat_s).

    Returns:
        `SweepResult` (folder, report, promoted).
    """
    from ftpipe.lifecycle.sweep import run_sweep

    return run_sweep(Path(spec), params, overrides, Path(runs_dir) if runs_dir else None, **options)
