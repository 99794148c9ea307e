"""Spec loading and validation: errors name file:line:col and the field, exit code 2, no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftpipe.cli import app
from ftpipe.errors import SpecError
from ftpipe import load_spec
from ftpipe.spec import LoraAdapter, QloraAdapter, spec_json_schema

FIXTURES = Path(__file__).parent / "fixtures"
DATA = FIXTURES / "data"
MINIMAL = f"""\
name: mini
base_model: tiny-llama
tasks:
  - name: colors
    source: {DATA / 'colors.jsonl'}
    prompt: "{{{{ question }}}}"
    target: "{{{{ color }}}}"
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return info.value.message


def test_minimal_spec_gets_defaults(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL)).spec
    assert isinstance(spec.adapter, LoraAdapter) and spec.adapter.r == 8
    assert spec.training.epochs == 3 and spec.generation.do_sample is False
    assert spec.tasks[0].chat_template is True


def test_typo_names_line_column_and_suggestion(tmp_path):
    path = write(tmp_path, MINIMAL + "training:\n  learnin_rate: 0.1\n")
    msg = error_of(path)
    assert re.fullmatch(r".*spec\.yaml:9:3 training\.learnin_rate: unknown field \(did you mean learning_rate\?\)", msg)


def test_wrong_type_and_range(tmp_path):
    path = write(tmp_path, MINIMAL + "training:\n  epochs: many\n  learning_rate: -1\n")
    lines = error_of(path).splitlines()
    assert len(lines) == 2
    assert ":9:3 training.epochs:" in lines[0] and "integer" in lines[0]
    assert ":10:3 training.learning_rate:" in lines[1] and "greater than 0" in lines[1]


def test_unknown_adapter_type(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL + "adapter:\n  type: lorax\n"))
    assert "adapter" in msg and "choose one of full, lora, qlora" in msg


def test_missing_file_and_template_field(tmp_path):
    text = MINIMAL.replace("colors.jsonl", "nope.jsonl")
    assert "no such file" in error_of(write(tmp_path, text))
    text = MINIMAL.replace("{{ color }}", "{{ colour }}")
    msg = error_of(write(tmp_path, text))
    assert "template names missing field 'colour'" in msg and "did you mean color?" in msg


def test_unknown_base_model_suggests_store_name(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL.replace("tiny-llama", "tiny-lama")))
    assert re.search(r"spec\.yaml:2:\d+ base_model: unknown model 'tiny-lama' \(did you mean tiny-llama\?", msg)


def test_method_must_fit_tasks(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL + "method: multitask\n"))
    assert "multitask needs at least two tasks" in msg


def test_training_speed_options(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL)).spec
    assert spec.training.group_by_length and spec.training.length_group_batches == 8 and not spec.training.packing
    assert "packing_max_tokens applies with packing: true only" in error_of(
        write(tmp_path, MINIMAL + "training:\n  packing_max_tokens: 512\n"))
    assert "cannot be packed" in error_of(write(tmp_path, MINIMAL + "training:\n  packing: true\n"
                                                                    "adapter:\n  type: prefix_tuning\n"))


def test_extends_and_overrides(tmp_path):
    write(tmp_path, MINIMAL + "training:\n  epochs: 5\n  batch_size: 4\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\ntraining:\n  epochs: 2\n")
    loaded = load_spec(child, ["training.learning_rate=0.0005", "adapter={type: qlora, r: 4}"])
    spec = loaded.spec
    assert spec.name == "child" and spec.training.epochs == 2 and spec.training.batch_size == 4
    assert spec.training.learning_rate == 0.0005
    assert isinstance(spec.adapter, QloraAdapter) and spec.adapter.r == 4 and spec.adapter.bits == 4
    # an error in an override names the override, an error in the child names the child's line
    assert "--set training.epochs=zero" in error_of(child, ["training.epochs=zero"])
    bad_child = write(tmp_path, "extends: base.yaml\ntraining:\n  epoch: 2\n", "bad.yaml")
    assert re.search(r"bad\.yaml:3:3 training\.epoch: unknown field \(did you mean epochs\?\)", error_of(bad_child))


def test_extends_rebases_relative_paths(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "rows.jsonl").write_text('{"question": "q", "color": "red"}\n')
    write(sub, MINIMAL.replace(str(DATA / "colors.jsonl"), "rows.jsonl"), "base.yaml")
    child = write(tmp_path, "extends: sub/base.yaml\n")
    loaded = load_spec(child)
    assert loaded.resolve(loaded.spec.tasks[0].source.path).resolve() == (sub / "rows.jsonl").resolve()


def test_extends_cycle(tmp_path):
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    assert "loops back" in error_of(tmp_path / "a.yaml")


def test_invalid_yaml_has_location(tmp_path):
    msg = error_of(write(tmp_path, "name: [unclosed\n"))
    assert re.search(r"spec\.yaml:\d+:\d+ invalid YAML", msg)


def test_json_schema_describes_fields():
    schema = spec_json_schema()
    assert "base_model" in schema["properties"] and schema["additionalProperties"] is False
    assert "learning_rate" in str(schema)


def test_spec_reference_in_docs_is_the_generated_one():
    """docs/SPEC.md is what `ftpipe schema --markdown` prints: a field's description changes in one place."""
    from ftpipe.spec.docs import spec_reference_markdown

    docs = Path(__file__).resolve().parents[1] / "docs" / "SPEC.md"
    assert docs.read_text().rstrip("\n") == spec_reference_markdown().rstrip("\n"), \
        "docs/SPEC.md is stale: regenerate it with `ftpipe schema --markdown > docs/SPEC.md`"


# --------------------------------------------------------------------------------------------
# CLI behaviour: one line per problem, exit code 2, no traceback, no torch import
# --------------------------------------------------------------------------------------------

runner = CliRunner()


def test_validate_cli_ok_and_bad(tmp_path):
    ok = runner.invoke(app, ["validate", str(write(tmp_path, MINIMAL))])
    assert ok.exit_code == 0 and ": ok" in ok.output
    bad = runner.invoke(app, ["validate", str(write(tmp_path, MINIMAL + "trainin: {}\n", "bad.yaml"))])
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output
    assert "bad.yaml:8:1 trainin: unknown field (did you mean training?)" in bad.output


def test_validate_does_not_import_torch_or_ludwig(tmp_path):
    code = ("import sys; from typer.testing import CliRunner; from ftpipe.cli import app; "
            f"r = CliRunner().invoke(app, ['validate', {str(write(tmp_path, MINIMAL))!r}]); "
            "assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'ludwig', 'transformers', 'pandas', 'mlflow', 'lm_eval') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# --------------------------------------------------------------------------------------------
# Property-based: broken specs always give a located one-line error and exit code 2
# --------------------------------------------------------------------------------------------

FIELD_TYPOS = st.sampled_from([
    ("training", "epochs", "epoch"), ("training", "learning_rate", "learnin_rate"), ("training", "batch_size", "batchsize"),
    ("generation", "max_new_tokens", "max_tokens"), ("evaluation", "max_items", "max_item"), ("data", "test_fraction", "test_frac"),
])
BAD_VALUES = st.sampled_from([
    ("training", "epochs", "0"), ("training", "epochs", "'three'"), ("training", "learning_rate", "0"),
    ("training", "learning_rate", "2.5"), ("training", "batch_size", "-4"), ("generation", "max_new_tokens", "0"),
    ("data", "test_fraction", "1.5"), ("evaluation", "confidence", "1.2"), ("training", "precision", "bf8"),
    ("compute", "device", "tpu"), ("data", "bad_rows", "ignore"),
])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.one_of(FIELD_TYPOS.map(lambda c: ("typo", c)), BAD_VALUES.map(lambda c: ("value", c))))
def test_broken_specs_get_located_one_line_errors(tmp_path, case):
    how, (section, key, value) = case
    if how == "typo":
        text = MINIMAL + f"{section}:\n  {value}: 1\n"
    else:
        text = MINIMAL + f"{section}:\n  {key}: {value}\n"
    path = write(tmp_path, text, "broken.yaml")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert re.match(r".*broken\.yaml:9:3 " + re.escape(section) + r"\.", lines[0]), lines[0]
    if how == "typo":
        assert f"did you mean {key}?" in lines[0]


def test_lm_eval_probes_and_tracking_sections(tmp_path):
    """Issue 17: a kind lm_eval probe names an lm-eval task instead of a source, is held out only, and its task
    YAML is rebased by extends like a source; where runs are tracked is no part of the spec's hash."""
    probe = "evaluation:\n  held_out:\n    - {name: mmlu, kind: lm_eval, lm_eval: {task: probes/mmlu.yaml}}\n"
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "mmlu.yaml").write_text("task: mmlu_local\n")
    loaded = load_spec(write(tmp_path, MINIMAL + probe))
    assert loaded.spec.evaluation.held_out[0].source is None and loaded.spec.evaluation.held_out[0].lm_eval.is_file()
    (tmp_path / "child").mkdir()
    child = write(tmp_path / "child", "extends: ../spec.yaml\nname: child\n")
    assert load_spec(child).spec.evaluation.held_out[0].lm_eval.task == "../probes/mmlu.yaml"
    assert "needs an lm_eval section" in error_of(write(tmp_path, MINIMAL + probe.replace(", lm_eval: {task: probes/mmlu.yaml}", ""), "a.yaml"))
    with_source = probe.replace("kind: lm_eval", f"kind: lm_eval, source: {DATA / 'colors.jsonl'}")
    assert "remove source" in error_of(write(tmp_path, MINIMAL + with_source, "b.yaml"))
    trained = MINIMAL.replace('target: "{{ color }}"', 'target: "{{ color }}"\n  - {name: p, kind: lm_eval, lm_eval: {task: x}}')
    assert "kind lm_eval is a held-out probe" in error_of(write(tmp_path, trained + "method: multitask\n", "c.yaml"))
    tracked = load_spec(write(tmp_path, MINIMAL + probe + "tracking: {mlflow: {tracking_uri: 'sqlite:///m.db'}}\n", "d.yaml"))
    assert tracked.spec.tracking.mlflow.alias == "champion" and tracked.spec_hash() == loaded.spec_hash()


def test_validate_of_chat_mlflow_and_lm_eval_spec_stays_light():
    """Issue 17: conversation sources, an lm_eval probe and a tracking section are validated without importing
    torch, mlflow or lm-eval."""
    spec = Path(__file__).parent.parent / "pipelines" / "support_chat.yaml"
    code = ("import sys; from typer.testing import CliRunner; from ftpipe.cli import app; "
            f"r = CliRunner().invoke(app, ['validate', {str(spec)!r}, '--set', 'tracking.mlflow.tracking_uri=http://127.0.0.1:1']); "
            "assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'ludwig', 'transformers', 'pandas', 'mlflow', 'lm_eval') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
