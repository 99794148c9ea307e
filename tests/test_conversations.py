"""Conversation sources (issue 17): OpenAI `messages` and ShareGPT rows rendered with the base model's own
chat template, one training row per assistant turn, whole conversations kept in one split, and every
malformed conversation refused with its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftpipe.cli import app
from ftpipe.data import prepare_data
from ftpipe.data.rendering import Renderer
from ftpipe.errors import DataError, SpecError
from ftpipe.spec import TaskSpec, load_spec

ROOT = Path(__file__).resolve().parent.parent
CHATS = ROOT / "datasets" / "support_chats"
# A Mistral-style template that, like many, refuses anything but user/assistant alternation.
STRICT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% else %}"
    "{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def _spec(tmp_path: Path, source: str, fmt: str = "messages", extra: str = "", data: str = "") -> Path:
    path = tmp_path / "chat.yaml"
    path.write_text(f"name: chats\nbase_model: tiny-llama\ntasks:\n  - name: support\n"
                    f"    source: {{path: {source}, format: {fmt}}}\n    kind: rouge_l\n{extra}"
                    f"evaluation: {{max_items: 1000}}\n{data}")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _task(**extra) -> TaskSpec:
    return TaskSpec.model_validate({"name": "t", "source": {"path": "x.jsonl", "format": "messages"}, "kind": "rouge_l", **extra})


def test_each_assistant_turn_is_one_row_whose_tokens_are_the_templates(tokenizer):
    row = _rows(CHATS / "support_chats.jsonl")[0]  # 3 user and 3 assistant turns, no system message
    messages = row["messages"]
    renderer = Renderer(tokenizer, _task())
    assert renderer.problem(row) is None
    pairs = renderer.training_pairs(row)
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    assert [target for _, target, _ in pairs] == [messages[i]["content"] for i in assistant]  # targets: assistant turns only
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    for (prompt, target, user), i in zip(pairs, assistant):
        assert prompt == tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        assert user.splitlines()[-1] == f"user: {messages[i - 1]['content']}"
        # What Ludwig trains on (prompt tokens, then target tokens + EOS) is token for token the
        # template's own rendering of the conversation up to the end of that assistant turn.
        ids = (tokenizer(prompt, add_special_tokens=False)["input_ids"] + tokenizer(target, add_special_tokens=False)["input_ids"]
               + [tokenizer.eos_token_id])
        assert ids == full_ids[:len(ids)]
        assert tokenizer.decode(ids[-1:]) == "<|im_end|>"
    last = Renderer(tokenizer, _task(assistant_turns="last")).training_pairs(row)
    assert last == pairs[-1:]


def test_system_messages_weights_and_evaluation_item(tokenizer):
    row = {"messages": [{"role": "user", "content": "Hi, order 12 is late."},
                        {"role": "assistant", "content": "Topic: shipping. Which address?", "weight": 0},
                        {"role": "user", "content": "Mill Lane."},
                        {"role": "assistant", "content": "Order 12 arrives tomorrow."}]}
    renderer = Renderer(tokenizer, _task(system_prompt="You route tickets."))
    pairs = renderer.training_pairs(row)
    assert [t for _, t, _ in pairs] == ["Order 12 arrives tomorrow."]  # weight 0: not trained on, still history
    assert pairs[0][0].startswith("<|im_start|>system\nYou route tickets.<|im_end|>") and "Which address?" in pairs[0][0]
    item = renderer.eval_item(row, "abc")
    assert item.reference == "Order 12 arrives tomorrow." and item.prompt == pairs[0][0]
    assert item.prompt.endswith("<|im_start|>assistant\n") and item.messages[-1] == {"role": "user", "content": "Mill Lane."}
    assert item.content == "Hi, order 12 is late.\nMill Lane."  # user turns: what the leakage check compares
    own_system = {"messages": [{"role": "system", "content": "Be brief."}, *row["messages"]]}
    assert "You route tickets." not in renderer.training_pairs(own_system)[0][0]  # the conversation's own system wins


@pytest.mark.parametrize("name, message", [
    ("unknown_role", "line 2: turn 2 has role 'agent'; roles are system, user, assistant"),
    ("empty_content", "line 2: turn 3 (user) has empty content"),
    ("no_assistant", "line 2: no assistant turn"),
    ("messages_not_list", "line 2: field 'messages' holds an object, not a list of turns"),
])
def test_malformed_conversations_are_refused_with_their_line(tmp_path, tokenizer, name, message):
    loaded = load_spec(_spec(tmp_path, str(CHATS / "malformed" / f"{name}.jsonl")))
    with pytest.raises(DataError) as err:
        prepare_data(loaded, tokenizer, 2048)
    assert message in err.value.one_line() and f"{name}.jsonl" in err.value.one_line()
    skipping = load_spec(_spec(tmp_path, str(CHATS / "malformed" / f"{name}.jsonl"), data="data: {bad_rows: skip}"))
    with pytest.raises(DataError, match="no (training rows|evaluation items)"):  # the one good row is not enough
        prepare_data(skipping, tokenizer, 2048)


def test_two_user_turns_in_a_row_only_where_the_template_forbids_them(tmp_path, tokenizer):
    from ftpipe.data.conversations import parse_conversation, template_problem

    rows = _rows(CHATS / "malformed" / "consecutive_user.jsonl")
    turns, problem = parse_conversation(rows[1]["messages"], "messages", "messages")
    assert problem is None and template_problem(tokenizer, turns) is None  # ChatML renders it, so it trains
    prompt, target, _ = Renderer(tokenizer, _task()).training_pairs(rows[1])[0]
    assert "E-1234.<|im_end|>\n<|im_start|>user\nIt happens" in prompt and target.startswith("Topic: technical.")

    strict = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    strict.chat_template = STRICT_TEMPLATE
    loaded = load_spec(_spec(tmp_path, str(CHATS / "malformed" / "consecutive_user.jsonl")))
    with pytest.raises(DataError) as err:
        prepare_data(loaded, strict, 2048)
    assert ("consecutive_user.jsonl line 2: the base model's chat template refuses this conversation: Conversation "
            "roles must alternate") in err.value.one_line()


def test_splits_keep_whole_conversations_and_formats_agree(tmp_path, tokenizer):
    loaded = load_spec(_spec(tmp_path, str(CHATS / "support_chats.jsonl")))
    prepared = prepare_data(loaded, tokenizer, 2048)
    task = prepared.tasks["support"]
    conversations = _rows(CHATS / "support_chats.jsonl")
    by_id: dict[str, set[str]] = {}
    for r in prepared.train_rows:
        by_id.setdefault(r["row_id"], set()).add(r["split"])
    assert all(len(splits) == 1 for splits in by_id.values())  # every turn of a conversation in one split
    tested = {i.item_id for i in task.eval_items}
    assert not tested & {rid[:12] for rid in by_id}  # no test conversation contributes a training turn
    assert len(by_id) + len(tested) == len(conversations)
    assistant_turns = {c["messages"][-1]["content"]: sum(m["role"] == "assistant" for m in c["messages"]) for c in conversations}
    rows_per_conversation: dict[str, int] = {}
    for r in task.train + task.validation:
        rows_per_conversation[r["row_id"]] = rows_per_conversation.get(r["row_id"], 0) + 1
    finals = {r["row_id"]: r["target"] for r in task.train + task.validation}  # the last row written is the final turn
    assert all(rows_per_conversation[rid] == assistant_turns[final] for rid, final in finals.items())
    for item in task.eval_items:  # evaluation generates the final assistant turn from its history
        assert item.prompt.endswith("<|im_start|>assistant\n") and item.reference in assistant_turns
        assert item.reference not in item.prompt
    e = task.expansion
    assert e["conversations"] == len({r["row_id"] for r in task.train}) and e["rows"] == len(task.train)
    assert e["row_tokens"] == sum(r["tokens"] for r in task.train) and e["row_tokens"] > e["conversation_tokens"]
    assert prepared.leakage["leaked"] == 0

    sharegpt = prepare_data(load_spec(_spec(tmp_path, str(CHATS / "support_chats_sharegpt.jsonl"), "sharegpt")), tokenizer, 2048)
    same = sharegpt.tasks["support"]
    assert [(r["row_id"], r["prompt"], r["target"]) for r in same.train] == [(r["row_id"], r["prompt"], r["target"]) for r in task.train]
    assert [(i.item_id, i.prompt, i.reference) for i in same.eval_items] == [(i.item_id, i.prompt, i.reference) for i in task.eval_items]


def test_spec_rules_for_conversation_tasks(tmp_path):
    mc = _spec(tmp_path, "x.jsonl", extra="    choices: c\n    answer: a\n")
    mc.write_text(mc.read_text().replace("kind: rouge_l", "kind: multiple_choice"))
    with pytest.raises(SpecError, match="kind multiple_choice cannot score a conversation"):
        load_spec(mc)
    with pytest.raises(SpecError, match="prompt, target do not apply to a conversation source"):
        load_spec(_spec(tmp_path, "x.jsonl", extra="    prompt: '{{ q }}'\n    target: '{{ a }}'\n"))
    with pytest.raises(SpecError, match="assistant_turns applies to conversation sources"):
        load_spec(_spec(tmp_path, "x.jsonl", fmt="jsonl", extra="    target: '{{ a }}'\n    assistant_turns: last\n"))


def test_validate_names_the_turns_field_and_data_reports_the_token_cost(tmp_path, tiny_llama_dir):
    runner = CliRunner()
    wrong = runner.invoke(app, ["validate", str(_spec(tmp_path, str(CHATS / "support_chats.jsonl"), "sharegpt"))])
    assert wrong.exit_code == 2
    assert "a sharegpt source reads the turns from field 'conversations'" in wrong.output
    assert "set source.format: messages" in wrong.output
    spec = _spec(tmp_path, str(CHATS / "support_chats.jsonl"), extra="    assistant_turns: last\n")
    shown = runner.invoke(app, ["data", str(spec), "-n", "1"])
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.output.splitlines() if x.startswith("conversations:"))
    n = int(line.split()[1])
    assert f"-> {n} rows (one for the last assistant turn" in line  # last turn only: one row per conversation


def test_a_chat_task_trains_on_turns_and_is_scored_on_final_turns(tiny_chat_run):
    summary = json.loads((tiny_chat_run / "data_summary.json").read_text())
    expansion = summary["conversations"]["support_chats"]
    assert expansion["conversations"] == 12 and expansion["rows"] > expansion["conversations"]  # max_train_rows counts conversations
    report = json.loads((tiny_chat_run / "report.json").read_text())
    task = next(t for t in report["tasks"] if t["task"] == "support_chats")
    assert task["metric"] == "rouge_l" and task["n"] == 8 and "few_shot" not in task
    items = json.loads((tiny_chat_run / "eval_items.json").read_text())["support_chats"]
    predictions = [json.loads(line) for line in (tiny_chat_run / "predictions" / "support_chats.jsonl").read_text().splitlines()]
    for item, prediction in zip(items, predictions):
        assert item["messages"][-1]["role"] == "user" and prediction["input"].startswith("user: ")
        assert prediction["reference"] == item["reference"] and prediction["reference"] not in item["prompt"]
