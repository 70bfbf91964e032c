"""Tokenizers: load a Hugging Face fast tokenizer, or train the tiny default's byte-level BPE.

Whatever the source, the result is a ``transformers`` fast tokenizer saved with
``save_pretrained``, so training and evaluation load ``results/{model}/tokenizer`` with
``AutoTokenizer.from_pretrained`` and never need to know where it came from.
"""

import bisect
import itertools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from repotune.errors import InputError
from repotune.shards.marked import Marked, markers_in

TRAIN_BPE = "train-bpe"
EOS = "<|endoftext|>"
PAD = "<|pad|>"
BPE_MIN_FREQUENCY = 2
INLINE_CHARACTERS = 65536
"""Texts shorter than this in all are encoded on the calling thread, not the thread pool (a few
milliseconds)."""
RECURRING_TEXTS = 65536
"""Encodings :meth:`TextEncoder.recurring` keeps (a few MB)."""


def configure_parallelism(threads: int) -> None:
    """Let the Rust tokenizer encode batches on ``threads`` threads.

    Must run before the first batch encode of the process: the thread pool is created then.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    os.environ["RAYON_NUM_THREADS"] = str(max(1, threads))


def _without_markers(texts: Iterable[str], markers: Sequence[str]) -> Iterator[str]:
    """The text between the markers: special tokens are whole tokens, not merge material."""
    if not markers:
        yield from texts
        return
    pattern = re.compile("|".join(re.escape(marker) for marker in markers))
    for text in texts:
        yield from (part for part in pattern.split(text) if part)


def train_bpe(
    texts: Iterable[str], vocab_size: int, markers: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``, with EOS, PAD and ``markers`` as special tokens.

    Byte level: any text, in any encoding, round-trips exactly through encode and decode.
    Training is deterministic for the same texts in the same order.
    """
    specials = [EOS, PAD, *dict.fromkeys(m for m in markers if m not in (EOS, PAD))]
    if vocab_size < 256 + len(specials):
        raise InputError(
            "model setting 'bpe_vocab_size'",
            f"{vocab_size} is smaller than the 256 byte tokens plus {len(specials)} special ones",
            f"use at least {256 + len(specials)}",
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=BPE_MIN_FREQUENCY,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_without_markers(texts, specials), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=specials[2:],
    )


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A fast tokenizer from a Hugging Face id or a local directory.

    A tokenizer without EOS cannot separate packed documents; one without PAD pads with EOS
    (the shards' ``length`` column, not the pad id, says where padding starts).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise InputError(
            f"tokenizer '{source}'",
            f"cannot be loaded ({_first_line(error)})",
            "give a Hugging Face model id or a directory written by save_pretrained",
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            f"tokenizer '{source}'", "is not a fast (Rust) tokenizer", "use one with tokenizer.json"
        )
    if tokenizer.eos_token_id is None:
        raise InputError(
            f"tokenizer '{source}'", "has no EOS token", "use a tokenizer that defines eos_token"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """Every token string the tokenizer treats as special (never split by the BPE)."""
    added = tokenizer.backend_tokenizer.get_added_tokens_decoder().values()
    return {token.content for token in added if token.special}


class TextEncoder:
    """Encodes rendered text: the template's markers become their tokens, all else is text.

    A tokenizer normally turns any special-token string it finds into that token, so a commit
    that mentions ``<|endoftext|>`` (common in ML repositories) would put an end-of-text token
    in the middle of a document, and a repository that quotes a template's own markers (this
    one does) would get marker ids inside its code. Here a marker is a marker only where the
    renderer put it (:meth:`marked`, repotune.shards.marked); every other special-token string
    is ordinary text. For text without such strings the ids are exactly the tokenizer's own: it
    also splits at special tokens first. ``markers`` the tokenizer lacks are text too.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, markers: Sequence[str]) -> None:
        backend = tokenizer.backend_tokenizer
        self._plain = Tokenizer.from_str(backend.to_str())
        self._plain.encode_special_tokens = True
        specials = special_tokens(tokenizer)
        self._markers = {m: backend.token_to_id(m) for m in markers if m in specials}
        self._found = tuple(sorted(self._markers))
        self._remembered: dict[str, list[int]] = {}
        self._recurring: dict[Marked, list[int]] = {}

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without BOS/EOS, every marker string in it a marker: for
        text a template built whole (repository text goes through :meth:`marked`)."""
        return self.marked([markers_in(text, self._found) for text in texts])

    def marked(self, texts: Sequence[Marked]) -> list[list[int]]:
        """Token ids of each :data:`~repotune.shards.marked.Marked` text, without BOS/EOS: its
        marker spans as marker ids (those the tokenizer has), the rest as plain text."""
        runs: list[list[str | int]] = []
        plain: list[str] = []
        for parts in texts:
            items: list[str | int] = []
            pending = parts[0]
            for index in range(1, len(parts), 2):
                token = self._markers.get(parts[index])
                if token is None:  # not a special token here: text like the rest
                    pending += parts[index] + parts[index + 1]
                    continue
                items += [pending, token] if pending else [token]
                pending = parts[index + 1]
            if pending:
                items.append(pending)
            plain += [item for item in items if isinstance(item, str)]
            runs.append(items)
        encoded = iter(self._encode_plain(plain))
        out: list[list[int]] = []
        for items in runs:  # whole lists joined, not token by token: this runs on every id
            if len(items) == 1 and isinstance(items[0], str):
                out.append(next(encoded))
                continue
            ids: list[int] = []
            for item in items:
                if isinstance(item, str):
                    ids += next(encoded)
                else:
                    ids.append(item)
            out.append(ids)
        return out

    def recurring(self, texts: Sequence[Marked]) -> list[list[int]]:
        """:meth:`marked` for texts that recur: each distinct one is encoded once (the last
        :data:`RECURRING_TEXTS` kept). A long commit's continuation contexts are the task
        header and its files' headers, and most changes touch files changed before."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._recurring))
        if len(self._recurring) + len(missing) > RECURRING_TEXTS:
            self._recurring.clear()
            missing = list(dict.fromkeys(texts))
        self._recurring.update(zip(missing, self.marked(missing), strict=True))
        return [list(self._recurring[t]) for t in texts]

    def _encode_plain(self, texts: list[str]) -> list[list[int]]:
        """The ids of each text: a large batch on the tokenizer's thread pool, a small one on
        this thread. The pool runs one batch at a time, so a few contexts or marks asked for
        while another thread's batch is being encoded would wait for all of it."""
        if sum(map(len, texts)) < INLINE_CHARACTERS:
            return [self._plain.encode(text, add_special_tokens=False).ids for text in texts]
        return [e.ids for e in self._plain.encode_batch_fast(texts, add_special_tokens=False)]

    def plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text with no part of it read as a marker."""
        return self._encode_plain(list(texts))

    def remembered(self, text: str) -> list[int]:
        """``plain([text])[0]``, encoded once: for the few short texts asked for again and
        again (the marks of a cut change, repotune.shards.shorten)."""
        if text not in self._remembered:
            self._remembered[text] = self.plain([text])[0]
        return self._remembered[text]

    @cached_property
    def _token_texts(self) -> list[str]:
        """Each token id's text, decoded alone (in one call, not one per id)."""
        size = self._plain.get_vocab_size(with_added_tokens=True)
        return self._plain.decode_batch([[i] for i in range(size)], skip_special_tokens=False)

    @cached_property
    def line_ends(self) -> np.ndarray:
        """For each token id, whether its text ends in a newline: where a long commit may be
        cut between lines (repotune.shards.packing.split_lines)."""
        return np.array([text.endswith("\n") for text in self._token_texts], dtype=bool)

    def token_ends(self, ids: Sequence[int], text: str) -> list[int]:
        """Where each of the leading tokens of ``ids`` ends in ``text``, the text of ``ids`` or
        of a longer encoding they start: as far as the tokens' own texts spell it (not past a
        token that holds part of a character, or a decoder that joins tokens otherwise than by
        concatenation). For :meth:`head`; a caller cutting one encoding at several lengths
        works this out once."""
        pieces = [self._token_texts[i] for i in ids]
        ends = list(itertools.accumulate(map(len, pieces)))
        if text.startswith("".join(pieces)):
            return ends
        count = 0
        for piece, end in zip(pieces, ends, strict=True):
            if not text.startswith(piece, end - len(piece)):
                break
            count += 1
        return ends[:count]

    def head(self, ids: Sequence[int], text: str, ends: list[int] | None = None) -> list[int]:
        """The leading ids of an encoding (``ids``) that spell ``text``, a prefix of its text.

        Cut at a line start before a non-space (every prompt's end), a byte-level BPE has a
        token boundary there and the result is a prefix of ``ids``. Otherwise the ids up to the
        last boundary before the end are kept and the rest of ``text`` is encoded on its own,
        as plain text (no marker is cut in two: a marker is one token). Where the tokens' own
        texts spell the text up to past the end of ``text`` (:meth:`token_ends`), the boundary
        is found from their lengths; otherwise by decoding prefixes. ``ends``: those of
        ``ids``, or of their leading part, when the caller has them.
        """
        if ends is None:
            ends = self.token_ends(ids, self.decode(ids))
        low = bisect.bisect_right(ends, len(text))
        if low < len(ends) or len(ends) == len(ids):
            done = ends[low - 1] if low else 0
        else:
            low, high = 0, len(ids)
            while low < high:  # the most tokens whose text is no longer than ``text``
                middle = (low + high + 1) // 2
                if len(self.decode(ids[:middle])) <= len(text):
                    low = middle
                else:
                    high = middle - 1
            while low and not text.startswith(self.decode(ids[:low])):
                low -= 1
            done = len(self.decode(ids[:low]))
        rest = self.plain([text[done:]])[0] if done < len(text) else []
        return [*ids[:low], *rest]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, markers and other special tokens included."""
        return self._plain.decode(list(ids), skip_special_tokens=False)


def _first_line(error: Exception) -> str:
    """The first line of a library's message: the Hugging Face hub's run to many lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
