"""Per-item scoring by task kind: string matches, labels, ROUGE-L, numbers, choices, perplexity.

Every function scores one item (or, for classification, one list of items) and is pure, so
the evaluator can score base and tuned generations the same way and pair them per item.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata

METRIC_KINDS = (
    "exact_match",
    "contains",
    "classification",
    "rouge_l",
    "numeric",
    "code",
    "multiple_choice",
    "perplexity",
    "lm_eval",
    "preference",
)

# A number, optionally negative, with optional thousands commas and decimals. It must not
# follow a word character or a dot, so "3-5" gives 3 and 5 (not -5) and "v2" gives nothing.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def higher_is_better(kind: str) -> bool:
    """Whether a larger value of this metric kind is better.

    Args:
        kind: One of METRIC_KINDS.

    Returns:
        False only for perplexity.

    Raises:
        ValueError: For an unknown kind.
    """
    if kind not in METRIC_KINDS:
        raise ValueError(f"unknown metric kind {kind!r}; expected one of {', '.join(METRIC_KINDS)}")
    return kind != "perplexity"


def normalize_text(s: str) -> str:
    """Lowercase, delete punctuation, and collapse whitespace (articles are kept); numbers keep their form.

    Punctuation is any Unicode punctuation character and is deleted rather than replaced by a
    space, as in the SQuAD normalizer ("don't" -> "dont"), except inside numbers: a decimal point
    or thousands comma between digits is kept ("3.5" stays "3.5", never "35"), a minus sign before
    a number is kept ("-3" is not "3"), and a dash between two digits becomes a space ("3-5" is
    "3 5", not "35").

    Args:
        s: Any text.

    Returns:
        The normalized text, without leading or trailing whitespace.
    """
    s = s.lower()
    out = []
    for i, ch in enumerate(s):
        if not unicodedata.category(ch).startswith("P"):
            out.append(ch)
            continue
        before = s[i - 1] if i > 0 else ""
        after = s[i + 1] if i + 1 < len(s) else ""
        if ch in ".," and before.isdigit() and after.isdigit():
            out.append(ch)
        elif ch in "-\u2212" and after.isdigit():
            out.append(" " if before.isdigit() else ("-" if not before.isalnum() else ""))
    return " ".join("".join(out).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when prediction and reference are equal after normalize_text, else 0.0."""
    return float(normalize_text(prediction) == normalize_text(reference))


def contains_match(prediction: str, references: list[str]) -> float:
    """1.0 when any normalized reference occurs in the normalized prediction as whole words.

    Args:
        prediction: Generated text.
        references: Acceptable answers; empty ones never match.

    Returns:
        1.0 or 0.0.
    """
    padded = f" {normalize_text(prediction)} "
    for ref in references:
        norm = normalize_text(ref)
        # Padding with spaces makes "cat" match "the cat sat" but not "concatenate".
        if norm and f" {norm} " in padded:
            return 1.0
    return 0.0


def match_label(prediction: str, labels: list[str]) -> str | None:
    """Map generated text to one of the labels.

    An exact normalized match wins; otherwise the label the prediction starts with (as
    whole words, longest label first), since generation may add trailing text.

    Args:
        prediction: Generated text.
        labels: The task's label strings.

    Returns:
        The matching label as given in ``labels``, or None.
    """
    pred = normalize_text(prediction)
    normalized = [(normalize_text(label), label) for label in labels]
    for norm, label in normalized:
        if norm == pred:
            return label
    for norm, label in sorted(normalized, key=lambda pair: len(pair[0]), reverse=True):
        if norm and pred.startswith(norm + " "):
            return label
    return None


def classification_scores(predicted: list[str | None], gold: list[str], labels: list[str]) -> dict:
    """Accuracy and macro F1 over a set of classification items.

    Args:
        predicted: Predicted label per item, None when the generation matched no label.
        gold: Gold label per item.
        labels: All labels of the task; macro F1 averages over exactly these.

    Returns:
        ``{"accuracy": float, "macro_f1": float}``. None predictions count as wrong.

    Raises:
        ValueError: When the lists are empty or of different lengths.
    """
    from sklearn.metrics import f1_score

    if len(predicted) != len(gold) or not gold:
        raise ValueError(
            f"need equally long, non-empty lists; got {len(predicted)} and {len(gold)}"
        )
    # A value outside `labels`: sklearn then counts the item as a miss of its gold class.
    missing = "\x00no-label"
    pred = [missing if p is None else p for p in predicted]
    accuracy = sum(p == g for p, g in zip(pred, gold)) / len(gold)
    macro_f1 = f1_score(gold, pred, labels=labels, average="macro", zero_division=0)
    return {"accuracy": float(accuracy), "macro_f1": float(macro_f1)}


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of a prediction against one reference (rouge-score, Porter stemmer)."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def extract_number(text: str) -> float | None:
    """The answer number in a generation or a GSM8K reference.

    The first number after "####" when the text has one, else the last number in the
    text. Thousands commas ("1,234"), negatives, decimals and a trailing period ("18.")
    are handled.

    Args:
        text: Generated text or a reference answer.

    Returns:
        The number, or None when there is none.
    """
    head, marker, tail = text.partition("####")
    if marker:
        found = _NUMBER.findall(tail)
        number = found[0] if found else None
    else:
        found = _NUMBER.findall(head)
        number = found[-1] if found else None
    return None if number is None else float(number.replace(",", ""))


def numeric_match(prediction: str, reference: str) -> float:
    """1.0 when both texts yield a number (extract_number) and they agree within 1e-6."""
    pred, ref = extract_number(prediction), extract_number(reference)
    return float(pred is not None and ref is not None and abs(pred - ref) <= 1e-6)


def multiple_choice_correct(
    option_logliks: list[float], option_lengths: list[int], answer_index: int
) -> tuple[float, float]:
    """Score one multiple-choice item from the log-likelihood of each option.

    Args:
        option_logliks: Log-likelihood of each option's text given the prompt.
        option_lengths: Length of each option's text in characters (the lm-eval-harness
            convention for acc_norm).
        answer_index: Index of the correct option.

    Returns:
        ``(acc, acc_norm)``, each 1.0 or 0.0; on ties the first maximum wins.

    Raises:
        ValueError: On mismatched lists, a length below 1, or an answer index out of range.
    """
    n = len(option_logliks)
    if n == 0 or len(option_lengths) != n:
        raise ValueError(
            f"need one length per option; got {n} options and {len(option_lengths)} lengths"
        )
    if not 0 <= answer_index < n:
        raise ValueError(f"answer_index {answer_index} out of range for {n} options")
    if min(option_lengths) < 1:
        raise ValueError("option lengths must be at least 1 character")
    normalized = [ll / length for ll, length in zip(option_logliks, option_lengths)]
    # max() over indices keeps the first of equal maxima.
    best = max(range(n), key=lambda i: option_logliks[i])
    best_norm = max(range(n), key=lambda i: normalized[i])
    return float(best == answer_index), float(best_norm == answer_index)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(total negative log-likelihood / number of tokens).

    Raises:
        ValueError: When total_tokens is not positive.
    """
    if total_tokens <= 0:
        raise ValueError(f"total_tokens must be positive, got {total_tokens}")
    return math.exp(total_nll / total_tokens)


def preference_margin(chosen: tuple[float, int], rejected: tuple[float, int], *, normalized: bool = False) -> float:
    """How much more likely the chosen reply is than the rejected one, in nats (> 0: the model prefers it).

    Args:
        chosen: (log-likelihood of the chosen reply given the prompt, its number of tokens).
        rejected: The same for the rejected reply.
        normalized: Compare per-token means (length-normalised) instead of sums.

    Returns:
        log p(chosen) - log p(rejected), or the difference of the per-token means.

    Raises:
        ValueError: A reply with no tokens.
    """
    (ll_c, n_c), (ll_r, n_r) = chosen, rejected
    if n_c < 1 or n_r < 1:
        raise ValueError("both replies need at least one token")
    return ll_c / n_c - ll_r / n_r if normalized else ll_c - ll_r
