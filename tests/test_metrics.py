"""Text metrics: hand-computed values, edge cases, and the fast paths against plain tables."""

import json
import math
import random

import pytest

from repotune.errors import InputError
from repotune.evaluate.metrics import (
    METRICS,
    bnorm_bleu,
    bnorm_tokens,
    corpus_summary,
    edit_similarity,
    exact_match,
    lcs_length,
    mean,
    rouge_l,
    rouge_tokens,
    score_pair,
    subject_exact_match,
    subject_line,
)


def table_lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b, 1):
            if token_a == token_b:
                current.append(previous[j - 1] + 1)
            else:
                current.append(max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


# --- tokens -----------------------------------------------------------------------------------


def test_tokens_are_lowercased_words_and_single_punctuation():
    assert bnorm_tokens("  Fix snake_case, v1.2!  ") == [
        "fix",
        "snake",
        "_",
        "case",
        ",",
        "v1",
        ".",
        "2",
        "!",
    ]
    assert bnorm_tokens("__init__()") == ["_", "_", "init", "_", "_", "(", ")"]
    assert bnorm_tokens("Über\tstraße\n") == ["über", "straße"]
    assert bnorm_tokens("") == []
    assert bnorm_tokens(" \n\t ") == []


# --- B-Norm BLEU ---------------------------------------------------------------------------


def test_bleu_identical_texts_score_100_regardless_of_case():
    assert (
        bnorm_bleu("Fix the parser crash on empty input", "fix the parser crash on empty input")
        == 100.0
    )
    assert bnorm_bleu("FIX", "fix") == 100.0
    assert bnorm_bleu("", "") == 100.0


def test_bleu_hand_computed_with_smoothing():
    # hyp: update the readme file (c=4); ref: update readme file (r=3)
    # 1-grams: update, readme, file match, "the" does not   -> p1 = 3/4      (no smoothing)
    # 2-grams: only (readme file) matches of 3              -> p2 = (1+1)/(3+1) = 2/4
    # 3-grams: none of 2                                    -> p3 = (0+1)/(2+1) = 1/3
    # 4-grams: none of 1                                    -> p4 = (0+1)/(1+1) = 1/2
    # BP = exp(min(0, 1 - (3+1)/(4+1))) = exp(0) = 1
    expected = 100 * (3 / 4 * 2 / 4 * 1 / 3 * 1 / 2) ** (1 / 4)
    assert expected == pytest.approx(50.0)
    assert bnorm_bleu("update the readme file", "update readme file") == pytest.approx(expected)


def test_bleu_brevity_penalty_for_a_short_hypothesis():
    # hyp: fix the bug (c=3); ref: fix the bug in parser (r=5)
    # p1 = 3/3; p2 = (2+1)/(2+1); p3 = (1+1)/(1+1); p4 = (0+1)/(0+1): all 1
    # BP = exp(1 - (5+1)/(3+1)) = exp(-0.5)
    assert bnorm_bleu("fix the bug", "fix the bug in parser") == pytest.approx(
        100 * math.exp(1 - 6 / 4)
    )
    # hyp: fix (c=1); ref: fix the parser crash (r=4): p1 = 1/1, p2..p4 = (0+1)/(0+1) = 1
    # BP = exp(1 - 5/2): a one-word guess is scored by its length alone
    assert bnorm_bleu("fix", "fix the parser crash") == pytest.approx(100 * math.exp(-1.5))


def test_bleu_clips_repeated_words():
    # hyp: the the the the (c=4); ref: the cat (r=2)
    # p1 = min(4, 1)/4 = 1/4; p2 = (0+1)/(3+1) = 1/4; p3 = (0+1)/(2+1) = 1/3;
    # p4 = (0+1)/(1+1) = 1/2; BP = exp(min(0, 1 - 3/5)) = 1
    expected = 100 * (1 / 4 * 1 / 4 * 1 / 3 * 1 / 2) ** (1 / 4)
    assert bnorm_bleu("the the the the", "the cat") == pytest.approx(expected)
    assert expected == pytest.approx(31.947, abs=1e-3)


def test_bleu_punctuation_counts_as_words():
    # hyp: fix typo . (c=3); ref: fix typo (r=2)
    # p1 = 2/3; p2 = (1+1)/(2+1) = 2/3; p3 = (0+1)/(1+1) = 1/2; p4 = (0+1)/(0+1) = 1
    # BP = exp(min(0, 1 - 3/4)) = 1
    expected = 100 * (2 / 3 * 2 / 3 * 1 / 2 * 1) ** (1 / 4)
    assert bnorm_bleu("Fix typo.", "fix typo") == pytest.approx(expected)


def test_bleu_of_unrelated_texts_is_zero():
    assert bnorm_bleu("alpha beta gamma", "delta epsilon") == pytest.approx(0.0, abs=1e-60)
    assert bnorm_bleu("alpha", "") == pytest.approx(0.0, abs=1e-60)


def test_bleu_of_an_empty_hypothesis_is_the_brevity_penalty():
    # Every p_n is 0/0, taken as 1 (as the reference script does); BP = exp(1 - (3+1)/(0+1))
    assert bnorm_bleu("", "fix the bug") == pytest.approx(100 * math.exp(-3))
    assert bnorm_bleu("   ", "a b c d e f g h i j") == pytest.approx(100 * math.exp(-10))


def test_bleu_stays_in_range():
    rng = random.Random(7)
    words = ["fix", "add", "the", "parser", "test", "bug", ".", "update", "docs"]
    for _ in range(200):
        a = " ".join(rng.choices(words, k=rng.randint(0, 12)))
        b = " ".join(rng.choices(words, k=rng.randint(0, 12)))
        assert 0.0 <= bnorm_bleu(a, b) <= 100.0


# --- ROUGE-L -----------------------------------------------------------------------------------


def test_rouge_l_hand_computed():
    # LCS(update the readme file, update readme file) = 3 (update readme file)
    # P = 3/4, R = 3/3, F1 = 2PR/(P+R) = 2 * 3/4 / (7/4) = 6/7
    assert rouge_l("update the readme file", "update readme file") == pytest.approx(6 / 7)
    # LCS(b a c, a b c) = 2; F1 = 2*2/(3+3)
    assert rouge_l("b a c", "a b c") == pytest.approx(4 / 6)


def test_rouge_l_edges():
    assert rouge_l("Fix The Bug", "fix the bug") == 1.0
    assert rouge_l("", "") == 0.0  # rouge-score: no tokens, no score
    assert rouge_l("...", "fix") == 0.0
    assert rouge_l("", "fix") == 0.0
    assert rouge_l("fix", "") == 0.0
    assert rouge_l("alpha beta", "gamma delta") == 0.0


ROUGE_PAIRS = [
    ("Fix typo in README installation section", "Fix typo in README"),
    ("fix: handle empty input in parser (closes #12)", "Handle empty parser input"),
    ("Update snake_case helper, v1.2", "update the snake_case helper to v1.2!"),
    ("readme readme readme readme", "Fix typo in README"),
    ("Über straße fix", "über Straße fixed"),
    ("", "Fix typo in README"),
    ("!!!", "..."),
    ("Merge branch 'main' into feature/x", "Merge branch 'main' into feature/y"),
]


def test_rouge_tokens_follow_rouge_score():
    from rouge_score import tokenize

    for text in ("Fix snake_case, v1.2!", "Über straße", "__init__()", "", "Don't PANIC 42"):
        assert rouge_tokens(text) == tokenize.tokenize(text, None)


@pytest.mark.parametrize(("hypothesis", "reference"), ROUGE_PAIRS)
def test_rouge_l_equals_rouge_score(hypothesis, reference):
    """Golden values: Google's rouge-score package, rougeL F-measure, no stemming."""
    from rouge_score import rouge_scorer

    expected = rouge_scorer.RougeScorer(["rougeL"]).score(reference, hypothesis)["rougeL"]
    assert rouge_l(hypothesis, reference) == pytest.approx(expected.fmeasure, abs=1e-12)


def test_rouge_l_equals_rouge_score_on_random_texts():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rng = random.Random(3)
    words = ["fix", "Fix", "add", "tests", "the", "parser", "v1.2", "snake_case", ",", "é", "#12"]
    for _ in range(300):
        hypothesis = " ".join(rng.choices(words, k=rng.randint(0, 12)))
        reference = " ".join(rng.choices(words, k=rng.randint(0, 12)))
        expected = scorer.score(reference, hypothesis)["rougeL"].fmeasure
        assert rouge_l(hypothesis, reference) == pytest.approx(expected, abs=1e-12)


# Golden values: CodeReviewer's evaluator/smooth_bleu.py (the CodeBERT bleu.py), run as
# bleu([splitPuncts(ref.strip().lower())], splitPuncts(hyp.strip().lower()))[0] * 100.
BNORM_GOLDEN = [
    ("Fix typo in README installation section", "Fix typo in README", 60.42750794713536),
    (
        "fix: handle empty input in parser (closes #12)",
        "Handle empty parser input",
        14.991106946711685,
    ),
    ("Update snake_case helper, v1.2", "update the snake_case helper to v1.2!", 44.162703152289104),
    ("readme readme readme readme", "Fix typo in README", 31.94715521231363),
    ("", "Fix typo in README", 1.8315638888734178),
    ("Add tests for the tokenizer", "Add tests for the tokenizer", 100.0),
    ("Über straße fix", "über Straße fixed", 68.65890479690393),
    ("Merge branch 'main' into feature/x", "Merge branch 'main' into feature/y", 87.73826753016614),
]


@pytest.mark.parametrize(("hypothesis", "reference", "expected"), BNORM_GOLDEN)
def test_bnorm_bleu_golden_values_of_the_reference_script(hypothesis, reference, expected):
    assert bnorm_bleu(hypothesis, reference) == pytest.approx(expected, rel=1e-12)


def test_lcs_bit_parallel_equals_the_table():
    rng = random.Random(11)
    for _ in range(500):
        a = rng.choices("abcde", k=rng.randint(0, 40))
        b = rng.choices("abcde", k=rng.randint(0, 40))
        assert lcs_length(a, b) == table_lcs(a, b)


# --- edit similarity -----------------------------------------------------------------------


def test_edit_similarity_hand_computed():
    # kitten -> sitting: LCS "ittn" = 4 characters; 2 * 4 / (6 + 7)
    assert edit_similarity("kitten", "sitting") == pytest.approx(8 / 13)
    assert edit_similarity("Fix", "fix") == pytest.approx(2 * 2 / 6)
    assert edit_similarity("return x", "return  x") == pytest.approx(2 * 8 / 17)


def test_edit_similarity_edges():
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("same text\n", "same text\n") == 1.0
    assert edit_similarity("abc", "") == 0.0
    assert edit_similarity("", "abc") == 0.0
    assert edit_similarity("abc", "xyz") == 0.0


# Golden values: rapidfuzz 3.14.6 ``fuzz.ratio(a, b) / 100``, the "Edit Sim" the code completion
# papers' scripts compute.
EDIT_GOLDEN = [
    (
        "    return [items[i : i + size] for i in range(0, len(items), size)]",
        "    return [items[i:i+size] for i in range(0, len(items), size)]",
        0.9696969696969697,
    ),
    ("x = 1", "x = 2", 0.8),
    ("kitten", "sitting", 0.6153846153846154),
    ("", "abc", 0.0),
    ("def f():\n    pass", "def g():\n    return None", 0.5853658536585367),
    ("Über", "über", 0.75),
]


@pytest.mark.parametrize(("a", "b", "expected"), EDIT_GOLDEN)
def test_edit_similarity_golden_values_of_fuzz_ratio(a, b, expected):
    assert edit_similarity(a, b) == pytest.approx(expected, abs=1e-12)
    assert edit_similarity(b, a) == pytest.approx(expected, abs=1e-12)


def test_edit_similarity_equals_the_lcs_table_on_characters():
    rng = random.Random(3)
    for _ in range(500):
        alphabet = rng.choice(["ab", "abcd", "abcdefgh \n", "aé字\t"])
        a = "".join(rng.choices(alphabet, k=rng.randint(0, 70)))
        b = "".join(rng.choices(alphabet, k=rng.randint(1, 70)))
        assert edit_similarity(a, b) == pytest.approx(
            2 * table_lcs(list(a), list(b)) / (len(a) + len(b))
        )


def test_edit_similarity_of_long_texts():
    rng = random.Random(5)
    alphabet = "def return self.x = 1\n"
    a = "".join(rng.choices(alphabet, k=5000))
    substituted = a[:2500] + ("X" if a[2500] != "X" else "Y") + a[2501:]
    # one substitution = one deletion + one insertion: LCS 4999 of 5000 + 5000
    assert edit_similarity(a, substituted) == pytest.approx(2 * 4999 / 10000)
    inserted = a[:1000] + "0123456789" + a[1000:]
    assert edit_similarity(a, inserted) == pytest.approx(2 * 5000 / 10010)


# --- exact match ---------------------------------------------------------------------------


def test_exact_match_ignores_only_trailing_whitespace():
    assert exact_match("def f():\n    return 1  \n\n", "def f():\n    return 1")
    assert exact_match("a\r\nb\r\n", "a\nb")
    assert exact_match("", "  \n")
    assert not exact_match("def f():\n    return 1", "def f():\n  return 1")
    assert not exact_match("Fix bug", "fix bug")
    assert not exact_match("\nx", "x")


def test_subject_exact_match_compares_first_lines():
    assert subject_line("\n  Fix parser crash  \n\nBody text") == "Fix parser crash"
    assert subject_exact_match("Fix parser crash\n\nA body", "  Fix parser crash\nOther body")
    assert not subject_exact_match("Fix parser crash.", "Fix parser crash")
    assert not subject_exact_match("fix parser crash", "Fix parser crash")
    assert subject_exact_match("", "\n\n")


# --- aggregation ---------------------------------------------------------------------------


def test_corpus_summary_of_nothing_is_none_not_nan():
    summary = corpus_summary([])
    assert summary.count == 0
    assert summary.means == {name: None for name in METRICS}
    assert json.loads(json.dumps(summary.as_dict(), allow_nan=False))["bnorm_bleu"] is None
    assert mean([]) is None


def test_corpus_summary_means_hand_computed():
    pairs = [
        ("Update README", "update readme"),
        ("update the readme file", "update readme file"),
    ]
    summary = corpus_summary(iter(pairs))
    assert summary.count == 2
    # pair 1: BLEU 100, ROUGE-L 1; 'Update README' vs 'update readme' share 'pdate ' (LCS 6 of
    # 13 + 13 characters). pair 2: BLEU 50 (above), ROUGE-L 6/7, LCS 18 of 22 + 18 characters
    assert summary.means["bnorm_bleu"] == pytest.approx((100 + 50) / 2)
    assert summary.means["rouge_l"] == pytest.approx((1 + 6 / 7) / 2)
    assert summary.means["edit_similarity"] == pytest.approx((12 / 26 + 36 / 40) / 2)
    assert summary.means["exact_match"] == 0.0
    assert summary.means["subject_exact_match"] == 0.0
    assert summary.as_dict()["count"] == 2


def test_score_pair_and_subsets():
    assert score_pair("Fix bug", "Fix bug\n", ["exact_match", "rouge_l"]) == {
        "exact_match": 1.0,
        "rouge_l": 1.0,
    }
    summary = corpus_summary([("a", "a"), ("a", "b")], metrics=["exact_match"])
    assert summary.means == {"exact_match": 0.5}


def test_unknown_metric_is_an_input_error():
    with pytest.raises(InputError, match=r"metric 'bleu4': is not a known metric.*bnorm_bleu"):
        corpus_summary([("a", "a")], metrics=["bleu4"])
