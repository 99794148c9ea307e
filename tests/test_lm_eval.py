"""lm-evaluation-harness tasks as held-out probes (issue 17): scored by lm-eval itself for the base and the tuned
model (its adapter through lm-eval's `peft=`), compared with ftpipe's paired statistics, and agreeing item by
item with ftpipe's own multiple-choice scorer on the same items and prompt format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed (pip install 'ftpipe[lm-eval]')")

from ftpipe.data import identity_columns, row_identity  # noqa: E402
from ftpipe.data.sources import read_records  # noqa: E402
from ftpipe.lifecycle import run_pipeline  # noqa: E402
from ftpipe.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
SHARED = ROOT.parent / "shared" / "datasets"


def _ids_by_line(path: Path, task, seed: int = 0) -> list[str]:
    """ftpipe's item id of each row of a file, in file order (lm-eval's doc_id is that order)."""
    return [row_identity(row, identity_columns(task), f"{seed}:{task.name}")[:12] for _, row in read_records(path)]


def _predictions(run_dir: Path, task: str) -> dict[str, dict]:
    return {p["item_id"]: p for p in map(json.loads, (run_dir / "predictions" / f"{task}.jsonl").read_text().splitlines())}


def test_lm_eval_probe_base_versus_tuned_through_the_paired_statistics(tiny_llama_dir, tmp_path):
    run_dir = run_pipeline(FIXTURES / "specs" / "tiny_lm_eval.yaml", [], tmp_path / "runs").run_dir
    report = json.loads((run_dir / "report.json").read_text())
    probe = next(t for t in report["tasks"] if t["task"] == "category_mc_lm_eval")
    assert probe["role"] == "held_out" and probe["metric"] == "acc" and probe["n"] == 36
    assert probe["ci_low"] <= probe["item_delta"] <= probe["ci_high"] and "mcnemar" in probe and "forgetting" in probe
    assert probe["aggregate"]["base"]["lm_eval_acc"] == pytest.approx(probe["base"])  # lm-eval's own number, = our mean
    assert probe["aggregate"]["tuned"]["lm_eval_acc"] == pytest.approx(probe["tuned"])

    # The same 36 rows, in the same prompt format, scored by ftpipe's multiple_choice scorer: the two agree item
    # by item, for the base model and for the tuned one (whose adapter changed many of its choices).
    loaded = load_spec(FIXTURES / "specs" / "tiny_lm_eval.yaml")
    ours_task = next(t for t in loaded.spec.evaluation.held_out if t.name == "category_mc")
    ids = _ids_by_line(FIXTURES / "data" / "category_mc.jsonl", ours_task)
    ours, theirs = _predictions(run_dir, "category_mc"), _predictions(run_dir, "category_mc_lm_eval")
    assert len(theirs) == len(ids) == 36
    for doc_id, item_id in enumerate(ids):
        mine, lm = ours[item_id], theirs[str(doc_id)]
        for key in ("reference", "base_output", "tuned_output", "base_score", "tuned_score"):
            assert mine[key] == lm[key], (doc_id, key, mine, lm)
    assert sum(p["base_output"] != p["tuned_output"] for p in theirs.values()) >= 3  # lm-eval really loaded the adapter


@pytest.mark.skipif(not (SHARED / "mmlu").is_dir(), reason=f"{SHARED}/mmlu is absent: the real datasets are not on this machine")
def test_ftpipe_and_lm_eval_agree_item_by_item_on_mmlu(tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    from ftpipe.data import prepare_data
    from ftpipe.evaluation.generation import ModelSpec, load_model
    from ftpipe.evaluation.lm_eval_ import score_lm_eval
    from ftpipe.evaluation.scoring import score_task

    csv = SHARED / "mmlu" / "test" / "abstract_algebra_test.csv"
    spec_path = tmp_path / "mmlu.yaml"
    spec_path.write_text(f"""
name: mmlu-agreement
base_model: tiny-llama
tasks:
  - {{name: colors, source: {FIXTURES / 'data' / 'colors.jsonl'}, prompt: "{{{{ question }}}}", target: "{{{{ color }}}}"}}
evaluation:
  held_out:
    - name: mmlu_ours
      source: {csv}
      kind: multiple_choice
      chat_template: false
      prompt: "{{{{ question.strip() }}}}\\nAnswer:"
      choices: [choice0, choice1, choice2, choice3]
      answer: answer
      max_items: 1000
    - name: mmlu_lm_eval
      kind: lm_eval
      lm_eval: {{task: {ROOT / 'pipelines' / '_lm_eval' / 'mmlu_abstract_algebra.yaml'}}}
      max_items: 1000
""")
    loaded = load_spec(spec_path)
    prepared = prepare_data(loaded, AutoTokenizer.from_pretrained(tiny_llama_dir), 2048)
    ours_data, probe = prepared.tasks["mmlu_ours"], prepared.tasks["mmlu_lm_eval"]
    model = load_model(ModelSpec(base_path=str(tiny_llama_dir), device="cpu"))
    ours = score_task(model, ours_data.task, ours_data.eval_items, [i.prompt for i in ours_data.eval_items], loaded.spec)
    theirs = score_lm_eval(model.spec, model.dtype, model.device, probe.task, probe.lm_eval_task, loaded.spec)
    by_id = {item.item_id: (score, output, item) for item, score, output in zip(ours_data.eval_items, ours.scores, ours.outputs)}
    ids = _ids_by_line(csv, ours_data.task)
    assert len(theirs.scores) == len(ids) == 100
    for doc_id, (item_id, score, output, their_item) in enumerate(zip(ids, theirs.scores, theirs.outputs, theirs.items)):
        our_score, our_output, our_item = by_id[item_id]
        assert their_item["prompt"] == our_item.prompt and their_item["choices"] == our_item.choices, doc_id
        assert (score, output) == (our_score, our_output), doc_id  # the same option chosen, the same verdict
