"""Where a continuation ends: the stop strings of a run, and where one occurs in a text.

A model trained on packed documents ends an answer with EOS, or starts the next document with
one of the markers it was trained on (a commit template's, a FIM format's): everything from
that marker on belongs to a document nobody asked for. These are a run's *document stops*,
recorded once by tokenize (:mod:`repotune.inference.record`). A task may add its own (the
code-change question ends where the run of added lines does, :mod:`repotune.inference.prompts`).
"""

from collections.abc import Sequence

from repotune.shards.fim import FimFormat
from repotune.shards.render import Template


def document_stops(template: Template, fim: FimFormat | None, eos_token: str) -> tuple[str, ...]:
    """The strings that begin a new document: the template's markers, the FIM format's
    markers (when the run asks in one) and EOS, each once."""
    markers = (*template.markers, *(fim.markers if fim else ()), eos_token)
    return tuple(dict.fromkeys(markers))


def find_stop(text: str, stops: Sequence[str], prefix: str = "") -> int | None:
    """Where ``text`` should be cut: the start of the earliest stop string, or None.

    A stop string may begin in ``prefix`` (the end of the prompt) and end in ``text``: a
    prompt that ends in a newline, followed by a generation that starts with a context line,
    completes the stop ``"\\n "`` at once; the cut is then at 0. Occurrences wholly inside
    ``prefix`` do not count.
    """
    joined = prefix + text
    best: int | None = None
    for stop in stops:
        start = joined.find(stop, max(0, len(prefix) - len(stop) + 1))
        if start != -1:
            cut = max(0, start - len(prefix))
            best = cut if best is None else min(best, cut)
    return best
