"""Hostile specs are refused with one line and exit 2: alias bombs, extends cycles, symlink escapes,
names that are paths, absurd sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftpipe.cli import app
from ftpipe.errors import EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """\
name: t
base_model: tiny-llama
tasks:
  - name: a
    source: data.jsonl
    prompt: "{{ q }}"
    target: "{{ a }}"
"""


def project(tmp_path: Path) -> Path:
    """A project folder (a git work tree) with a spec and its data."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / ".git").mkdir()
    (proj / "data.jsonl").write_text('{"q": "x", "a": "y"}\n')
    return proj


def validate(spec: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(spec), *extra])
    return result.exit_code, result.output


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    proj = project(tmp_path)
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 10**9 values once expanded
        bomb.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    spec = proj / "spec.yaml"
    spec.write_text(MINIMAL + "\n".join("x_" + line for line in bomb) + "\n")
    code = "import sys; from ftpipe.cli import main; sys.argv = ['ftpipe', 'validate', sys.argv[1]]; main()"
    done = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == EXIT_BAD_INPUT
    assert "YAML aliases expand to more than 20000 values" in one_line(done.stderr)


def test_extends_cycle_is_refused(tmp_path):
    proj = project(tmp_path)
    (proj / "a.yaml").write_text("extends: b.yaml\n" + MINIMAL)
    (proj / "b.yaml").write_text("extends: a.yaml\n")
    code, out = validate(proj / "a.yaml")
    assert code == EXIT_BAD_INPUT and "extends loops back on itself" in one_line(out)


def test_extends_escaping_through_a_symlink_is_refused(tmp_path):
    proj = project(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "base.yaml").write_text("training: {epochs: 1}\n")
    (proj / "base.yaml").symlink_to(outside / "base.yaml")
    (proj / "spec.yaml").write_text("extends: base.yaml\n" + MINIMAL)
    code, out = validate(proj / "spec.yaml")
    assert code == EXIT_BAD_INPUT
    assert "extends: base.yaml is a symlink to" in one_line(out) and "outside the project" in out
    # written openly as a path outside the project, the same file is fine
    (proj / "spec.yaml").write_text(f"extends: {outside / 'base.yaml'}\n" + MINIMAL)
    assert validate(proj / "spec.yaml")[0] == 0


def test_a_source_escaping_through_a_symlink_is_refused(tmp_path):
    proj = project(tmp_path)
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text('{"q": "-----BEGIN KEY-----", "a": "x"}\n')
    (proj / "data.jsonl").unlink()
    (proj / "data.jsonl").symlink_to(secret)
    (proj / "spec.yaml").write_text(MINIMAL)
    code, out = validate(proj / "spec.yaml")
    assert code == EXIT_BAD_INPUT and "tasks.0.source.path: data.jsonl is a symlink to" in one_line(out)
    assert "BEGIN KEY" not in out


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "/abs"])
def test_a_pipeline_name_that_is_a_path_is_refused(tmp_path, name):
    proj = project(tmp_path)
    (proj / "spec.yaml").write_text(MINIMAL.replace("name: t", f"name: '{name}'"))
    code, out = validate(proj / "spec.yaml")
    assert code == EXIT_BAD_INPUT and "name: String should match pattern" in one_line(out)
    rollback = CliRunner().invoke(app, ["rollback", name, "--runs-dir", str(tmp_path / "runs")])
    assert rollback.exit_code == EXIT_BAD_INPUT and "is not a name" in rollback.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("override, field", [
    ("training.batch_size=100000000", "training.batch_size"),
    ("evaluation.bootstrap_resamples=1000000000000", "evaluation.bootstrap_resamples"),
    ("training.max_steps=1000000000000", "training.max_steps"),
    ("generation.max_new_tokens=10000000", "generation.max_new_tokens"),
    ("evaluation.max_items=1000000000", "evaluation.max_items"),
    ("adapter={type: lora, r: 100000}", "adapter.r"),
])
def test_absurd_sizes_are_refused(tmp_path, override, field):
    proj = project(tmp_path)
    (proj / "spec.yaml").write_text(MINIMAL)
    code, out = validate(proj / "spec.yaml", "--set", override)
    assert code == EXIT_BAD_INPUT and f"{field}: Input should be less than or equal to" in one_line(out)


def test_a_huge_or_binary_spec_file_is_refused(tmp_path):
    proj = project(tmp_path)
    big = proj / "big.yaml"
    big.write_text(MINIMAL + "# " + "x" * 1_100_000 + "\n")
    code, out = validate(big)
    assert code == EXIT_BAD_INPUT and "a spec is at most 1 MB" in one_line(out)
    binary = proj / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, out = validate(binary)
    assert code == EXIT_BAD_INPUT and "not UTF-8 text" in one_line(out)
