"""Text metrics for comparing a generation with the real thing.

Evaluation asks the base model and the base model with the adapter for the target of a held-out
commit (a commit message, or a change) and scores each generation against what the author really
wrote. Every metric here is a pure function of two strings, with no model, no download and no
third-party dependency, so a score depends only on the texts and is the same on every machine.

* ``bnorm_bleu``, 0 to 100: shared word n-grams (the commit-message literature's BLEU);
* ``rouge_l``, 0 to 1: the longest run of words in the same order (LCS F1, ``rouge-score``'s);
* ``edit_similarity``, 0 to 1: few character insertions and deletions (``fuzz.ratio`` / 100);
* ``exact_match``, 0 or 1: the same text up to trailing whitespace;
* ``subject_exact_match``, 0 or 1: the same first line (a commit's subject).

:func:`corpus_summary` averages any of them over (hypothesis, reference) pairs, the way the
papers report them: the mean of per-pair scores (for BLEU: the mean of sentence-level B-Norm,
as CodeBERT's ``bleu.py`` ``bleuFromMaps`` does, not a corpus-level BLEU).
"""

import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from repotune.errors import InputError

_MAX_ORDER = 4
# Word runs without the underscore, single underscores, single other non-space characters.
# This equals CodeBERT's `splitPuncts` (`[\w]+|[^\s\w]`) followed by the NIST `normalize`
# step of its bleu.py, whose punctuation rule also splits `_` out of words
# ("snake_case" -> "snake", "_", "case").
_BNORM_TOKEN = re.compile(r"[^\W_]+|_|[^\s\w]")
# rouge-score's tokenizer: runs of lower-case ASCII letters and digits, everything else a gap.
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def bnorm_tokens(text: str) -> list[str]:
    """The tokens B-Norm BLEU compares: lower-cased words and punctuation.

    ``text.strip().lower()``, then each maximal run of letters and digits is a token and every
    other non-space character (punctuation, ``_``) is a token of its own:
    ``"Fix snake_case, v1.2!"`` -> ``fix snake _ case , v1 . 2 !``.
    """
    return _BNORM_TOKEN.findall(text.strip().lower())


def _ngram_counts(tokens: Sequence[str], order: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for start in range(len(tokens) - order + 1):
        gram = tuple(tokens[start : start + order])
        counts[gram] = counts.get(gram, 0) + 1
    return counts


def bnorm_bleu(hypothesis: str, reference: str) -> float:
    """Sentence-level B-Norm BLEU-4 of ``hypothesis`` against one ``reference``, 0 to 100.

    B-Norm is the BLEU variant Tao et al. (2021, "On the Evaluation of Commit Message
    Generation Models: An Experimental Study", ICSME 2021) found to agree best with human
    judgement of commit messages: smoothed sentence BLEU on lower-cased text. This is the
    computation of the ``bleu.py`` that CodeBERT (CodeXGLUE code-to-text) and CodeReviewer ship
    (``splitPuncts(text.strip().lower())``, then ``bleu([reference], hypothesis)[0] * 100``);
    tests/test_metrics.py holds golden values that script gives. With both texts
    tokenised by :func:`bnorm_tokens`, ``c`` hypothesis tokens and ``r`` reference tokens:

    * ``m_n`` = clipped n-gram matches: for each n-gram of the hypothesis,
      ``min(count in hypothesis, count in reference)``, summed; ``l_n = max(c - n + 1, 0)``.
    * ``p_n = (m_n + s_n) / (l_n + s_n)`` with ``s_1 = 0`` and ``s_n = 1`` for ``n > 1``: the
      add-one smoothing of Lin & Och (2004, "ORANGE", method 2), so a short message without a
      matching 4-gram is not scored 0. A ``0/0`` precision (empty hypothesis) counts as 1.
    * ``BP = exp(min(0, 1 - (r + 1) / (c + 1)))``: the script's brevity penalty, with +1 on both
      lengths.
    * ``BLEU = 100 * BP * exp((log p_1 + log p_2 + log p_3 + log p_4) / 4)``.

    Like the script, logs are taken of ``x + sys.float_info.min``, so a hypothesis with no
    matching word scores about 1e-75 rather than exactly 0, and an empty hypothesis scores
    ``100 * exp(-r)`` (every ``p_n`` is ``0/0``, only the brevity penalty counts). Identical
    texts score exactly 100.
    """
    hyp, ref = bnorm_tokens(hypothesis), bnorm_tokens(reference)
    tiny = sys.float_info.min
    log_precision = 0.0
    for order in range(1, _MAX_ORDER + 1):
        ref_counts = _ngram_counts(ref, order)
        hyp_counts = _ngram_counts(hyp, order)
        matches = sum(min(n, ref_counts.get(gram, 0)) for gram, n in hyp_counts.items())
        guesses = max(len(hyp) - order + 1, 0)
        smooth = 1 if order > 1 else 0
        log_precision += math.log(matches + smooth + tiny) - math.log(guesses + smooth + tiny)
    brevity = min(0.0, 1 - (len(ref) + 1) / (len(hyp) + 1))
    return 100.0 * math.exp(log_precision / _MAX_ORDER + brevity)


def _peq(pattern: Sequence[str]) -> dict[str, int]:
    """For each symbol of ``pattern``, the bitmask of the positions where it occurs."""
    masks: dict[str, int] = {}
    for position, symbol in enumerate(pattern):
        masks[symbol] = masks.get(symbol, 0) | (1 << position)
    return masks


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences.

    Bit-parallel (Allison & Dix 1986; Hyyrö 2004): one machine-word operation per token of
    ``a`` over all of ``b`` at once, so O(len(a) * len(b) / 64) instead of a Python-level
    O(len(a) * len(b)) table. For each token, ``U = V & Peq[t]; V = (V + U) | (V - U)``; the
    LCS length is the number of zero bits among the low ``len(b)`` bits of ``V``.
    """
    if not a or not b:
        return 0
    peq = _peq(b)
    mask = (1 << len(b)) - 1
    v = mask
    for symbol in a:
        u = v & peq.get(symbol, 0)
        v = ((v + u) | (v - u)) & mask
    return len(b) - v.bit_count()


def rouge_tokens(text: str) -> list[str]:
    """The tokens ROUGE-L compares, as Google's ``rouge-score`` (``rouge_score/tokenize.py``,
    default tokenizer, no stemming) makes them: ``text.lower()``, every character outside
    ``[a-z0-9]`` becomes a space, split on spaces. Punctuation is dropped and so are non-ASCII
    letters (``"Über"`` -> ``ber``), as in the published commit-message results, which use this
    package or its tokenization.
    """
    return _ROUGE_TOKEN.findall(text.lower())


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 of ``hypothesis`` against ``reference``, 0 to 1, as ``rouge-score`` computes
    its ``rougeL`` ``fmeasure`` (``RougeScorer(["rougeL"]).score(reference, hypothesis)``).

    Lin (2004, "ROUGE: A Package for Automatic Evaluation of Summaries", ACL workshop), section
    3.1, on :func:`rouge_tokens`: with ``L`` the length of the longest common subsequence,
    ``P = L / len(hyp)``, ``R = L / len(ref)`` and ``F = 2 P R / (P + R)`` (``beta = 1``, as
    ``rouge-score`` takes it, so a verbose generation is penalised as much as a terse one). As
    in ``rouge-score``, a text without tokens scores 0, even against another one (two empty
    texts included). Golden values against the package: tests/test_metrics.py.
    """
    hyp, ref = rouge_tokens(hypothesis), rouge_tokens(reference)
    common = lcs_length(hyp, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def edit_similarity(a: str, b: str) -> float:
    """Character-level edit similarity, 0 to 1: ``1 - indel(a, b) / (len(a) + len(b))``, with
    ``indel`` the fewest character insertions and deletions turning ``a`` into ``b``; equally
    ``2 * LCS(a, b) / (len(a) + len(b))``. 1 for two empty texts.

    This is the "Edit Sim" of the repository-level code completion results (CodeXGLUE line
    completion, Lu et al. 2021; CrossCodeEval, Ding et al. 2023; RepoBench, Liu et al. 2023):
    their evaluation scripts compute ``fuzz.ratio`` (fuzzywuzzy with python-Levenshtein, or
    rapidfuzz), the normalised indel similarity, which is this times 100 (fuzzywuzzy also
    rounds it to a whole percent; we do not). Golden values from rapidfuzz's ``fuzz.ratio``:
    tests/test_metrics.py. Case and whitespace count. The LCS is the bit-parallel
    :func:`lcs_length` over characters, so two 5,000-character texts take milliseconds.
    """
    total = len(a) + len(b)
    if total == 0:
        return 1.0
    return 2 * lcs_length(a, b) / total


def _without_trailing_whitespace(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip()


def exact_match(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are the same text up to trailing whitespace.

    Each line loses its trailing spaces and tabs, line endings (``\\n``, ``\\r\\n``) are
    unified and trailing blank lines dropped: editors and tokenizers differ there, a reader
    does not. Case, indentation and leading blank lines count (they change code). The code
    completion papers' "EM" is the same idea with a looser equality (CodeXGLUE's line
    completion compares ``pred.split() == gt.split()``, ignoring all whitespace); ours is
    stricter for Python, where indentation is syntax, so it can only score lower than theirs.
    """
    return _without_trailing_whitespace(a) == _without_trailing_whitespace(b)


def subject_line(message: str) -> str:
    """A commit message's subject: its first non-blank line, stripped."""
    lines = message.strip().splitlines()
    return lines[0].strip() if lines else ""


def subject_exact_match(generated_message: str, real_message: str) -> bool:
    """Whether the two messages have the same subject (:func:`subject_line`), case included.

    A generated body is often longer or shorter than the author's; the subject is the line
    ``git log --oneline`` shows and the one reviewers read, so it is scored on its own. This
    is repotune's own measure, with no published counterpart to compare against.
    """
    return subject_line(generated_message) == subject_line(real_message)


METRICS: dict[str, Callable[[str, str], float]] = {
    "bnorm_bleu": bnorm_bleu,
    "rouge_l": rouge_l,
    "edit_similarity": edit_similarity,
    "exact_match": lambda hypothesis, reference: float(exact_match(hypothesis, reference)),
    "subject_exact_match": lambda hypothesis, reference: float(
        subject_exact_match(hypothesis, reference)
    ),
}
"""Every metric by name, as ``(hypothesis, reference) -> float`` (booleans as 0.0 / 1.0)."""


def _check_names(metrics: Sequence[str]) -> None:
    for name in metrics:
        if name not in METRICS:
            raise InputError(
                f"metric '{name}'", "is not a known metric", f"use one of {sorted(METRICS)}"
            )


def score_pair(
    hypothesis: str, reference: str, metrics: Sequence[str] = tuple(METRICS)
) -> dict[str, float]:
    """The named ``metrics`` of one (hypothesis, reference) pair, in the order given."""
    _check_names(metrics)
    return {name: METRICS[name](hypothesis, reference) for name in metrics}


def mean(values: Iterable[float]) -> float | None:
    """The arithmetic mean (``math.fsum``, so order does not matter); None when empty, never NaN."""
    collected = list(values)
    if not collected:
        return None
    return math.fsum(collected) / len(collected)


@dataclass(frozen=True)
class CorpusSummary:
    """Per-metric means over ``count`` pairs; each mean is None when ``count`` is 0."""

    count: int
    means: dict[str, float | None]

    def as_dict(self) -> dict[str, int | float | None]:
        """``{"count": n, metric: mean, ...}``, ready for JSON (None becomes null)."""
        return {"count": self.count, **self.means}


def corpus_summary(
    pairs: Iterable[tuple[str, str]], metrics: Sequence[str] = tuple(METRICS)
) -> CorpusSummary:
    """Mean of each named metric over ``(hypothesis, reference)`` pairs, with the pair count."""
    _check_names(metrics)
    scores: dict[str, list[float]] = {name: [] for name in metrics}
    count = 0
    for hypothesis, reference in pairs:
        count += 1
        for name, value in score_pair(hypothesis, reference, metrics).items():
            scores[name].append(value)
    return CorpusSummary(count=count, means={name: mean(values) for name, values in scores.items()})
