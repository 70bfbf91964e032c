"""Secret and e-mail redaction: nothing that looks like a credential reaches a tokenizer.

A model fine-tuned on a history memorises what it sees, and can repeat a leaked key verbatim.
Every subject, body, path and patch is therefore passed through :class:`Redactor`, which swaps
each finding for a typed placeholder (``<KEY>``, ``<TOKEN>``, ``<PRIVATE_KEY>``, ``<JWT>``,
``<PASSWORD>``, ``<SECRET>``, ``<EMAIL>``) so the model still learns that *a* secret goes
there, and counts what it replaced by kind.

Why these rules and not a detector library: the well-kept ones (detect-secrets, trufflehog,
gitleaks) scan files or git objects, bring plugin machinery or a Go binary, and flag generic
high-entropy strings, which in a code history are mostly hashes and lockfile checksums. What
a training corpus needs is narrower: a few provider formats with distinctive prefixes, key
blocks, JWTs, and *named* assignments (``password=``, ``api_key:``) whose value is random
enough to be a real secret. That fits in a handful of compiled regexes run in C.

Known look-alikes are left alone on purpose: a hex digest next to ``sha256=``, a git sha, a
UUID or a lockfile ``integrity: sha512-...`` never matches a provider format, and an assignment
is only redacted when its key names a secret (``DB_PASSWORD``, ``client_secret``), not when it
names a hash (``password_sha256``), and never when the value is a UUID or a checksum.
"""

import functools
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_AWS_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA")
_GITLAB_PREFIXES = ("glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glcbt-", "glimt-", "glsoat-")

# Provider formats: (kind, placeholder, fixed substrings one of which every match contains,
# regex). Testing the substrings with `in` is 3 to 20 times faster than running the regex, and
# nearly every text has none of them.
_FORMATS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (
        "private_key",
        "<PRIVATE_KEY>",
        ("-----BEGIN",),
        # The whole block, across patch lines; a block cut off by patch truncation is
        # redacted to the end of the text rather than leaking its first lines.
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|.*\Z)",
    ),
    (
        "jwt",
        "<JWT>",
        ("eyJ",),
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    ),
    (
        "aws_access_key",
        "<KEY>",
        _AWS_PREFIXES,
        rf"\b(?:{'|'.join(_AWS_PREFIXES)})[A-Z0-9]{{16}}\b",
    ),
    (
        "github_token",
        "<TOKEN>",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
    ),
    (
        "gitlab_token",
        "<TOKEN>",
        _GITLAB_PREFIXES,
        rf"\b(?:{'|'.join(_GITLAB_PREFIXES)})[A-Za-z0-9_-]{{20,}}",
    ),
    (
        "slack_token",
        "<TOKEN>",
        ("xox", "hooks.slack.com"),
        r"\bxox[abposre]-[A-Za-z0-9-]{10,}"
        r"|https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}",
    ),
    (
        "stripe_key",
        "<TOKEN>",
        ("sk_", "rk_"),
        r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b",
    ),
)

# Named assignments: the key must *end* in a word that names a secret (so `DB_PASSWORD=` and
# `"client_secret":` match, `tokenizer=` and `password_sha256=` do not), then `=`, `:`, `=>`
# or `:=`, then a quoted or bare value. The pattern runs case-sensitively over a lower-cased
# copy of the text, which is three times faster than (?i); a bare `key` only counts with a
# qualifier before it (`api_key`, `ACCESS-KEY`), checked on the text just before the match.
_ASSIGNMENT = re.compile(
    r"(?P<word>pass(?:word|wd|phrase)|pwd|secret|key|token|credentials?)(?![a-z0-9_])"
    r"[\"']?\s*(?:=>|:=|=(?!=)|:(?![:/]))[ \t]*"
    r"(?:\"(?P<dq>[^\"\n]*)\"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s\"'`,;()\[\]{}<>]+)(?=[\s\"',;)\]}]|\Z))"
)
_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase", "pwd"})
_KEY_QUALIFIER_CHARS = len("encryption_")
_KEY_QUALIFIER = re.compile(r"(?:api|access|auth|private|secret|signing|encryption)[_-]?\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_CHECKSUM = re.compile(r"(?i)(?:sha(?:1|224|256|384|512)?|md5)[-:=][A-Za-z0-9+/=]+")
_TEMPLATE = re.compile(r"^\$|\{\{|\$\{|^%\(|^<.*>$")
_NOT_IDENTIFIER = re.compile(r"[0-9]|[^A-Za-z0-9_.]")

_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+\.[A-Za-z]")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Not personal data: the ssh user of git hosting (git@github.com:org/repo.git).
_EMAIL_KEEP_LOCAL = frozenset({"git"})

KINDS: tuple[str, ...] = (
    *(kind for kind, *_ in _FORMATS),
    "password",
    "secret",
    "email",
)


def shannon_entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character: H = -sum p(c) log2 p(c).

    A random 16-character alphanumeric secret scores about 3.5-4; words and repeated
    placeholders (``changeme``, ``xxxxxxxx``) score under 3. The maximum is log2(len(text)),
    so short values can never pass a high threshold; that is intended.
    """
    if not text:
        return 0.0
    length = len(text)
    return max(0.0, -sum(n / length * math.log2(n / length) for n in Counter(text).values()))


@dataclass(frozen=True)
class RedactSettings:
    """The ``curate.redact`` config section (defaults live in config/schema.yaml)."""

    emails: bool
    entropy_threshold: float
    min_secret_length: int

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> "RedactSettings":
        return cls(**section)


class Redactor:
    """Replaces secrets in text by typed placeholders and counts them by kind.

    One instance serves a whole curation run; ``counts`` accumulates over every call.
    """

    def __init__(self, settings: RedactSettings) -> None:
        self.settings = settings
        self.counts: Counter[str] = Counter({kind: 0 for kind in KINDS})
        self._formats = [
            (kind, placeholder, needles, re.compile(pattern, re.DOTALL))
            for kind, placeholder, needles, pattern in _FORMATS
        ]

    def redact(self, text: str) -> str:
        """``text`` with every finding replaced by its placeholder."""
        for kind, placeholder, needles, pattern in self._formats:
            if any(needle in text for needle in needles):
                text = pattern.sub(self._counting(kind, placeholder), text)
        if "=" in text or ":" in text:
            text = self._redact_assignments(text)
        if self.settings.emails and _EMAIL_DOMAIN.search(text):
            text = _EMAIL.sub(self._email, text)
        return text

    def _counting(self, kind: str, placeholder: str) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            self.counts[kind] += 1
            return placeholder

        return replace

    def _redact_assignments(self, text: str) -> str:
        lowered = text.lower()
        if len(lowered) != len(text):  # a few non-ASCII letters lower-case to two characters
            lowered = "".join(char.lower() if len(char.lower()) == 1 else char for char in text)
        pieces: list[str] = []
        done = 0
        for match in _ASSIGNMENT.finditer(lowered):
            group = next(name for name in ("dq", "sq", "bare") if match.group(name) is not None)
            start, end = match.span(group)
            word = match.group("word")
            before = max(0, match.start() - _KEY_QUALIFIER_CHARS)
            if word == "key" and not _KEY_QUALIFIER.search(lowered, before, match.start()):
                continue
            if not self._is_secret_value(text[start:end], bare=group == "bare"):
                continue
            kind = "password" if word in _PASSWORD_WORDS else "secret"
            self.counts[kind] += 1
            pieces += [text[done:start], f"<{kind.upper()}>"]
            done = end
        return "".join(pieces) + text[done:] if pieces else text

    def _is_secret_value(self, value: str, *, bare: bool) -> bool:
        """Random enough to be a real secret, and not a known look-alike.

        A bare (unquoted) value must also contain a digit or a symbol: unquoted letters and
        underscores are nearly always an identifier in code (``token = next_token``).
        """
        if len(value) < self.settings.min_secret_length:
            return False
        if _UUID.fullmatch(value) or _CHECKSUM.fullmatch(value) or _TEMPLATE.search(value):
            return False
        if bare and not _NOT_IDENTIFIER.search(value):
            return False
        return shannon_entropy(value) >= self.settings.entropy_threshold

    def _email(self, match: re.Match[str]) -> str:
        if match.group(0).split("@", 1)[0].lower() in _EMAIL_KEEP_LOCAL:
            return match.group(0)
        self.counts["email"] += 1
        return "<EMAIL>"


@functools.cache
def _default_redactor() -> Redactor:
    from repotune.config import resolve_config  # the schema's defaults; imported when first used

    return Redactor(RedactSettings.from_config(resolve_config()["curate"]["redact"]))


def redact(text: str) -> str:
    """``text`` redacted with the default settings: for text that leaves a stage outside the
    curated data (sandbox failure reasons, reports)."""
    return _default_redactor().redact(text)
