"""The project's own datasets: the build script reproduces the committed files, and every file
has the documented shape (fields, labels, balance, uniqueness, no probe/replay overlap; for the
preference pairs and the support chats also their pairing, turn and format rules)."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
SCRIPT = DATASETS / "build_datasets.py"

FIELDS = {
    "ticket_routing": {"label", "message"},
    "order_extraction": {"target", "text"},
    "capitals": {"aliases", "answer", "question"},
    "everyday_mc": {"answer", "choices", "question"},
    "word_opposites": {"aliases", "answer", "question"},
    "general_instructions": {"instruction", "response"},
    "concise_preference": {"answer", "chosen", "pair_type", "prompt", "rejected"},
}
INPUT_FIELD = {
    "ticket_routing": "message",
    "order_extraction": "text",
    "capitals": "question",
    "everyday_mc": "question",
    "word_opposites": "question",
    "general_instructions": "instruction",
    "concise_preference": "prompt",
}
TICKET_LABELS = {"billing", "shipping", "technical", "account", "refund"}
TARGET_RE = re.compile(r"^item=([a-z][a-z -]*); qty=(\d+); color=([a-z]+); city=([A-Z][A-Za-z ]*)$")
HANDBOOK = DATASETS / "harbor_handbook" / "harbor_handbook.txt"
HANDBOOK_HELDOUT = DATASETS / "harbor_handbook" / "harbor_handbook_heldout.txt"
CHATS = DATASETS / "support_chats" / "support_chats.jsonl"
CHATS_SHAREGPT = DATASETS / "support_chats" / "support_chats_sharegpt.jsonl"
MALFORMED = DATASETS / "support_chats" / "malformed"
MAX_BYTES = 300 * 1024


def _rows(name: str) -> list[dict]:
    path = DATASETS / name / f"{name}.jsonl"
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _paragraphs(path: Path) -> list[str]:
    return [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("datasets_rebuilt")
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True,
                   capture_output=True, text=True, timeout=60)
    return out


def test_build_reproduces_committed_files(rebuilt: Path) -> None:
    produced = sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file())
    expected = sorted([Path(n) / f"{n}.jsonl" for n in FIELDS]
                      + [p.relative_to(DATASETS) for p in (HANDBOOK, HANDBOOK_HELDOUT, CHATS,
                                                            CHATS_SHAREGPT)])
    assert produced == expected
    for rel in produced:
        committed = DATASETS / rel
        assert committed.is_file(), f"{rel} is not committed; run python datasets/build_datasets.py"
        assert committed.read_bytes() == (rebuilt / rel).read_bytes(), (
            f"{rel} differs from the build script's output; rerun python datasets/build_datasets.py"
        )


def test_every_dataset_has_a_card() -> None:
    for name in [*FIELDS, "harbor_handbook", "support_chats"]:
        card = DATASETS / name / "CARD.md"
        assert card.is_file() and "CC0-1.0" in card.read_text(encoding="utf-8"), name
    readme = (DATASETS / "README.md").read_text(encoding="utf-8")
    for name in [*FIELDS, "harbor_handbook", "support_chats"]:
        assert name in readme


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_rows_have_documented_fields_and_unique_inputs(name: str) -> None:
    path = DATASETS / name / f"{name}.jsonl"
    assert path.stat().st_size < MAX_BYTES
    rows = _rows(name)
    assert rows
    seen = set()
    for row in rows:
        assert set(row) == FIELDS[name], row
        for key, value in row.items():
            if isinstance(value, str):
                assert value.strip(), (key, row)
            elif isinstance(value, list):
                assert value and all(isinstance(v, str) and v.strip() for v in value), row
            else:
                assert isinstance(value, int) and not isinstance(value, bool), row
        key = row[INPUT_FIELD[name]].strip().lower()
        assert key not in seen, f"duplicate input in {name}: {key!r}"
        seen.add(key)


def test_ticket_routing_labels_balanced() -> None:
    rows = _rows("ticket_routing")
    counts = collections.Counter(r["label"] for r in rows)
    assert set(counts) == TICKET_LABELS
    mean = len(rows) / len(TICKET_LABELS)
    assert all(abs(c - mean) <= 0.1 * mean for c in counts.values()), counts
    for r in rows:
        assert 10 <= len(r["message"].split()) <= 45, r


def _pairwise_leaks(texts: list[str]) -> list[tuple[str, str, str, float]]:
    """Every (evaluated row, other row) pair that ftpipe's leakage check would flag.

    Rows are split by each bit of their index, both ways round: any two different rows differ in
    some bit, so each row is checked against every other row (never against itself), with
    ftpipe's own find_leaks and its default settings (word 8-grams, threshold 0.5)."""
    from ftpipe.data import find_leaks

    n = len(texts)
    found = []
    for bit in range(max(1, (n - 1).bit_length())):
        for side in (0, 1):
            evaluated = [i for i in range(n) if (i >> bit) & 1 == side]
            train = [i for i in range(n) if (i >> bit) & 1 != side]
            for leak in find_leaks([texts[i] for i in train], [texts[i] for i in evaluated], 8, 0.5):
                found.append((leak["kind"], texts[evaluated[leak["index"]]],
                              texts[train[leak["train_index"]]], leak["overlap"]))
    return found


@pytest.mark.parametrize("name", ["ticket_routing", "order_extraction", "concise_preference"])
def test_target_rows_are_not_near_duplicates_of_each_other(name: str) -> None:
    """No row is an exact or near duplicate of another, so no split can leak (ftpipe splits
    these datasets into train/validation/test and checks evaluated rows against training rows)."""
    texts = [r[INPUT_FIELD[name]] for r in _rows(name)]
    leaks = _pairwise_leaks(texts)
    assert not leaks, f"{len(leaks)} leaking rows in {name}, e.g. {leaks[:3]}"
    # the check itself finds planted duplicates
    longest = max(texts, key=lambda t: len(t.split()))
    sample = texts[:100] + ([] if longest in texts[:100] else [longest])
    planted = _pairwise_leaks(sample + [texts[0].upper() + "!", longest + " Thanks a lot."])
    assert {(kind, text) for kind, text, _, _ in planted} >= {
        ("exact", texts[0].upper() + "!"), ("near", longest + " Thanks a lot.")}


def test_build_script_uses_ftpipe_leakage_rule() -> None:
    """The build script reimplements ftpipe's normalisation and n-gram rule (it stays stdlib-only)."""
    import runpy

    from ftpipe.data import normalize_for_leakage

    script_globals = runpy.run_path(str(SCRIPT), run_name="build_datasets")
    assert (script_globals["LEAK_NGRAM"], script_globals["LEAK_THRESHOLD"]) == (8, 0.5)
    assert script_globals["NO_NEAR_DUPLICATES"] == (
        "ticket_routing", "order_extraction", "concise_preference")
    texts = [r[INPUT_FIELD[name]] for name in script_globals["NO_NEAR_DUPLICATES"]
             for r in _rows(name)] + [_chat_user_text(row) for row in _chats()]
    for text in texts:
        assert script_globals["normalize_for_leakage"](text) == normalize_for_leakage(text), text
    script = SCRIPT.read_text(encoding="utf-8")
    assert "import ftpipe" not in script and "from ftpipe" not in script


def test_order_extraction_targets_parse() -> None:
    for r in _rows("order_extraction"):
        m = TARGET_RE.match(r["target"])
        assert m, r
        item, qty, color, city = m.groups()
        assert 1 <= int(qty) <= 50
        assert color in r["text"] and city in r["text"], r
        assert item[:3] in r["text"].lower(), r  # singular or plural form ("knife"/"knives")


def test_everyday_mc_answers_in_range_and_balanced() -> None:
    rows = _rows("everyday_mc")
    counts = collections.Counter(r["answer"] for r in rows)
    for r in rows:
        assert len(r["choices"]) == 4
        assert len({c.lower() for c in r["choices"]}) == 4, r
        assert 0 <= r["answer"] <= 3
    mean = len(rows) / 4
    assert set(counts) == {0, 1, 2, 3}
    assert all(abs(c - mean) <= 0.1 * mean for c in counts.values()), counts


def test_free_generation_probes_accept_their_answer() -> None:
    for name in ("capitals", "word_opposites"):
        for r in _rows(name):
            assert r["answer"] in r["aliases"], r


def test_replay_data_does_not_overlap_probes() -> None:
    replay = {_norm(r["instruction"]) for r in _rows("general_instructions")}
    for name in ("capitals", "word_opposites", "everyday_mc"):
        probes = {_norm(r["question"]) for r in _rows(name)}
        assert not replay & probes, (name, replay & probes)
    for text in replay:
        assert "capital of" not in text and "opposite" not in text and "which of these" not in text


def test_handbook_heldout_paragraphs_not_in_training_text() -> None:
    train = HANDBOOK.read_text(encoding="utf-8")
    held = _paragraphs(HANDBOOK_HELDOUT)
    assert 60_000 <= len(train.encode("utf-8")) <= 120_000
    assert 10_000 <= HANDBOOK_HELDOUT.stat().st_size <= 15_000
    assert held
    for p in held:
        assert p not in train, p[:80]
    train_paras = _paragraphs(HANDBOOK)
    assert len(train_paras) == len(set(train_paras)), "repeated paragraph in the training text"


# --------------------------------------------------------------------------------------------
# concise_preference
# --------------------------------------------------------------------------------------------

PAIR_TYPES = {"concise_vs_rambling", "correct_vs_wrong", "direct_vs_evasive"}
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _mentions(text: str, value: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(value.lower()) + r"(?!\w)", text.lower()) is not None


def test_preference_pairs_follow_their_pair_type() -> None:
    rows = _rows("concise_preference")
    assert 350 <= len(rows) <= 450
    counts = collections.Counter(r["pair_type"] for r in rows)
    assert set(counts) == PAIR_TYPES, counts
    for r in rows:
        assert r["chosen"] != r["rejected"], r
        assert len(r["chosen"].split()) <= 15, r  # the preferred reply is short and direct
        assert _mentions(r["chosen"], r["answer"]), r
        if r["pair_type"] == "concise_vs_rambling":
            # same fact, padded: the rejected reply states the answer too and is longer
            assert _mentions(r["rejected"], r["answer"]), r
            assert len(r["rejected"]) > len(r["chosen"]), r
        else:
            # wrong or evasive: the rejected reply does not give the answer
            assert not _mentions(r["rejected"], r["answer"]), r


def test_preference_length_is_a_strong_but_imperfect_signal() -> None:
    rows = _rows("concise_preference")
    assert all(len(r["chosen"]) != len(r["rejected"]) for r in rows)
    longer = [r for r in rows if len(r["chosen"]) > len(r["rejected"])]
    assert 0.15 <= len(longer) / len(rows) <= 0.25, len(longer)
    assert {r["pair_type"] for r in longer} == {"correct_vs_wrong", "direct_vs_evasive"}
    # within those two types, length says nothing: about half the chosen replies are longer
    for pair_type in ("correct_vs_wrong", "direct_vs_evasive"):
        of_type = [r for r in rows if r["pair_type"] == pair_type]
        share = sum(len(r["chosen"]) > len(r["rejected"]) for r in of_type) / len(of_type)
        assert 0.35 <= share <= 0.65, (pair_type, share)


def _expected_answer(prompt: str) -> str | None:
    """Independent recomputation of the answer for the prompt shapes that can be parsed here
    (sums, weekdays, letter counts); None for the others."""
    p = re.sub(r"^(Quick question|Quick one|Just checking|Sorry if this is basic|One more): ",
               "", prompt)
    patterns = [
        (r"(?:What's|How much is|Can you add up) (\d+) (?:\+|plus|and) (\d+)(?: for me)?\?$"
         r"|(\d+) \+ (\d+) = \?$", lambda a, b: a + b),
        (r"(?:What's|How much is) (\d+) (?:-|take away) (\d+)\?$|(\d+) - (\d+) = \?$",
         lambda a, b: a - b),
        (r"what do I get if I take (\d+) away from (\d+)\?$", lambda b, a: a - b),
        (r"(?:How much is|What's) (\d+) (?:times|multiplied by) (\d+)\?$"
         r"|what do you get when you multiply (\d+) by (\d+)\?$", lambda a, b: a * b),
        (r"(?:What's|How much is) (\d+) divided by (\d+)\?$"
         r"|what do you get if you divide (\d+) by (\d+)\?$", lambda a, b: a // b),
    ]
    for pattern, fn in patterns:
        m = re.fullmatch(pattern, p, flags=re.IGNORECASE)
        if m:
            a, b = [int(g) for g in m.groups() if g is not None]
            return f"{fn(a, b):,}"
    m = re.fullmatch(r"If today is (\w+), what day will it be in (\d+) days\?", p, re.I)
    if m:
        return WEEKDAYS[(WEEKDAYS.index(m.group(1).capitalize()) + int(m.group(2))) % 7]
    m = re.fullmatch(r"If today is (\w+), what day was it (\d+) days ago\?", p, re.I)
    if m:
        return WEEKDAYS[(WEEKDAYS.index(m.group(1).capitalize()) - int(m.group(2))) % 7]
    m = re.fullmatch(r"If yesterday was (\w+), what day is tomorrow\?", p, re.I)
    if m:
        return WEEKDAYS[(WEEKDAYS.index(m.group(1).capitalize()) + 2) % 7]
    m = re.fullmatch(r"How many letters does '(\w+)' have\?|Count the letters in '(\w+)'\.", p,
                     re.I)
    if m:
        return str(len(m.group(1) or m.group(2)))
    units = {("hours", "minutes"): 60, ("minutes", "seconds"): 60, ("days", "hours"): 24,
             ("weeks", "days"): 7, ("years", "months"): 12, ("kilometres", "metres"): 1000,
             ("kilograms", "grams"): 1000, ("litres", "millilitres"): 1000,
             ("metres", "centimetres"): 100, ("feet", "inches"): 12, ("pounds", "ounces"): 16,
             ("centimetres", "millimetres"): 10}
    m = re.fullmatch(r"What is ([\d,]+) (\w+) in (\w+)\?|([\d,]+) (\w+) is how many (\w+)\?"
                     r"|How many (\w+) is ([\d,]+) (\w+)\?|Turn ([\d,]+) (\w+) into (\w+), "
                     r"please\.", p, re.I)
    if m and "°" not in p:
        g = [x for x in m.groups() if x is not None]
        n, src, dst = (g[1], g[2], g[0]) if m.group(7) else (g[0], g[1], g[2])
        n = int(n.replace(",", ""))
        if (src, dst) in units:
            return f"{n * units[src, dst]:,}"
        return f"{n // units[dst, src]:,}"
    m = re.fullmatch(r"What is (-?\d+) °C in Fahrenheit\?|Convert (-?\d+) °C to Fahrenheit\."
                     r"|(-?\d+) degrees Celsius is how many degrees Fahrenheit\?", p, re.I)
    if m:
        c = int(next(x for x in m.groups() if x is not None))
        return str(c * 9 // 5 + 32)
    months = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]
    m = re.fullmatch(r"Which month comes (after|before) (\w+)\?", p, re.I)
    if m:
        return months[(months.index(m.group(2)) + (1 if m.group(1) == "after" else -1)) % 12]
    m = re.fullmatch(r"What month is it (\d+) months after (\w+)\?", p, re.I)
    if m:
        return months[(months.index(m.group(2)) + int(m.group(1))) % 12]
    m = re.fullmatch(r"How many vowels are in '(\w+)'\?", p, re.I)
    if m:
        return str(sum(c in "aeiou" for c in m.group(1)))
    m = re.fullmatch(r"How many times does the letter '(\w)' appear in '(\w+)'\?", p, re.I)
    if m:
        return str(m.group(2).count(m.group(1)))
    return None


def test_preference_answers_are_correct_where_recomputable() -> None:
    rows = _rows("concise_preference")
    checked = 0
    for r in rows:
        expected = _expected_answer(r["prompt"])
        if expected is not None:
            checked += 1
            assert r["answer"] == expected, r
    assert checked >= 150, checked


def test_preference_prompts_do_not_overlap_probes_or_replay() -> None:
    """No prompt is an exact or near duplicate of a held-out probe question or a replay
    instruction (or the other way round), under ftpipe's leakage rule."""
    from ftpipe.data import find_leaks

    prompts = [r["prompt"] for r in _rows("concise_preference")]
    others = [r["question"] for n in ("capitals", "word_opposites", "everyday_mc")
              for r in _rows(n)] + [r["instruction"] for r in _rows("general_instructions")]
    assert not find_leaks(others, prompts, 8, 0.5)
    assert not find_leaks(prompts, others, 8, 0.5)
    # the check finds a planted probe question
    planted = prompts + [_rows("capitals")[0]["question"]]
    assert find_leaks(others, planted, 8, 0.5)[0]["index"] == len(prompts)


# --------------------------------------------------------------------------------------------
# support_chats
# --------------------------------------------------------------------------------------------

CHAT_ROLES = {"system", "user", "assistant"}
SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}
TOPIC_RE = re.compile(r"^Topic: (billing|shipping|technical|account|refund)\. \S")
MALFORMED_CASES = {
    "unknown_role.jsonl": "unknown_role",
    "consecutive_user.jsonl": "consecutive_user",
    "empty_content.jsonl": "empty_content",
    "no_assistant.jsonl": "no_assistant",
    "messages_not_list.jsonl": "messages_not_list",
}


def _chats(path: Path = CHATS) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _chat_user_text(row: dict) -> str:
    return " ".join(m["content"] for m in row["messages"] if m["role"] == "user")


def _chat_problems(row: object) -> set[str]:
    """What is wrong with one OpenAI-format row (empty set: nothing)."""
    if not isinstance(row, dict) or set(row) != {"messages"}:
        return {"bad_row"}
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return {"messages_not_list"}
    problems = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            problems.add("bad_message")
            continue
        if m["role"] not in CHAT_ROLES:
            problems.add("unknown_role")
        if not isinstance(m["content"], str) or not m["content"].strip():
            problems.add("empty_content")
        if m["role"] == "system" and i != 0:
            problems.add("system_not_first")
    if problems:
        return problems
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if "assistant" not in turns:
        return {"no_assistant"}
    if turns[0] != "user":
        problems.add("first_not_user")
    for a, b in zip(turns, turns[1:]):
        if a == b:
            problems.add(f"consecutive_{a}")
    if turns[-1] != "assistant":
        problems.add("unanswered_user")
    return problems


def test_chats_are_well_formed_with_two_to_four_user_turns() -> None:
    rows = _chats()
    assert 250 <= len(rows) <= 350
    assert CHATS.stat().st_size < MAX_BYTES and CHATS_SHAREGPT.stat().st_size < MAX_BYTES
    turns = collections.Counter()
    for row in rows:
        assert not _chat_problems(row), row
        users = sum(m["role"] == "user" for m in row["messages"])
        assert 2 <= users <= 4, row
        turns[users] += 1
    assert set(turns) == {2, 3, 4}, turns
    with_system = sum(row["messages"][0]["role"] == "system" for row in rows)
    assert 0.2 * len(rows) <= with_system <= 0.6 * len(rows), with_system


def test_chats_name_a_balanced_topic_in_the_first_reply_only() -> None:
    rows = _chats()
    topics = collections.Counter()
    for row in rows:
        replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        m = TOPIC_RE.match(replies[0])
        assert m, replies[0]
        topics[m.group(1)] += 1
        assert not any(r.startswith("Topic:") for r in replies[1:]), row
    assert set(topics) == TICKET_LABELS
    mean = len(rows) / len(TICKET_LABELS)
    assert all(abs(c - mean) <= 0.1 * mean for c in topics.values()), topics


def _refs(text: str) -> set[str]:
    tokens = (t.rstrip(".-") for t in re.findall(r"[\w.+@-]+", text))
    return {t for t in tokens if len(t) >= 4 and ("@" in t or re.search(r"\d", t))}


def test_chats_carry_facts_from_the_first_turn() -> None:
    """Every conversation has a reference from the first user turn (an order or invoice number,
    error code, serial number, e-mail address, username) that a later assistant turn repeats
    and that no later user turn repeats: the later reply needs the history."""
    for row in _chats():
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        later_users = set().union(*(_refs(u) for u in users[1:]))
        later_replies = set().union(*(_refs(a) for a in replies[1:]))
        assert (_refs(users[0]) & later_replies) - later_users, row


def test_chats_are_not_near_duplicates_of_each_other() -> None:
    texts = [_chat_user_text(row) for row in _chats()]
    leaks = _pairwise_leaks(texts)
    assert not leaks, f"{len(leaks)} leaking conversations, e.g. {leaks[:3]}"


def test_chat_user_turns_do_not_reuse_ticket_routing_messages() -> None:
    from ftpipe.data import find_leaks

    turns = [m["content"] for row in _chats() for m in row["messages"] if m["role"] == "user"]
    messages = [r["message"] for r in _rows("ticket_routing")]
    assert not find_leaks(messages, turns, 8, 0.5)
    assert not find_leaks(turns, messages, 8, 0.5)


def test_sharegpt_file_holds_the_same_conversations() -> None:
    openai, sharegpt = _chats(), _chats(CHATS_SHAREGPT)
    assert len(openai) == len(sharegpt)
    for a, b in zip(openai, sharegpt):
        assert set(b) == {"conversations"}
        assert all(set(turn) == {"from", "value"} for turn in b["conversations"]), b
        assert b["conversations"] == [{"from": SHAREGPT_FROM[m["role"]], "value": m["content"]}
                                      for m in a["messages"]]


def test_malformed_chat_fixtures_each_break_one_rule() -> None:
    """Hand-written fixtures for readers' error tests: line 1 is a valid conversation, line 2
    has exactly the one problem the file is named after."""
    assert sorted(p.name for p in MALFORMED.iterdir()) == sorted(MALFORMED_CASES)
    for name, problem in MALFORMED_CASES.items():
        lines = (MALFORMED / name).read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2, name
        first, second = (json.loads(line) for line in lines)
        assert not _chat_problems(first), name
        assert _chat_problems(second) == {problem}, (name, _chat_problems(second))
