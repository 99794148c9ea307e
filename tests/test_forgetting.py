"""Issue 14: forgetting diagnosis (knowledge lost or format drifted?), `ftpipe evaluate --model`, self-generated replay.

The arithmetic is tested on constructed numbers, one case per verdict; the model passes on the
tiny random Llama, with a held-out probe built from the base model's own answers so that the tuned
model has something to forget.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.data import EvalItem
from ftpipe.evaluation.diagnosis import (
    KEPT,
    LOST,
    MIXED,
    NO_DROP,
    ReferenceEvidence,
    candidate_sets,
    diagnose_task,
    knowledge_verdict,
    output_changes,
    rank_of_first,
    recovery_examples,
    skeleton,
)
from ftpipe.evaluation.scoring import TaskScores
from ftpipe.spec import PipelineSpec, TaskSpec

SPEC = PipelineSpec.model_validate({"name": "f", "base_model": "tiny-llama",
                                    "tasks": [{"name": "a", "source": "a.jsonl", "target": "{{ y }}"}],
                                    "evaluation": {"bootstrap_resamples": 1000}})
TASK = TaskSpec.model_validate({"name": "capitals", "source": "c.jsonl", "kind": "contains", "answer": "aliases"})
CITIES = ["Accra", "Lima", "Cairo", "Oslo", "Paris", "Rome", "Bern", "Kyiv", "Quito", "Dakar"] * 4


def items(n: int = 40) -> list[EvalItem]:
    return [EvalItem(task="capitals", item_id=f"i{j}", prompt="<p>\n", user_message=f"What is the capital of country {j}?",
                     reference=CITIES[j], answers=[CITIES[j]]) for j in range(n)]


def evidence(ranks: list[int], ll: float) -> ReferenceEvidence:
    return ReferenceEvidence(ll=[ll * 2] * len(ranks), tokens=[2] * len(ranks), ranks=ranks,
                             candidates=[["x"] * 5 for _ in ranks])


# --------------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("preferred, recovered, base, expected", [
    ((-0.02, -0.10, +0.05), 0.80, (0.82, 0.70, 0.92), KEPT),    # reference as preferred as before, k-shot back in the base CI
    ((-0.60, -0.75, -0.45), 0.20, (0.82, 0.70, 0.92), LOST),    # reference ranks worse, and k examples do not help
    ((-0.02, -0.10, +0.05), 0.40, (0.82, 0.70, 0.92), MIXED),   # still preferred, but the examples do not bring it back
    ((-0.60, -0.75, -0.45), 0.75, (0.82, 0.70, 0.92), MIXED),   # recovered, but the reference is less likely
    ((-0.30, -0.50, 0.00), 0.70, (0.82, 0.70, 0.92), KEPT),     # the boundaries count as kept: high >= 0, recovered >= low
])
def test_verdict_rule(preferred, recovered, base, expected):
    verdict, checks = knowledge_verdict(preferred, recovered, base)
    assert verdict == expected
    assert checks["reference_still_preferred"] == (preferred[2] >= 0)
    assert checks["recovered_within_base_ci"] == (recovered >= base[1])


def test_knowledge_kept_format_drifted_case():
    """Base right on 32 of 40 in full sentences; tuned answers with the country (wrong) on 28 of those; the
    reference still ranks first as often as under base, and 3 examples bring the score back."""
    its = items()
    base = TaskScores("contains", [1.0] * 32 + [0.0] * 8, [f"The capital is {c}." for c in CITIES[:40]])
    tuned_scores = [1.0] * 4 + [0.0] * 36
    tuned = TaskScores("contains", tuned_scores, [CITIES[j] if tuned_scores[j] else f"country {j}" for j in range(40)])
    recovered = TaskScores("contains", [1.0] * 31 + [0.0] * 9, [CITIES[j] for j in range(40)])
    ranks = [1] * 34 + [2] * 6
    entry, rows = diagnose_task(TASK, its, base, tuned, recovered, evidence(ranks, -1.5), evidence(ranks, -0.9), SPEC,
                                training_targets=["billing", "refund", "item=mug; qty=2"], shots_source="3 spare rows")
    assert entry["verdict"] == KEPT and entry["judged_on"] == "reference_top1"
    assert entry["reference_top1"]["base"] == entry["reference_top1"]["tuned"] == pytest.approx(34 / 40)
    assert entry["reference_top1"]["ci_low"] == entry["reference_top1"]["ci_high"] == 0  # identical ranks: no difference
    assert entry["reference_ll_per_token"]["delta"] == pytest.approx(0.6)  # -0.9 - (-1.5) per token
    assert entry["base_score"]["ci_low"] < 0.8 < entry["base_score"]["ci_high"]
    assert entry["recovered_score"]["value"] == pytest.approx(31 / 40)
    assert entry["recovered_score"]["share_of_drop_recovered"] == pytest.approx((31 - 4) / (32 - 4))
    assert entry["items"]["flipped"] == 28 and entry["items"]["format_drifted"] == 28 and entry["items"]["knowledge_lost"] == 0
    flipped = [r for r in rows if "item_verdict" in r]
    assert len(flipped) == 28 and {r["item_verdict"] for r in flipped} == {"format drifted"}
    assert rows[5]["reference_ll_base"] == pytest.approx(-3.0) and rows[5]["rank_tuned"] == 1
    changes = entry["output_changes"]
    assert changes["base"]["mean_words"] == pytest.approx(4.0) and changes["tuned"]["mean_words"] < 2.0
    assert changes["tuned"]["echoes_the_question"] > 0.8 and changes["base"]["echoes_the_question"] == 0
    assert changes["base"]["first_words"][0] == ["the capital", 40]
    assert "knowledge kept, format drifted" in entry["summary"] and "of the drop recovered" in entry["summary"]


def test_knowledge_lost_case():
    """The reference falls from first to lower ranks and k examples do not bring the answers back."""
    its = items()
    base = TaskScores("contains", [1.0] * 32 + [0.0] * 8, ["x"] * 40)
    tuned = TaskScores("contains", [1.0] * 4 + [0.0] * 36, ["y"] * 40)
    recovered = TaskScores("contains", [1.0] * 6 + [0.0] * 34, ["z"] * 40)
    base_ev = evidence([1] * 34 + [2] * 6, -1.0)
    tuned_ev = evidence([1] * 6 + [4] * 34, -3.0)
    entry, rows = diagnose_task(TASK, its, base, tuned, recovered, base_ev, tuned_ev, SPEC, training_targets=[])
    assert entry["verdict"] == LOST
    assert entry["reference_top1"]["delta"] == pytest.approx(6 / 40 - 34 / 40)
    assert entry["reference_top1"]["ci_high"] < 0
    assert not entry["checks"]["recovered_within_base_ci"]
    assert entry["items"]["knowledge_lost"] == 28 - 2  # items 4 and 5 flipped but were recovered
    assert entry["items"]["format_drifted"] == 2
    assert "knowledge lost" in entry["summary"]


def test_log_likelihood_decides_when_the_task_has_no_other_answers():
    its = items(30)
    base = TaskScores("contains", [1.0] * 30, ["x"] * 30)
    tuned = TaskScores("contains", [0.0] * 30, ["y"] * 30)
    recovered = TaskScores("contains", [1.0] * 30, ["x"] * 30)
    none = [None] * 30
    worse = ReferenceEvidence(ll=[-4.0 - 0.1 * (j % 3) for j in range(30)], tokens=[2] * 30, ranks=none)
    same = ReferenceEvidence(ll=[-1.0 - 0.1 * (j % 3) for j in range(30)], tokens=[2] * 30, ranks=none)
    entry, _ = diagnose_task(TASK, its, base, tuned, recovered, same, worse, SPEC, training_targets=[])
    assert entry["judged_on"] == "reference_ll_per_token" and entry["reference_top1"] is None
    assert entry["reference_ll_per_token"]["delta"] == pytest.approx(-1.5) and entry["verdict"] == MIXED


def test_candidates_are_other_answers_never_an_accepted_one():
    its = items(5)
    its[1].answers = ["Lima", "Accra"]  # an item that also accepts the next item's answer... and the first's
    sets = candidate_sets(its, 3)
    assert sets[0] == ["Accra", "Lima", "Cairo", "Oslo"]
    assert sets[1][0] == "Lima" and "Accra" not in sets[1] and len(sets[1]) == 4
    assert candidate_sets(its, 0) == [[i.reference] for i in its]
    assert rank_of_first([-1.0, -2.0, -0.5]) == 2 and rank_of_first([-1.0, -1.0]) == 1 and rank_of_first([-1.0]) is None


def test_output_changes_name_training_format():
    targets = ["item=mug; qty=2; color=red; city=Oslo", "item=pen; qty=1; color=blue; city=Rome", "billing", "refund"]
    base = ["The capital of Ghana is Accra.", "Lima is the capital.", "It is Cairo."]
    tuned = ["Ghana", "item=peru; qty=1; color=red; city=Lima", "billing"]
    questions = ["What is the capital of Ghana?", "What is the capital of Peru?", "What is the capital of Egypt?"]
    c = output_changes(base, tuned, questions, targets)
    assert c["tuned"]["copied_training_answer"] == pytest.approx(1 / 3) and c["base"]["copied_training_answer"] == 0
    assert c["tuned"]["training_answer_shape"] == pytest.approx(1 / 3)
    assert c["tuned"]["echoes_the_question"] == pytest.approx(1 / 3)
    assert skeleton("item=mug; qty=2") == "=;="


def test_recovery_examples_come_from_rows_not_evaluated_or_never_the_item_itself():
    from ftpipe.data import TaskData

    data = TaskData(task=TASK, role="held_out", eval_items=items(5))
    shots, source = recovery_examples(data, 3)
    assert "other evaluated items" in source
    for item, ex in zip(data.eval_items, shots):
        assert len(ex) == 3 and item.item_id not in {e.item_id for e in ex}
    data.spare_items = items(8)[5:]
    shots, source = recovery_examples(data, 3)
    assert "not evaluated" in source and all([e.item_id for e in ex] == ["i5", "i6", "i7"] for ex in shots)


# --------------------------------------------------------------------------------------------- on the tiny model

TINY = Path(__file__).parent / "fixtures" / "specs" / "tiny_lora.yaml"
DIAGNOSE_ALWAYS = ["training.max_steps=2", "evaluation.diagnosis.always=true"]


@pytest.fixture(scope="module")
def diagnosed_run(tiny_llama_dir, tmp_path_factory):
    """A finished tiny run whose held-out generation probe is diagnosed (always: the random model forgets nothing)."""
    from ftpipe.lifecycle import run_pipeline

    root = tmp_path_factory.mktemp("runs")
    return root, run_pipeline(TINY, DIAGNOSE_ALWAYS, root).run_dir


def test_diagnosis_on_the_tiny_model_writes_evidence_per_item(diagnosed_run):
    from ftpipe.evaluation.diagnosis import answer_continuation
    from ftpipe.evaluation.generation import load_model
    from ftpipe.evaluation.evaluate import tuned_model_spec
    from ftpipe.lifecycle import load_run_spec

    _, run_dir = diagnosed_run
    report = json.loads((run_dir / "report.json").read_text())
    tasks = {t["task"]: t for t in report["tasks"]}
    assert "diagnosis" not in tasks["category_mc"] and "diagnosis" not in tasks["colors"]  # multiple choice, target
    d = tasks["say_word"]["diagnosis"]
    assert d["verdict"] == NO_DROP and d["k"] == 3 and "other evaluated items" in d["examples_from"]
    assert d["checks"]["recovered_within_base_ci"]  # the evidence is there all the same
    assert d["judged_on"] == "reference_top1" and d["reference_top1"]["candidates"] == 5
    rows = [json.loads(line) for line in (run_dir / "diagnosis" / "say_word.jsonl").read_text().splitlines()]
    assert len(rows) == tasks["say_word"]["n"] and all(1 <= r["rank_base"] <= 5 for r in rows)
    assert "Forgetting diagnosis" in (run_dir / "report.md").read_text()
    # the per-item numbers are the tuned model's log-likelihood of the reference, recomputed here
    spec = load_run_spec(run_dir).spec
    items = json.loads((run_dir / "eval_items.json").read_text())["say_word"]
    model = load_model(tuned_model_spec(run_dir, spec, str(tiny_llama_dir_of(run_dir)), "cpu"))
    (ll, n), = model.loglikelihood([items[0]["prompt"]], [answer_continuation(items[0]["prompt"], items[0]["reference"])])
    assert rows[0]["reference_ll_tuned"] == pytest.approx(ll, abs=1e-4) and rows[0]["reference_tokens"] == n


def tiny_llama_dir_of(run_dir: Path) -> str:
    from ftpipe.lifecycle import load_manifest

    return load_manifest(run_dir).base_model


@pytest.mark.parametrize("adapter_only", [True, False], ids=["adapter", "merged"])
def test_evaluate_model_on_an_exported_run_gives_the_runs_numbers(diagnosed_run, tmp_path, adapter_only):
    from ftpipe.lifecycle import export_run
    from ftpipe.lifecycle.external import evaluate_model

    root, run_dir = diagnosed_run
    exported = export_run(str(run_dir), tmp_path / "model", adapter_only=adapter_only, root=root)
    result = evaluate_model(TINY, exported, DIAGNOSE_ALWAYS, root=tmp_path / "ext")
    own = {t["task"]: t for t in json.loads((run_dir / "report.json").read_text())["tasks"]}
    theirs = {t["task"]: t for t in result.report["tasks"]}
    assert set(own) == set(theirs)
    for name, t in own.items():
        for key in ("n", "base", "tuned", "delta", "ci_low", "ci_high", "verdict"):
            assert theirs[name][key] == pytest.approx(t[key]), (name, key)
    assert theirs["say_word"]["diagnosis"]["reference_ll_per_token"]["tuned"] == pytest.approx(
        own["say_word"]["diagnosis"]["reference_ll_per_token"]["tuned"], abs=1e-4)
    assert result.folder.parent.name == "external" and (result.folder / "report.md").exists()
    assert result.report["model_source"]["kind"] == ("adapter" if adapter_only else "full")
    assert result.gates_passed is None  # the tiny spec has no gates


def test_evaluate_model_is_a_ci_gate(diagnosed_run, tmp_path):
    """With a gate the tuned model cannot pass, `ftpipe evaluate --model` exits 3 after writing its report."""
    from typer.testing import CliRunner

    from ftpipe.cli import app
    from ftpipe.lifecycle import export_run

    root, run_dir = diagnosed_run
    exported = export_run(str(run_dir), tmp_path / "adapter", adapter_only=True, root=root)
    result = CliRunner().invoke(app, ["evaluate", str(TINY), "--model", str(exported), "--runs-dir", str(tmp_path / "ext"),
                                      "--set", "gates.min_gain=0.5"])
    assert result.exit_code == 3, result.output
    assert "gates FAILED" in result.output and "min_gain[colors]" in result.output
    assert list((tmp_path / "ext" / "tiny-lora" / "external").glob("*/report.json"))
    bad = CliRunner().invoke(app, ["evaluate", str(TINY), "--model", str(tmp_path)])
    assert bad.exit_code == 2 and "neither a Hugging Face model folder" in bad.output


# --------------------------------------------------------------------------------------------- self-generated replay


def _pool(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in questions))
    return path


GENERAL = ["How many hours are in a day?", "Subtract 75 from 82.", "Which number is smaller, 549 or 943?",
           "Name a primary color.", "What is two plus two?", "Spell the word cat.", "Give a synonym of big.",
           "What day comes after Monday?", "Count to three.", "Is ice cold?"]


def _replay_set(pool: Path, **extra) -> list[str]:
    sg = {"source": str(pool), "chat_template": False, "max_prompts": 8, "max_new_tokens": 4, **extra}
    return [f"data.replay={json.dumps({'share': 0.2, 'self_generated': sg})}"]


def test_self_generated_replay_is_generated_once_cached_and_trained_on(tiny_llama_dir, tmp_path, monkeypatch):
    from ftpipe.data import prepare_for_base_model, validate_spec
    from ftpipe.lifecycle.replay import ensure_self_generated_replay

    monkeypatch.setenv("FTPIPE_HOME", str(tmp_path / "home"))
    loaded = validate_spec(TINY, _replay_set(_pool(tmp_path / "pool.jsonl", GENERAL)))
    path = ensure_self_generated_replay(loaded, str(tiny_llama_dir))
    assert path.parent == tmp_path / "home" / "cache" / "replay"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == GENERAL[:8] and all(r["response"].strip() for r in rows)
    assert json.loads(path.with_suffix(".meta.json").read_text())["answered"] == 8
    stamp = path.stat().st_mtime_ns
    assert ensure_self_generated_replay(loaded, str(tiny_llama_dir)) == path and path.stat().st_mtime_ns == stamp  # cached

    prepared = prepare_for_base_model(loaded, str(tiny_llama_dir))
    assert prepared.tasks["self_replay"].role == "replay"
    replayed = [r for r in prepared.train_rows if r["task"] == "self_replay"]
    assert replayed and {r["target"] for r in replayed} <= {r["response"] for r in rows}
    assert {r["user_message"] for r in replayed} <= set(GENERAL[:8])
    assert 0 < prepared.mixture["self_replay"]["row_share"] < 0.5
    assert any(k.startswith("self_replay:") for k in prepared.input_hashes)  # the pool is part of the data fingerprint

    other = validate_spec(TINY, _replay_set(tmp_path / "pool.jsonl", max_new_tokens=6))
    assert ensure_self_generated_replay(other, str(tiny_llama_dir)) != path  # keyed by the prompt set and generation


def test_self_generated_replay_refuses_a_pool_that_overlaps_the_probes(tiny_llama_dir, tmp_path, monkeypatch):
    from ftpipe.data import validate_spec
    from ftpipe.errors import DataError
    from ftpipe.lifecycle.replay import ensure_self_generated_replay

    monkeypatch.setenv("FTPIPE_HOME", str(tmp_path / "home"))
    probes = [json.loads(line)["question"] for line in (TINY.parent.parent / "data" / "say_word.jsonl").read_text().splitlines()]
    pool = _pool(tmp_path / "leaky.jsonl", GENERAL[:5] + probes[:3])
    loaded = validate_spec(TINY, _replay_set(pool) + ["data.leakage.action=drop"])  # drop or not: refused
    with pytest.raises(DataError, match=r"prompt pool overlaps evaluated items \(say_word: 3\)"):
        ensure_self_generated_replay(loaded, str(tiny_llama_dir))
    assert not (tmp_path / "home" / "cache" / "replay").exists()  # refused before generating anything


def test_self_generated_replay_spec_errors_are_one_line():
    from ftpipe.errors import SpecError
    from ftpipe.spec import load_spec

    with pytest.raises(SpecError, match=r"data.replay: give exactly one of task or self_generated"):
        load_spec(TINY, ['data.replay={"share": 0.2}'])
