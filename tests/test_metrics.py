"""Per-item metrics, checked against hand-computed values."""

import math

import pytest

from ftpipe.evaluation.metrics import (
    METRIC_KINDS,
    classification_scores,
    contains_match,
    exact_match,
    extract_number,
    higher_is_better,
    match_label,
    multiple_choice_correct,
    normalize_text,
    numeric_match,
    perplexity,
    rouge_l,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  The Cat's   HAT!! ", "the cats hat"),
        ("¿Qué?\tpasa\n", "qué pasa"),  # Unicode punctuation and any whitespace
        ("A dog, a cat.", "a dog a cat"),  # articles are kept
        ("", ""),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("a, b", [("3.5", "35"), ("-3", "3"), ("3-5", "35"), ("1,000", "1000"), ("-2.5", "2.5")])
def test_numbers_keep_their_decimal_points_signs_and_separators(a, b):
    assert normalize_text(a) != normalize_text(b)
    assert exact_match(a, b) == 0.0
    assert exact_match(f"The answer is {a}.", f"the answer is {a}") == 1.0


def test_exact_match():
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("  PARIS ", "Paris!") == 1.0
    assert exact_match("The Paris", "Paris") == 0.0  # articles are not stripped
    assert exact_match("Paris, France", "Paris") == 0.0


def test_contains_match_whole_words():
    assert contains_match("I think it's Paris, France.", ["paris"]) == 1.0
    assert contains_match("I think it's Paris, France.", ["par"]) == 0.0
    assert contains_match("concatenate", ["cat"]) == 0.0
    assert contains_match("It is New  York city", ["Boston", "new york"]) == 1.0
    assert contains_match("anything", [""]) == 0.0
    assert contains_match("anything", []) == 0.0


def test_match_label():
    labels = ["positive", "negative"]
    assert match_label("Positive.", labels) == "positive"
    assert match_label("negative, because the plot drags", labels) == "negative"
    assert match_label("positively", labels) is None  # prefix must end at a word boundary
    assert match_label("I think positive", labels) is None
    assert match_label("", labels) is None


def test_match_label_prefers_exact_then_longest_prefix():
    # The original label string is returned, not its normalized form.
    assert match_label("Not_entailment.", ["entailment", "not_entailment"]) == "not_entailment"
    assert match_label("Entailment", ["not_entailment", "entailment"]) == "entailment"
    assert match_label("yes and no, maybe", ["yes", "yes and no"]) == "yes and no"
    assert match_label("yes and no", ["yes and no maybe", "yes"]) == "yes"


def test_classification_scores_hand_computed():
    gold = ["a", "a", "b", "b"]
    predicted = ["a", "b", "b", None]
    scores = classification_scores(predicted, gold, labels=["a", "b"])
    assert scores["accuracy"] == pytest.approx(0.5)
    # a: tp=1 fp=0 fn=1 -> F1 2/3; b: tp=1 fp=1 fn=1 (the None) -> F1 1/2.
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_classification_scores_none_counts_as_wrong():
    scores = classification_scores([None, None], ["a", "b"], labels=["a", "b"])
    assert scores == {"accuracy": 0.0, "macro_f1": 0.0}


def test_classification_scores_rejects_bad_lengths():
    with pytest.raises(ValueError):
        classification_scores(["a"], ["a", "b"], labels=["a", "b"])
    with pytest.raises(ValueError):
        classification_scores([], [], labels=["a"])


def test_rouge_l():
    ref = "the cat sat on the mat"
    assert rouge_l(ref, ref) == pytest.approx(1.0)
    # LCS "the cat on the mat" = 5 of 6 tokens on both sides -> P = R = F = 5/6.
    assert rouge_l("the cat lay on the mat", ref) == pytest.approx(5 / 6)
    # Prediction first, reference second: P = 2/2, R = 2/6 -> F = 2PR/(P+R) = 1/2.
    assert rouge_l("the cat", ref) == pytest.approx(0.5)
    assert rouge_l("dogs bark", ref) == 0.0
    assert rouge_l("cats running", "cat run") == pytest.approx(1.0)  # Porter stemming


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", 72.0),
        ("#### 1,234", 1234.0),
        ("She pays $1,234.50 in total.", 1234.5),
        ("The answer is 18.", 18.0),
        ("The temperature is -5 degrees", -5.0),
        ("3-5 = -2", -2.0),  # "-5" here is a subtraction, but the last number wins anyway
        ("from 3-5 apples", 5.0),
        ("First 16 eggs, so #### 18\n#### 19", 18.0),  # first number after the first ####
        ("It is 0.5 of 12 and then 7", 7.0),
        ("no number here", None),
        ("#### none", None),
        ("version v2 of it", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_numeric_match():
    assert numeric_match("The answer is 1,234.", "blah\n#### 1234") == 1.0
    assert numeric_match("so 18", "#### 19") == 0.0
    assert numeric_match("no number", "#### 5") == 0.0
    assert numeric_match("no number", "none either") == 0.0
    assert numeric_match("0.30000000000000004", "0.3") == 1.0
    assert numeric_match("0.3001", "0.3") == 0.0


def test_multiple_choice_acc_and_acc_norm_disagree():
    # Raw: option 0 (-10 > -12). Per character: -10/5 = -2 < -12/20 = -0.6, so option 1.
    assert multiple_choice_correct([-10.0, -12.0], [5, 20], answer_index=0) == (1.0, 0.0)
    assert multiple_choice_correct([-10.0, -12.0], [5, 20], answer_index=1) == (0.0, 1.0)


def test_multiple_choice_ties_first_max_wins():
    assert multiple_choice_correct([-1.0, -1.0, -3.0], [2, 2, 2], answer_index=0) == (1.0, 1.0)
    assert multiple_choice_correct([-1.0, -1.0, -3.0], [2, 2, 2], answer_index=1) == (0.0, 0.0)


@pytest.mark.parametrize(
    "logliks, lengths, answer",
    [([-1.0], [1, 2], 0), ([-1.0, -2.0], [1, 2], 2), ([-1.0, -2.0], [0, 2], 0), ([], [], 0)],
)
def test_multiple_choice_rejects_bad_input(logliks, lengths, answer):
    with pytest.raises(ValueError):
        multiple_choice_correct(logliks, lengths, answer)


def test_perplexity():
    assert perplexity(10 * math.log(4), 10) == pytest.approx(4.0)
    assert perplexity(0.0, 3) == 1.0
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_metric_kinds_and_direction():
    assert METRIC_KINDS == (
        "exact_match", "contains", "classification", "rouge_l",
        "numeric", "code", "multiple_choice", "perplexity", "lm_eval", "preference",
    )
    assert [k for k in METRIC_KINDS if not higher_is_better(k)] == ["perplexity"]
    with pytest.raises(ValueError):
        higher_is_better("bleu")
