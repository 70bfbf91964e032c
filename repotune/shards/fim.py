"""Files -> whole-file and fill-in-the-middle (FIM) documents, in the model's native format.

Editors ask a code model to fill a gap: the code before the cursor (prefix), the code after
it (suffix), and the model writes the middle. Models learn this from documents whose middle
was moved to the end (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in
the Middle"), in one of two orders:

* **PSM**: ``<file>path <prefix> prefix <suffix> suffix <middle> middle``;
* **SPM** (the paper's variant 2, as bigcode's Megatron-LM trains StarCoder):
  ``<file>path <prefix> <suffix> suffix <middle> prefix middle``.

The file's header (its path) comes first, outside the FIM markers, in both orders (as
Qwen2.5-Coder puts ``<|file_sep|>path`` before ``<|fim_prefix|>``): were it part of the prefix,
an SPM document would continue ``<middle>`` with the file marker, a stop string.

Formats (``FIM_FORMATS``): ``starcoder`` and ``starcoder2`` use the tokens those models were
pre-trained with (``<fim_prefix>``, ``<fim_suffix>``, ``<fim_middle>``; a file's path after
``<filename>`` for StarCoder, ``<file_sep>`` for StarCoder2); ``plain`` uses
``<|fim_prefix|>``, ``<|fim_suffix|>``, ``<|fim_middle|>`` and ``<|file|>``, which a byte-level
BPE trained here carries as special tokens. A native format is used only when the tokenizer
really has its tokens (:func:`choose_fim_format`), like the commit templates.

Spans are chosen at line granularity (a middle is whole lines, as an editor completes them),
by a hash of the seed and the file, so a file's document does not depend on what else is in
the data.
"""

import hashlib
import random
from collections.abc import Collection
from dataclasses import dataclass

from repotune.shards.marked import Marked, join, marker, text

PSM = "psm"
SPM = "spm"


@dataclass(frozen=True)
class FimFormat:
    """The marker strings of one FIM format."""

    name: str
    prefix: str
    suffix: str
    middle: str
    file: str

    @property
    def markers(self) -> tuple[str, ...]:
        return (self.prefix, self.suffix, self.middle, self.file)


PLAIN_FIM = FimFormat("plain", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file|>")
STARCODER_FIM = FimFormat("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<filename>")
STARCODER2_FIM = FimFormat(
    "starcoder2", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"
)
FIM_FORMATS = {f.name: f for f in (PLAIN_FIM, STARCODER_FIM, STARCODER2_FIM)}


def choose_fim_format(template: str, special_tokens: Collection[str]) -> FimFormat:
    """The FIM format of commit template ``template`` if the tokenizer has all its tokens,
    else ``plain``."""
    native = FIM_FORMATS.get(template, PLAIN_FIM)
    if set(native.markers) <= set(special_tokens):
        return native
    return PLAIN_FIM


@dataclass(frozen=True)
class FimExample:
    """A FIM question and its answer: ``prompt + middle`` is the training text; ``mode`` the
    order (PSM or SPM) the prompt was built in; ``parts`` the prompt with its markers marked
    (:func:`fim_parts`)."""

    prompt: str
    middle: str
    mode: str = PSM
    parts: Marked = ("",)


def _draw(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def file_header(path: str, fmt: FimFormat) -> str:
    """What precedes a file's content in every file document: its path, on its own line."""
    return f"{fmt.file}{path}\n"


def header_parts(path: str, fmt: FimFormat) -> Marked:
    """:func:`file_header` with its marker marked (the path is text, whatever it holds)."""
    return join(marker(fmt.file), text(f"{path}\n"))


def whole_file(path: str, content: str, fmt: FimFormat) -> str:
    """A file as one plain left-to-right document."""
    return file_header(path, fmt) + content


def whole_file_parts(path: str, content: str, fmt: FimFormat) -> Marked:
    """:func:`whole_file` with its marker marked."""
    return join(header_parts(path, fmt), text(content))


def fim_prompt(
    prefix: str, suffix: str, fmt: FimFormat, mode: str = PSM, path: str | None = None
) -> str:
    """The prompt that asks for the middle between ``prefix`` and ``suffix`` of the file at
    ``path`` (its header, :func:`file_header`, before the first FIM marker when given).

    The path stays outside the FIM markers, in both orders, as Qwen2.5-Coder's
    ``<|file_sep|>path`` before ``<|fim_prefix|>``: inside the prefix, SPM order would put the
    header right after the middle marker, and the model would learn to answer with the file
    marker (a stop string), i.e. nothing. Training and inference (``repotune complete``, the
    FIM evaluation) both build prompts here, so the model is asked exactly what it learnt.
    """
    return "".join(fim_parts(prefix, suffix, fmt, mode, path))


def fim_parts(
    prefix: str, suffix: str, fmt: FimFormat, mode: str = PSM, path: str | None = None
) -> Marked:
    """:func:`fim_prompt` with its markers marked: encode it with
    ``TextEncoder(tokenizer, fmt.markers).marked([...])``, so marker strings in the code or
    the path stay text."""
    header = header_parts(path, fmt) if path is not None else ("",)
    before, after, middle = marker(fmt.prefix), marker(fmt.suffix), marker(fmt.middle)
    if mode == PSM:
        return join(header, before, text(prefix), after, text(suffix), middle)
    if mode == SPM:
        return join(header, before, after, text(suffix), middle, text(prefix))
    raise ValueError(f"FIM mode '{mode}' is not one of {PSM}, {SPM}")


def line_spans(content: str, rng: random.Random) -> tuple[str, str, str]:
    """``(prefix, middle, suffix)`` cut at line boundaries, the middle at least one line."""
    lines = content.splitlines(keepends=True)
    if not lines:
        return "", "", ""
    start, end = sorted(rng.sample(range(len(lines) + 1), 2))
    return "".join(lines[:start]), "".join(lines[start:end]), "".join(lines[end:])


def fim_example(
    path: str, content: str, fmt: FimFormat, seed: int, spm_rate: float, key: str
) -> FimExample:
    """A FIM document of one file: its span and order drawn from ``seed`` and ``key``.

    The file header stays at the very start, before the FIM markers (:func:`fim_prompt`), so
    the model always knows which file it is filling in, and in either order the middle marker
    is followed by code, never by a marker.
    """
    rng = _draw(seed, key)
    prefix, middle, suffix = line_spans(content, rng)
    mode = SPM if rng.random() < spm_rate else PSM
    parts = fim_parts(prefix, suffix, fmt, mode, path)
    return FimExample("".join(parts), middle, mode, parts)


def is_fim(seed: int, key: str, fim_rate: float) -> bool:
    """Whether the file keyed ``key`` becomes a FIM document (else a whole-file one)."""
    return _draw(seed, f"fim:{key}").random() < fim_rate
