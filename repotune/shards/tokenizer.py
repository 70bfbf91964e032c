"""Tokenizers: load a Hugging Face fast tokenizer, or train the tiny default's byte-level BPE.

Whatever the source, the result is a ``transformers`` fast tokenizer saved with
``save_pretrained``, so training and evaluation load ``results/{model}/tokenizer`` with
``AutoTokenizer.from_pretrained`` and never need to know where it came from.
"""

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from repotune.errors import InputError

TRAIN_BPE = "train-bpe"
EOS = "<|endoftext|>"
PAD = "<|pad|>"
BPE_MIN_FREQUENCY = 2


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
            "use at least 512",
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
    """Encodes rendered commits: template markers become their tokens, all else is plain text.

    A tokenizer normally turns any special-token string it finds into that token, so a commit
    that mentions ``<|endoftext|>`` (common in ML repositories) would put an end-of-text token
    in the middle of a document. Here only the template's own markers are special; every other
    special-token string in the text is encoded as ordinary text. For text without such
    strings the ids are exactly the tokenizer's own: it also splits at special tokens first.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, markers: Sequence[str]) -> None:
        backend = tokenizer.backend_tokenizer
        self._plain = Tokenizer.from_str(backend.to_str())
        self._plain.encode_special_tokens = True
        specials = special_tokens(tokenizer)
        self._markers = {m: backend.token_to_id(m) for m in markers if m in specials}
        longest_first = "|".join(map(re.escape, sorted(self._markers, key=len, reverse=True)))
        self._split = re.compile(f"({longest_first})") if self._markers else None

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without BOS/EOS."""
        if self._split is None:
            return self._encode_plain(list(texts))
        parts = [self._split.split(text) for text in texts]
        plain = iter(self._encode_plain([p for pieces in parts for p in pieces[0::2] if p]))
        encoded = []
        for pieces in parts:
            ids: list[int] = []
            for index, piece in enumerate(pieces):
                if index % 2:
                    ids.append(self._markers[piece])
                elif piece:
                    ids.extend(next(plain))
            encoded.append(ids)
        return encoded

    def _encode_plain(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._plain.encode_batch_fast(texts, add_special_tokens=False)]

    def plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text with no part of it read as a marker."""
        return self._encode_plain(list(texts))

    @cached_property
    def line_ends(self) -> np.ndarray:
        """For each token id, whether its text ends in a newline: where a long commit may be
        cut between lines (repotune.shards.packing.split_lines)."""
        size = self._plain.get_vocab_size(with_added_tokens=True)
        return np.array([self.decode([i]).endswith("\n") for i in range(size)], dtype=bool)

    def head(self, ids: Sequence[int], text: str) -> list[int]:
        """The leading ids of an encoding (``ids``) that spell ``text``, a prefix of its text.

        Cut at a line start before a non-space (every prompt's end), a byte-level BPE has a
        token boundary there and the result is a prefix of ``ids``. Otherwise the ids up to the
        last boundary before the end are kept and the rest of ``text`` is encoded on its own,
        as plain text (no marker is cut in two: a marker is one token).
        """
        low, high = 0, len(ids)
        while low < high:  # the most tokens whose text is no longer than ``text``
            middle = (low + high + 1) // 2
            if len(self.decode(ids[:middle])) <= len(text):
                low = middle
            else:
                high = middle - 1
        while low and not text.startswith(self.decode(ids[:low])):
            low -= 1
        done = self.decode(ids[:low])
        rest = self.plain([text[len(done) :]])[0] if len(done) < len(text) else []
        return [*ids[:low], *rest]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, markers and other special tokens included."""
        return self._plain.decode(list(ids), skip_special_tokens=False)


def _first_line(error: Exception) -> str:
    """The first line of a library's message: the Hugging Face hub's run to many lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
