"""The project's own datasets: the build script reproduces the committed files, and every file
has the documented shape (fields, labels, balance, uniqueness, no probe/replay overlap)."""

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
}
INPUT_FIELD = {
    "ticket_routing": "message",
    "order_extraction": "text",
    "capitals": "question",
    "everyday_mc": "question",
    "word_opposites": "question",
    "general_instructions": "instruction",
}
TICKET_LABELS = {"billing", "shipping", "technical", "account", "refund"}
TARGET_RE = re.compile(r"^item=([a-z][a-z -]*); qty=(\d+); color=([a-z]+); city=([A-Z][A-Za-z ]*)$")
HANDBOOK = DATASETS / "harbor_handbook" / "harbor_handbook.txt"
HANDBOOK_HELDOUT = DATASETS / "harbor_handbook" / "harbor_handbook_heldout.txt"
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
                      + [HANDBOOK.relative_to(DATASETS), HANDBOOK_HELDOUT.relative_to(DATASETS)])
    assert produced == expected
    for rel in produced:
        committed = DATASETS / rel
        assert committed.is_file(), f"{rel} is not committed; run python datasets/build_datasets.py"
        assert committed.read_bytes() == (rebuilt / rel).read_bytes(), (
            f"{rel} differs from the build script's output; rerun python datasets/build_datasets.py"
        )


def test_every_dataset_has_a_card() -> None:
    for name in [*FIELDS, "harbor_handbook"]:
        card = DATASETS / name / "CARD.md"
        assert card.is_file() and "CC0-1.0" in card.read_text(encoding="utf-8"), name
    readme = (DATASETS / "README.md").read_text(encoding="utf-8")
    for name in [*FIELDS, "harbor_handbook"]:
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


@pytest.mark.parametrize("name", ["ticket_routing", "order_extraction"])
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
    assert script_globals["NO_NEAR_DUPLICATES"] == ("ticket_routing", "order_extraction")
    for name in ("ticket_routing", "order_extraction"):
        for r in _rows(name):
            text = r[INPUT_FIELD[name]]
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
