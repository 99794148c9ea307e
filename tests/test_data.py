"""The data layer: sources, strict templates, chat rendering, stable splits, mixing, leakage, bad rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from ftpipe.data import find_leaks, mixture_counts, prepare_data, row_identity, split_of, take_rows
from ftpipe.errors import DataError
from ftpipe.data.sources import read_source, text_passages
from ftpipe import load_spec

ROWS = [{"question": f"What is item number {i} called in the catalogue?", "answer": f"thing{i}"} for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def spec_file(tmp_path: Path, source: str, extra: str = "", task_extra: str = "") -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(f"""\
name: t
base_model: tiny-llama
tasks:
  - name: a
    source: {source}
    prompt: "{{{{ question }}}}"
    target: "{{{{ answer }}}}"
{task_extra}{extra}""")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------
# Sources: every format reads to the same rows
# --------------------------------------------------------------------------------------------


def test_every_source_format_reads_the_same_rows(tmp_path):
    import datasets

    df = pd.DataFrame(ROWS)
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_csv(tmp_path / "d.tsv", index=False, sep="\t")
    df.to_parquet(tmp_path / "d.parquet")
    datasets.Dataset.from_pandas(df).save_to_disk(str(tmp_path / "hf"))
    for name in ("d.jsonl", "d.json", "d.csv", "d.tsv", "d.parquet", "hf"):
        read = read_source(tmp_path / name)
        assert read.to_dict("records") == ROWS, name


def test_text_source_joins_headings_to_their_paragraph(tmp_path):
    text = "1. Scope\n\n" + "This paragraph has more than twelve words in it so it stands on its own.\n\n" + "Tail words only."
    passages = text_passages(text)
    assert passages[0].startswith("1. Scope\nThis paragraph") and passages[-1] == "Tail words only."


def test_hub_dataset_without_network_fails_clearly():
    with pytest.raises(DataError, match="no network and not in the hub cache"):
        read_source(None, hub="nobody/no-such-dataset-ftpipe")


def test_unreadable_file_names_it(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="bad.jsonl: cannot read as jsonl"):
        read_source(bad)


# --------------------------------------------------------------------------------------------
# Templates, chat rendering, bad rows
# --------------------------------------------------------------------------------------------


def test_prompts_are_wrapped_in_the_chat_template(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    loaded = load_spec(spec_file(tmp_path, str(src), task_extra='    system_prompt: "You are terse."\n'))
    prepared = prepare_data(loaded, tokenizer, 2048)
    row = prepared.tasks["a"].train[0]
    assert row["prompt"].startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is item number")
    assert row["prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert row["target"].startswith("thing")
    item = prepared.tasks["a"].eval_items[0]
    assert item.prompt.endswith("<|im_start|>assistant\n") and item.reference.startswith("thing")


def test_plain_prompts_without_chat_template(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    loaded = load_spec(spec_file(tmp_path, str(src), task_extra="    chat_template: false\n"))
    row = prepare_data(loaded, tokenizer, 2048).tasks["a"].train[0]
    assert row["prompt"].startswith("What is item number") and "<|im_start|>" not in row["prompt"]


def test_missing_field_names_file_and_row(tmp_path, tokenizer):
    rows = ROWS[:10] + [{"question": "no answer here"}] + ROWS[10:]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    loaded = load_spec(spec_file(tmp_path, str(src)))
    with pytest.raises(DataError, match=r"d\.jsonl line 11: field 'answer' is missing or empty"):
        prepare_data(loaded, tokenizer, 2048)
    skipping = load_spec(spec_file(tmp_path, str(src), extra="data:\n  bad_rows: skip\n"))
    assert prepare_data(skipping, tokenizer, 2048).tasks["a"].skipped_rows == 1


def test_csv_row_numbers_count_the_header(tmp_path, tokenizer):
    df = pd.DataFrame(ROWS)
    df.loc[4, "answer"] = ""
    df.to_csv(tmp_path / "d.csv", index=False)
    loaded = load_spec(spec_file(tmp_path, str(tmp_path / "d.csv")))
    with pytest.raises(DataError, match=r"d\.csv line 6: field 'answer'"):
        prepare_data(loaded, tokenizer, 2048)


def test_overlong_rows_are_refused_or_skipped(tmp_path, tokenizer):
    rows = ROWS + [{"question": "long " * 300, "answer": "x"}]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    # force the long row into training: with 61 rows and no test split it can only land there or in validation
    loaded = load_spec(spec_file(tmp_path, str(src), extra="training:\n  max_sequence_length: 128\ndata:\n  validation_fraction: 0\n  test_fraction: 0.01\n"))
    with pytest.raises(DataError, match=r"d\.jsonl row 61: \d+ tokens, over the limit of 128"):
        prepare_data(loaded, tokenizer, 2048)


# --------------------------------------------------------------------------------------------
# Splits: by content hash, stable when rows are appended
# --------------------------------------------------------------------------------------------


def test_splits_are_stable_when_rows_are_appended(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    before = prepare_data(load_spec(spec_file(tmp_path, str(src))), tokenizer, 2048)
    more = ROWS + [{"question": f"Which new entry is number {i}?", "answer": f"new{i}"} for i in range(40)]
    write_jsonl(src, more)
    after = prepare_data(load_spec(spec_file(tmp_path, str(src))), tokenizer, 2048)

    def split_map(p):
        task = p.tasks["a"]
        out = {r["target"]: "train" for r in task.train} | {r["target"]: "validation" for r in task.validation}
        return out | {i.reference: "test" for i in task.eval_items}

    old, new = split_map(before), split_map(after)
    assert all(new[answer] == split for answer, split in old.items())
    assert any(a.startswith("new") for a in new)


def test_split_fractions_follow_the_hash():
    ids = [row_identity({"i": i}, ["i"], "salt") for i in range(5000)]
    splits = [split_of(h, 0.1, 0.2) for h in ids]
    assert abs(splits.count("test") / 5000 - 0.2) < 0.02 and abs(splits.count("validation") / 5000 - 0.1) < 0.02


def test_explicit_split_files(tmp_path, tokenizer):
    write_jsonl(tmp_path / "train.jsonl", ROWS[:40])
    write_jsonl(tmp_path / "test.jsonl", ROWS[40:])
    spec = spec_file(tmp_path, "{train: train.jsonl, test: test.jsonl}")
    prepared = prepare_data(load_spec(spec), tokenizer, 2048)
    assert len(prepared.tasks["a"].train) == 40 and len(prepared.tasks["a"].eval_items) == 20


def test_held_out_tasks_never_train(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    held = write_jsonl(tmp_path / "h.jsonl", [{"q": f"Held question {i}?", "a": ["x"]} for i in range(10)])
    extra = f"evaluation:\n  held_out:\n    - {{name: h, source: {held}, kind: contains, prompt: '{{{{ q }}}}', answer: a}}\n"
    prepared = prepare_data(load_spec(spec_file(tmp_path, str(src), extra=extra)), tokenizer, 2048)
    assert {r["task"] for r in prepared.train_rows} == {"a"}
    assert len(prepared.tasks["h"].eval_items) == 10


# --------------------------------------------------------------------------------------------
# Mixing
# --------------------------------------------------------------------------------------------


def test_mixture_counts_by_strategy():
    sizes, weights = {"big": 900, "small": 100}, {"big": 1.0, "small": 1.0}
    assert mixture_counts(sizes, weights, "proportional") == {"big": 900, "small": 100}
    assert mixture_counts(sizes, {"big": 0.5, "small": 2.0}, "proportional") == {"big": 450, "small": 200}
    temp = mixture_counts(sizes, weights, "temperature", temperature=2.0)
    assert temp == {"big": 750, "small": 250}  # sqrt(900):sqrt(100) = 3:1 of 1000
    assert mixture_counts(sizes, weights, "capped", cap=300) == {"big": 300, "small": 100}


def test_take_rows_oversamples_whole_copies_then_samples():
    rows = [{"i": i} for i in range(10)]
    taken = take_rows(rows, 25, random.Random(0))
    counts = [sum(r["i"] == i for r in taken) for i in range(10)]
    assert len(taken) == 25 and min(counts) == 2 and max(counts) == 3


def test_realised_mixture_within_sampling_error(tmp_path, tokenizer):
    a = write_jsonl(tmp_path / "a.jsonl", ROWS * 1)
    b = write_jsonl(tmp_path / "b.jsonl", [{"question": f"Other question {i} here?", "answer": f"o{i}"} for i in range(200)])
    path = tmp_path / "multi.yaml"
    path.write_text(f"""\
name: m
base_model: tiny-llama
method: multitask
tasks:
  - {{name: a, source: {a}, prompt: "{{{{ question }}}}", target: "{{{{ answer }}}}", weight: 3.0}}
  - {{name: b, source: {b}, prompt: "{{{{ question }}}}", target: "{{{{ answer }}}}"}}
""")
    prepared = prepare_data(load_spec(path), tokenizer, 2048)
    train_a = len(prepared.tasks["a"].train)
    train_b = len(prepared.tasks["b"].train)
    mix = prepared.mixture
    assert mix["a"]["rows"] == round(3 * train_a) and mix["b"]["rows"] == train_b
    assert abs(mix["a"]["row_share"] - 3 * train_a / (3 * train_a + train_b)) < 1e-3
    assert mix["a"]["tokens"] > 0 and abs(mix["a"]["token_share"] + mix["b"]["token_share"] - 1) < 1e-3


# --------------------------------------------------------------------------------------------
# Leakage
# --------------------------------------------------------------------------------------------


def test_find_leaks_exact_and_near_and_clean():
    train = ["The quick brown fox jumps over the lazy dog near the river bank today",
             "Completely unrelated sentence about the weather in the mountains this winter season"]
    evaluated = ["the QUICK brown fox, jumps over the lazy dog near the river bank today!",  # exact after normalisation
                 "The quick brown fox jumps over the lazy dog near the river bank yesterday evening",  # near
                 "A new sentence that shares nothing at all with any training row whatsoever here"]
    leaks = find_leaks(train, evaluated, ngram=8, threshold=0.5)
    assert [(l["index"], l["kind"]) for l in leaks] == [(0, "exact"), (1, "near")]
    assert find_leaks(train, evaluated[2:], ngram=8, threshold=0.5) == []


def test_planted_leak_stops_or_is_dropped(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    planted = [{"q": r["question"].upper() + "!", "a": ["x"]} for r in ROWS[:10]]  # exact after normalisation
    planted += [{"q": f"A clean held-out question number {i}?", "a": ["x"]} for i in range(5)]
    held = write_jsonl(tmp_path / "h.jsonl", planted)
    extra = f"evaluation:\n  held_out:\n    - {{name: h, source: {held}, kind: contains, prompt: '{{{{ q }}}}', answer: a}}\n"
    dropping = load_spec(spec_file(tmp_path, str(src), extra=extra + "data:\n  leakage: {action: drop}\n"))
    prepared = prepare_data(dropping, tokenizer, 2048)
    trained = {r["user_message"] for r in prepared.train_rows}
    expected = sum(r["question"] in trained for r in ROWS[:10])
    assert expected >= 1
    assert prepared.leakage["tasks"]["h"]["dropped"] == expected
    assert len(prepared.tasks["h"].eval_items) == 15 - expected
    with pytest.raises(DataError, match=rf"leakage: .*h: {expected} exact, 0 near"):
        prepare_data(load_spec(spec_file(tmp_path, str(src), extra=extra)), tokenizer, 2048)


def test_fingerprint_changes_with_data_and_spec(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    first = prepare_data(load_spec(spec_file(tmp_path, str(src))), tokenizer, 2048).fingerprint
    again = prepare_data(load_spec(spec_file(tmp_path, str(src))), tokenizer, 2048).fingerprint
    write_jsonl(src, ROWS + [{"question": "One more question here?", "answer": "z"}])
    changed = prepare_data(load_spec(spec_file(tmp_path, str(src))), tokenizer, 2048).fingerprint
    write_jsonl(src, ROWS)
    respec = prepare_data(load_spec(spec_file(tmp_path, str(src)), ["training.epochs=7"]), tokenizer, 2048).fingerprint
    assert first == again and changed != first and respec != first


def test_offline_hub_attempt_leaves_no_global_state():
    import os

    import huggingface_hub.constants

    before = (os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE)
    with pytest.raises(DataError):
        read_source(None, hub="nobody/no-such-dataset-ftpipe")
    assert (os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE) == before
