"""The command line as a person uses it: fast help, models, runs, report, eval, compare, export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from ftpipe import __version__
from ftpipe.cli import app

runner = CliRunner()
ROOT = Path(__file__).parent.parent


def test_help_and_version_do_not_import_heavy_modules():
    code = ("import sys; from typer.testing import CliRunner; from ftpipe.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0 and 'validate' in r.output; "
            "r = CliRunner().invoke(app, ['--version']); assert r.output.strip().startswith('ftpipe '); "
            "heavy = [m for m in ('torch', 'ludwig', 'transformers', 'pandas', 'peft', 'mlflow', 'lm_eval') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert runner.invoke(app, ["--version"]).output.strip() == f"ftpipe {__version__}"


def test_models_list_and_path(tiny_llama_dir, monkeypatch):
    monkeypatch.setenv("FTPIPE_HOME", str(tiny_llama_dir.parent.parent))
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "tiny-llama" in listed.output and "smollm2-135m-instruct" in listed.output
    path = runner.invoke(app, ["models", "path", "tiny-llama"])
    assert path.exit_code == 0 and Path(path.output.strip()) == tiny_llama_dir
    unknown = runner.invoke(app, ["models", "path", "tiny-lama"])
    assert unknown.exit_code == 2 and "tiny-llama" in unknown.output and "Traceback" not in unknown.output


def test_runs_list_show_report_compare_export(finished_tiny_runs, tmp_path):
    root, (run_a, run_b) = finished_tiny_runs
    listed = runner.invoke(app, ["runs", "list", "--runs-dir", str(root)])
    assert listed.exit_code == 0 and run_a.name in listed.output and "succeeded" in listed.output
    shown = runner.invoke(app, ["runs", "show", run_b.name[:4], "--runs-dir", str(root)])
    assert shown.exit_code == 2 and "matches 2 runs" in shown.output  # an ambiguous id prefix
    shown = runner.invoke(app, ["runs", "show", str(run_b)])
    assert shown.exit_code == 0 and json.loads(shown.output)["status"] == "succeeded"

    (run_a / "report.md").unlink()
    rendered = runner.invoke(app, ["report", str(run_a)])
    assert rendered.exit_code == 0 and (run_a / "report.md").read_text().startswith("# ftpipe report")

    compared = runner.invoke(app, ["compare", str(run_a), str(run_b)])
    assert compared.exit_code == 0, compared.output
    assert "delta = B - A" in compared.output and "| colors | target |" in compared.output

    out = tmp_path / "adapter_copy"
    exported = runner.invoke(app, ["export", str(run_a), "-o", str(out), "--adapter-only"])
    assert exported.exit_code == 0 and (out / "adapter_model.safetensors").exists()
    merged = tmp_path / "merged"
    exported = runner.invoke(app, ["export", str(run_a), "-o", str(merged)])
    assert exported.exit_code == 0, exported.output
    assert (merged / "config.json").exists() and list(merged.glob("*.safetensors"))
    again = runner.invoke(app, ["export", str(run_a), "-o", str(merged)])
    assert again.exit_code == 2 and "exists" in again.output


def test_eval_rescores_a_run_with_cached_base(finished_tiny_runs):
    root, (run_a, _) = finished_tiny_runs
    before = json.loads((run_a / "report.json").read_text())
    result = runner.invoke(app, ["eval", str(run_a)])
    assert result.exit_code == 0, result.output
    after = json.loads((run_a / "report.json").read_text())
    assert [t["tuned"] for t in after["tasks"]] == [t["tuned"] for t in before["tasks"]]  # greedy: reproducible
    assert [t["base"] for t in after["tasks"]] == [t["base"] for t in before["tasks"]]


def test_unknown_run_is_bad_input(tmp_path):
    result = runner.invoke(app, ["runs", "show", "nope", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no run 'nope'" in result.output
