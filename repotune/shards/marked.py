"""Text that knows which of its spans are markers.

A template's markers (``<|message|>``, ``<pr_diff_hunk>``, a FIM format's ``<|fim_middle|>``)
are special tokens; the same strings inside a commit or a file (a repository that renders such
templates, like this one, quotes them) are ordinary text. Telling the two apart by searching
the rendered text for marker strings cannot work, so the renderers say where they put a
marker: a rendering is a :data:`Marked` tuple, and the encoder
(repotune.shards.tokenizer.TextEncoder.marked) turns only those spans into marker ids.
"""

import re
from functools import lru_cache

Marked = tuple[str, ...]
"""Plain text at even indexes, markers at odd ones (as ``re.split`` with one group returns
them), starting and ending with plain text, possibly empty: ``"".join(marked)`` is the text."""


def text(value: str) -> Marked:
    """``value`` as plain text, whatever marker strings it holds."""
    return (value,)


def marker(value: str) -> Marked:
    """``value`` as one marker."""
    return ("", value, "")


def join(*parts: Marked) -> Marked:
    """The parts one after the other."""
    out = list(parts[0])
    for part in parts[1:]:
        out[-1] += part[0]
        out.extend(part[1:])
    return tuple(out)


@lru_cache(maxsize=256)
def _pattern(markers: tuple[str, ...]) -> re.Pattern[str]:
    longest_first = sorted(markers, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")


def markers_in(value: str, markers: tuple[str, ...]) -> Marked:
    """``value`` with every occurrence of ``markers`` a marker: for text a template built
    whole, never for repository text."""
    return tuple(_pattern(markers).split(value)) if markers else (value,)


@lru_cache(maxsize=1024)
def template_text(value: str, markers: tuple[str, ...]) -> Marked:
    """:func:`markers_in` for a template's own strings (a few constants: cached)."""
    return markers_in(value, markers)


def split(value: Marked, at: int) -> tuple[Marked, Marked]:
    """``value`` cut after ``at`` characters of its text (never inside a marker)."""
    offset = 0
    for index in range(0, len(value), 2):
        part = value[index]
        if at <= offset + len(part):
            cut = at - offset
            return (*value[:index], part[:cut]), (part[cut:], *value[index + 1 :])
        offset += len(part) + (len(value[index + 1]) if index + 1 < len(value) else 0)
        if at < offset:
            raise ValueError(f"a cut at {at} falls inside the marker {value[index + 1]!r}")
    raise ValueError(f"a cut at {at} is past the end of {offset} characters")
