"""Stable row identity and bad data found at preparation (issue 12).

A row's split depends only on the canonical values its task reads: appending rows, adding or
reordering columns, re-formatting numbers or rewording a template never moves an earlier row.
Bad rows are refused (or counted under `bad_rows: skip`) with the file, the line and the fix,
before any model time is spent.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ftpipe import load_spec
from ftpipe.data import prepare_data
from ftpipe.errors import DataError, SpecError

DATASETS = Path(__file__).resolve().parent.parent / "datasets"
LABELS = ["billing", "shipping", "technical"]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def ticket_spec(tmp_path: Path, source: str, prompt: str = "Route: {{ message }} ({{ priority }})", extra: str = "",
                name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"""\
name: t
base_model: tiny-llama
tasks:
  - name: tickets
    source: {source}
    kind: classification
    labels: [{", ".join(LABELS)}]
    prompt: "{prompt}"
    target: "{{{{ label }}}}"
data:
  validation_fraction: 0.1
  test_fraction: 0.3
{extra}""")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def splits_by_message(prepared) -> dict[str, str]:
    """The ticket's message (as rendered into the prompt, up to its priority) -> split."""
    task = prepared.tasks["tickets"]
    out = {}
    for split, rows in (("train", task.train), ("validation", task.validation)):
        for r in rows:
            out[_message(r["user_message"])] = split
    for item in task.eval_items:
        out[_message(item.user_message)] = "test"
    return out


def _message(user_message: str) -> str:
    return user_message.split(" (")[0].removeprefix("Please route this ticket: ").removeprefix("Route: ")


def ticket_rows(seed: int, n: int, start: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"message": f"ticket {start + i}: my {rng.choice(['card', 'parcel', 'router'])} needs help",
             "label": rng.choice(LABELS), "priority": rng.randint(1, 3)} for i in range(n)]


# --------------------------------------------------------------------------------------------
# Identity: nothing a scheduled job does to a growing source moves an earlier row
# --------------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), appended=st.integers(1, 40), new_column=st.booleans(),
       reorder=st.booleans(), floats=st.booleans(), reword=st.booleans())
def test_growing_a_source_never_moves_an_earlier_row(tmp_path_factory, tokenizer, seed, appended, new_column,
                                                     reorder, floats, reword):
    tmp = tmp_path_factory.mktemp("grow")
    old = ticket_rows(seed, 60)
    src = write_jsonl(tmp / "t.jsonl", old)
    before = splits_by_message(prepare_data(load_spec(ticket_spec(tmp, str(src))), tokenizer, 2048))

    rng = random.Random(seed + 1)
    grown = [dict(r) for r in old] + ticket_rows(seed + 2, appended, start=1000)
    for r in grown:
        if new_column:
            r["channel"] = rng.choice(["mail", "chat"]) if r["message"].startswith("ticket 1") else None
        if floats:
            r["priority"] = float(r["priority"])  # 2 written as 2.0
        if reorder:
            keys = list(r)
            rng.shuffle(keys)
            r.update({k: r.pop(k) for k in keys})
    write_jsonl(src, grown)
    prompt = "Please route this ticket: {{ message }} (priority {{ priority }})" if reword else None
    spec = ticket_spec(tmp, str(src), **({"prompt": prompt} if prompt else {}))
    after_prepared = prepare_data(load_spec(spec), tokenizer, 2048)
    after = splits_by_message(after_prepared)
    moved = {m: (before[m], after.get(m)) for m in before if after.get(m) != before[m]}
    assert not moved


def test_appending_rows_with_a_new_column_to_ticket_routing_moves_no_test_item(tmp_path, tokenizer):
    """The issue's scenario: 50 rows carrying a `channel` column appended to datasets/ticket_routing."""
    rows = [json.loads(line) for line in (DATASETS / "ticket_routing" / "ticket_routing.jsonl").read_text().splitlines()]
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    spec_text = (Path(__file__).resolve().parent.parent / "pipelines" / "demo.yaml").read_text()
    del spec_text
    spec = ticket_spec(tmp_path, str(src), prompt="Route this support ticket: {{ message }}",
                       extra="evaluation:\n  max_items: 1000\n")
    spec.write_text(spec.read_text().replace("labels: [billing, shipping, technical]",
                                             "labels: [billing, shipping, technical, account, refund]"))
    before = splits_by_message(prepare_data(load_spec(spec), tokenizer, 2048))
    extra = [{"message": f"New channel ticket {i}: please help with my order", "label": "shipping", "channel": "chat"}
             for i in range(50)]
    write_jsonl(src, rows + extra)
    after = splits_by_message(prepare_data(load_spec(spec), tokenizer, 2048))
    tested_before = {m for m, s in before.items() if s == "test"}
    assert len(tested_before) > 100
    assert {m for m in tested_before if after[m] != "test"} == set()


def test_id_field_gives_identity_to_a_column(tmp_path, tokenizer):
    rows = [{"id": f"r{i}", "message": f"ticket number {i} about a card", "label": LABELS[i % 3]} for i in range(60)]
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    spec = ticket_spec(tmp_path, str(src), prompt="{{ message }}", extra="")
    spec.write_text(spec.read_text().replace("    target:", "    id_field: id\n    target:"))
    before = splits_by_message(prepare_data(load_spec(spec), tokenizer, 2048))
    # editing a message's text keeps its split, because the id column says it is the same row
    edited = [dict(r, message=r["message"] + " (edited)") for r in rows]
    write_jsonl(src, edited)
    after = splits_by_message(prepare_data(load_spec(spec), tokenizer, 2048))
    assert before == {m.replace(" about a card", "").replace(" (edited)", ""): s for m, s in after.items()} or \
        before == {m.removesuffix(" (edited)"): s for m, s in after.items()}


# --------------------------------------------------------------------------------------------
# Bad data: the row and the fix, at preparation
# --------------------------------------------------------------------------------------------


def prepare(spec: Path, tokenizer):
    return prepare_data(load_spec(spec), tokenizer, 2048)


@pytest.mark.parametrize("label", ["sales", 3])
def test_label_outside_the_label_set_is_refused_or_counted(tmp_path, tokenizer, label):
    rows = ticket_rows(0, 30)
    rows[6]["label"] = label
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match=rf"t\.jsonl line 7: label '{label}' is not one of the task's labels"):
        prepare(ticket_spec(tmp_path, str(src)), tokenizer)
    skipping = prepare(ticket_spec(tmp_path, str(src), extra="  bad_rows: skip\n"), tokenizer)
    assert skipping.tasks["tickets"].skipped_reasons == {"label": 1}


def test_labels_are_matched_whatever_their_case_and_trained_as_spelled(tmp_path, tokenizer):
    rows = ticket_rows(0, 30)
    for r in rows:
        r["label"] = f"  {r['label'].upper()} "
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    prepared = prepare(ticket_spec(tmp_path, str(src)), tokenizer)
    task = prepared.tasks["tickets"]
    assert {r["target"] for r in task.train} <= set(LABELS)
    assert {i.reference for i in task.eval_items} <= set(LABELS)


def test_empty_file_is_named_at_validation_and_at_preparation(tmp_path, tokenizer):
    src = tmp_path / "t.jsonl"
    src.write_text("\n  \n")
    with pytest.raises(SpecError, match=r"tasks\.0\.source\.path: .*t\.jsonl is empty \(no rows\)"):
        load_spec(ticket_spec(tmp_path, str(src)))
    from ftpipe.data.sources import read_records

    with pytest.raises(DataError, match=r"t\.jsonl: empty \(no rows\)"):
        read_records(src)


def test_json_array_saved_as_jsonl_says_so(tmp_path, tokenizer):
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps(ticket_rows(0, 30)))
    with pytest.raises(DataError, match=r"t\.jsonl: holds a JSON array, not JSON Lines"):
        prepare(ticket_spec(tmp_path, str(src)), tokenizer)


def test_invalid_json_line_is_reported_by_line_number(tmp_path, tokenizer):
    lines = [json.dumps(r) for r in ticket_rows(0, 30)]
    lines[12] = lines[12][:-3]  # cut the closing of line 13
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"t\.jsonl line 13: invalid JSON"):
        prepare(ticket_spec(tmp_path, str(src)), tokenizer)


def test_utf8_byte_order_mark_is_accepted(tmp_path, tokenizer):
    src = tmp_path / "t.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in ticket_rows(0, 30)).encode())
    load_spec(ticket_spec(tmp_path, str(src)))  # validate reads its columns through the BOM
    prepared = prepare(ticket_spec(tmp_path, str(src)), tokenizer)
    assert sum(len(x) for x in (prepared.tasks["tickets"].train, prepared.tasks["tickets"].eval_items)) > 20
    csv = tmp_path / "t.csv"
    csv.write_bytes(b"\xef\xbb\xbfmessage,label,priority\n" + "".join(
        f"ticket {i} about a card,{LABELS[i % 3]},1\n" for i in range(30)).encode())
    assert prepare(ticket_spec(tmp_path, str(csv)), tokenizer).tasks["tickets"].eval_items


def test_object_where_text_is_expected(tmp_path, tokenizer):
    rows = ticket_rows(0, 30)
    rows[3]["message"] = {"subject": "card", "body": "help"}
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match=r"t\.jsonl line 4: field 'message' holds an object; templates need text"):
        prepare(ticket_spec(tmp_path, str(src)), tokenizer)


def test_a_list_the_template_indexes_or_filters_is_not_refused(tmp_path, tokenizer):
    """Only values printed bare must be text: `{{ tags[0] }}` and `{{ tags | join }}` use a list on purpose (mbpp)."""
    rows = ticket_rows(0, 30)
    for r in rows:
        r["tags"] = ["urgent", "web"]
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    prepared = prepare(ticket_spec(tmp_path, str(src), prompt="Route: {{ message }} [{{ tags[0] }}; {{ tags | join(',') }}]"),
                       tokenizer)
    assert "[urgent; urgent,web]" in prepared.train_rows[0]["prompt"]


def mc_spec(tmp_path: Path, src: Path) -> Path:
    path = tmp_path / "mc.yaml"
    path.write_text(f"""\
name: t
base_model: tiny-llama
tasks:
  - name: tickets
    source: {src}
    kind: classification
    labels: [billing, shipping, technical]
    prompt: "{{{{ message }}}}"
    target: "{{{{ label }}}}"
evaluation:
  held_out:
    - {{name: mc, source: {src.parent / 'mc.jsonl'}, kind: multiple_choice, prompt: "{{{{ question }}}}",
       choices: choices, answer: answer}}
""")
    return path


@pytest.mark.parametrize("choices, answer, message", [
    (["a cat", "", "a dog"], 0, "an option is empty"),
    (["a cat", "A  cat", "a dog"], 0, "option 'A  cat' repeats an earlier option"),
    (["a cat", "a dog"], 5, "answer 5 is not an option index 0..1"),
    (["only one"], 0, "needs at least 2 options"),
])
def test_broken_multiple_choice_rows_are_found_before_scoring(tmp_path, tokenizer, choices, answer, message):
    src = write_jsonl(tmp_path / "t.jsonl", ticket_rows(0, 30))
    mc = [{"question": f"Which animal {i}?", "choices": ["a cat", "a dog", "a cow"], "answer": i % 3} for i in range(10)]
    mc[4] = {"question": "Which animal?", "choices": choices, "answer": answer}
    write_jsonl(tmp_path / "mc.jsonl", mc)
    with pytest.raises(DataError, match=rf"mc\.jsonl line 5: .*{message}"):
        prepare(mc_spec(tmp_path, src), tokenizer)


# --------------------------------------------------------------------------------------------
# Leakage, replay, explicit split files
# --------------------------------------------------------------------------------------------


def test_leakage_drop_that_leaves_too_few_items_stops_before_training(tmp_path, tokenizer):
    rows = ticket_rows(0, 40)
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    probe = write_jsonl(tmp_path / "probe.jsonl", [{"message": r["message"], "label": r["label"]} for r in rows[:12]]
                        + [{"message": f"unrelated question {i} about the weather", "label": "billing"} for i in range(3)])
    extra = (f"  leakage: {{action: drop}}\nevaluation:\n  min_items: 5\n  held_out:\n"
             f"    - {{name: probe, source: {probe}, kind: exact_match, prompt: '{{{{ message }}}}', target: '{{{{ label }}}}'}}\n")
    with pytest.raises(DataError, match=r"task probe: \d items left to evaluate after dropping leaked items \(evaluation.min_items is 5\)"):
        prepare(ticket_spec(tmp_path, str(src), prompt="{{ message }}", extra=extra), tokenizer)


def test_replay_honours_max_train_rows(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "t.jsonl", ticket_rows(0, 60))
    replay = write_jsonl(tmp_path / "r.jsonl", [{"message": f"general instruction {i}", "label": "billing"} for i in range(100)])
    extra = (f"  replay:\n    share: 0.5\n    task: {{name: general, source: {replay}, prompt: '{{{{ message }}}}', "
             f"target: '{{{{ label }}}}', max_train_rows: 7}}\n")
    prepared = prepare(ticket_spec(tmp_path, str(src), prompt="{{ message }}", extra=extra), tokenizer)
    replayed = [r for r in prepared.train_rows if r["task"] == "general"]
    assert len(replayed) == 7 and len({r["row_id"] for r in replayed}) == 7


def test_duplicates_across_explicit_split_files_count_as_leakage(tmp_path, tokenizer):
    rows = ticket_rows(0, 40)
    train = write_jsonl(tmp_path / "train.jsonl", rows[:30])
    test = write_jsonl(tmp_path / "test.jsonl", rows[25:])  # five rows sit in both files
    spec = tmp_path / "split.yaml"
    spec.write_text(f"""\
name: t
base_model: tiny-llama
tasks:
  - name: tickets
    source: {{train: {train}, test: {test}}}
    kind: classification
    labels: [billing, shipping, technical]
    prompt: "{{{{ message }}}}"
    target: "{{{{ label }}}}"
""")
    with pytest.raises(DataError, match=r"leakage: evaluated items also in training \(tickets: 5 exact"):
        prepare(spec, tokenizer)


def test_hub_source_fingerprints_by_the_cached_revision(tmp_path, monkeypatch):
    from ftpipe.data import sources

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    ref = tmp_path / "datasets--org--name" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("abc123\n")
    assert sources.hub_revision("org/name") == "revision:abc123"
    ref.write_text("def456\n")
    assert sources.hub_revision("org/name") == "revision:def456"
